"""RealtimeConsumer: the I/O side of one WebSocket connection.

It takes the token's claims that ``JwtAuthMiddleware`` put in the scope, reads the
account and records the session in one batched database trip (``session_log.py``),
feeds every frame to the pure :class:`ProtocolSession`, awaits handlers, and sends
exactly one reply per client message, in arrival order. Idle and
token-expiry deadlines are a composed :class:`SessionDeadlines` on the process's timer
wheel (``session_deadlines.py``), not tasks: a message only updates ``last_rx``, a float.

Outgoing frames: a reply with nothing queued ahead of it is sent directly; pushes
(fan-out, replays, announcements) go through the bounded :class:`SendQueue`, drained
by a writer task that exists only while there is something to write and that waits
on the transport's backpressure. Overflow closes with 1013 ``slow_consumer``.

The consumer joins no channel-layer group itself: the process's hub does that once
per stream (``fanout.py``), so a connection costs no layer channel and no receive task.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import uuid
from collections.abc import Awaitable
from datetime import datetime
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from realtime.client_events import protocol_table
from realtime.conf import realtime_settings, server_id
from realtime.connection.frame_outbox import Outbox
from realtime.connection.handlers import HANDLERS, AckThen
from realtime.connection.handshake import DATABASE_FAULTS, open_session, welcome_frame
from realtime.connection.session_deadlines import SessionDeadlines
from realtime.connection.session_records import SessionClose, session_log
from realtime.loop.background import spawn
from realtime.loop.flow_control import RateLimiter, RateVerdict, SendQueue
from realtime.loop.timer_wheel import timer_wheel
from realtime.ops import metrics
from realtime.ops.structured_logging import ConnectionLog
from realtime.protocol import (
    CLOSE_CODE_FOR,
    CloseReason,
    Command,
    Immediate,
    ProtocolSession,
    render_push,
)
from realtime.protocol.errors import ProtocolError, RateLimited
from realtime.protocol.sequence import SequenceTracker
from realtime.server.extensions import SEND_NOW
from realtime.streams.fanout import Subscription, get_hub

logger = logging.getLogger("realtime.connection")


class RealtimeConsumer(AsyncWebsocketConsumer):
    protocol: ProtocolSession | None = None
    user: Any = None
    user_id = 0
    password_hash = ""
    closing = False
    released = False
    close_reason: str = ""
    messages_in = 0
    outbox: Outbox | None = None
    _limiter: RateLimiter | None = None
    last_rx = 0.0  # loop time of the last frame received; read by the idle deadline
    deadlines: SessionDeadlines | None = None
    _resume_timer: asyncio.TimerHandle | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # Channels' loop also gives every consumer a layer channel and a receive task;
        # this one only reads the connection (see the module docstring).
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                message = await receive()
                # The hot path skips Channels' getattr dispatch; other ASGI types still use it.
                if message["type"] == "websocket.receive":
                    await self.receive(message.get("text"), message.get("bytes"))
                else:
                    await self.dispatch(message)
        except StopConsumer:
            pass
        finally:
            # Whatever ended the loop (a bug, a cancelled task), the connection is freed:
            # hub, gauge and session row. A no-op after an ordinary disconnect.
            await self._release(None, "")

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Not Channels' dispatch, which first closes stale database connections with a trip
        # to the database thread: every database call here goes through
        # database_sync_to_async, which does that on the thread itself.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        # Not secret (the client and staff see it), only unique: no os.urandom per connection.
        self.session_id = uuid.UUID(int=random.getrandbits(128), version=4)
        self.session_key = str(self.session_id)
        self._loop = asyncio.get_running_loop()
        self._settings = realtime_settings()
        self.log = ConnectionLog(logger, {"conn": str(self.session_id), "server": server_id()})

        scope = self.scope
        client = scope.get("client") or ("", 0)
        failure: CloseReason | None = scope.get("auth_failure")
        user: Any = None
        if failure is None:
            opened = await open_session(scope, self.session_id, self.log)
            if isinstance(opened, CloseReason):
                failure = opened
            else:
                user = opened
        if failure is not None:
            await self.accept()
            self.log.info("connection refused", extra={"event": "connect", "close_reason": failure.value})
            metrics.REFUSED.labels(failure.value).inc()
            await self.close_with(failure)
            return

        self.user = user
        self.user_id = user.pk
        self.password_hash = user.password  # a later change ends the session (account_watch.py)
        self.subscriptions: dict[str, Subscription] = {}
        queue = SendQueue(self._settings.send_queue, self._settings.send_queue_bytes)
        send_now = scope.get("extensions", {}).get(SEND_NOW, {}).get("send")
        self.outbox = Outbox(self._send_text, queue, self._overflowed, send_now)
        # Fan-out calls enqueue once per subscriber per event: bind it straight to the outbox.
        self.enqueue = self.outbox.push  # type: ignore[method-assign]
        if self._settings.rate_limit > 0:
            self._limiter = RateLimiter(self._settings.rate_limit, self._loop.time())
        self.log.extra = {**(self.log.extra or {}), "user": user.username, "user_id": user.pk}
        self.protocol = ProtocolSession(
            protocol_table(), is_staff=user.is_staff, sequence=SequenceTracker(max_bytes=self._settings.max_reply_bytes)
        )
        self._hub = get_hub()
        # Counted from here: every exit path from now on goes through _release, which uncounts.
        metrics.OPEN_CONNECTIONS.inc()
        await self.accept()
        settings = self._settings
        await self.send_frame(welcome_frame(str(self.session_id), user, settings, scope["auth_claims"].expires_at))
        self._hub.register(self)  # after the welcome: it must be the first frame
        self.last_rx = self._loop.time()
        self.deadlines = SessionDeadlines(self, self._loop, timer_wheel(self._loop), settings.idle_timeout)
        self.deadlines.arm_idle_deadline()
        self.deadlines.extend_session(scope["auth_claims"].expires_at)
        self.log.info("connected", extra={"event": "connect", "remote": str(client[0])})
        metrics.CONNECTS.inc()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        protocol = self.protocol
        if protocol is None or self.closing:
            return
        now = self.last_rx = self._loop.time()
        self.messages_in += 1
        if self._limiter is not None:
            verdict = self._limiter.take(now)
            if verdict is RateVerdict.ACCEPT_AND_PAUSE:
                self._pause_client(now)
            elif verdict is RateVerdict.REJECT:
                refused = protocol.refuse_unprocessed(text_data or "", RateLimited())
                metrics.RATE_LIMITED.inc()
                metrics.count_in(refused.event)
                self._log_error(RateLimited(), refused.event, refused.ref, refused.seq)
                await self.send_frame(refused.reply)
                return
            elif verdict is RateVerdict.CLOSE:
                self.log.warning("closing a flooding client", extra={"event": "rate_limited"})
                await self.close_with(CloseReason.RATE_LIMITED)
                return
        outcome = protocol.receive_bytes() if text_data is None else protocol.receive_text(text_data)
        metrics.count_in(outcome.event)
        if isinstance(outcome, Immediate):
            if outcome.error is not None:
                self._log_error(outcome.error, outcome.event, outcome.ref, outcome.seq)
            await self.send_frame(outcome.reply)
        else:
            reply = await self._run(protocol, outcome)
            if reply:
                await self.send_frame(reply)
            if logger.isEnabledFor(logging.DEBUG):  # per-message tracing, off by default
                self.log.debug(
                    "message",
                    extra={
                        "event": outcome.event,
                        "ref": outcome.ref,
                        "seq": outcome.seq,
                        "latency_ms": round((self._loop.time() - now) * 1000, 3),
                    },
                )

    async def _run(self, protocol: ProtocolSession, command: Command) -> str:
        try:
            result = await HANDLERS[command.event](self, command.data, command.ref)
        except DATABASE_FAULTS as exc:
            # Not a bug and nothing was acked: the client reconnects with backoff and sends the
            # message again with its id, which stores it once (an internal_error would drop it).
            self.log.warning(
                "database unavailable; closing so the client retries",
                extra={"event": command.event, "ref": command.ref, "error": f"{type(exc).__name__}: {exc}"[:300]},
            )
            await self.close_with(CloseReason.TRY_AGAIN_LATER)
            return ""
        except Exception as exc:
            if isinstance(exc, ProtocolError):
                self._log_error(exc, command.event, command.ref, command.seq)
            else:
                metrics.ERRORS.labels("internal_error").inc()
                self.log.exception(
                    "handler failed",
                    extra={"event": command.event, "ref": command.ref, "seq": command.seq, "code": "internal_error"},
                )
            return protocol.fail(command, exc)
        if isinstance(result, AckThen):
            await self.send_frame(protocol.complete(command, result.data))
            follow_up = result.then()
            if follow_up is not None:
                spawn(self._follow_up(follow_up, command))
            return ""
        return protocol.complete(command, result)

    async def _follow_up(self, follow_up: Awaitable[None], command: Command) -> None:
        try:
            await follow_up
        except DATABASE_FAULTS as exc:  # a replay cut by a database fault: the client resumes
            self.log.warning(
                "follow-up failed: database unavailable", extra={"event": command.event, "error": str(exc)[:300]}
            )
            await self.close_with(CloseReason.TRY_AGAIN_LATER)
        except Exception:
            self.log.exception("follow-up failed", extra={"event": command.event, "ref": command.ref})
            await self.close_with(CloseReason.INTERNAL_ERROR)

    def _log_error(self, error: ProtocolError, event: str | None, ref: str | None, seq: int | None) -> None:
        metrics.ERRORS.labels(error.code.value).inc()
        self.log.info(
            "client error",
            extra={"event": event, "ref": ref, "seq": seq, "code": error.code.value, "detail": error.message[:200]},
        )

    # What client-event handlers of apps use (realtime.ClientConnection) -------------------

    @property
    def connection_id(self) -> str:
        return self.session_key

    async def publish(self, stream: str, event: str, data: dict[str, Any], *, id: str | None = None) -> int:
        from realtime.publishing import apublish

        return await apublish(stream, event, data, id=id)

    async def send_frame(self, text: str) -> None:
        if self.outbox is not None and not self.closing:
            await self.outbox.reply(text)

    async def _send_text(self, text: str) -> None:
        try:
            await self.base_send({"type": "websocket.send", "text": text})
        except RuntimeError as exc:
            # The server already closed the connection (keepalive timeout, invalid UTF-8, a
            # frame over the size limit) and refuses sends: to the outbox the peer is gone.
            raise ConnectionResetError(str(exc)) from exc

    def enqueue(self, frame: str) -> bool:
        """Queue a push (before connect; afterwards this is the outbox's ``push``, which refuses once closing)."""
        return self.outbox is not None and not self.closing and self.outbox.push(frame)

    async def wait_for_room(self, frames: int, size: int = 0) -> bool:
        return self.outbox is not None and not self.closing and await self.outbox.wait_for_room(frames, size)

    def _overflowed(self) -> None:
        assert self.outbox is not None
        self.log.warning("send queue overflow", extra={"event": "slow_consumer", "queued": len(self.outbox.queue)})
        metrics.SLOW_CONSUMERS.inc()
        spawn(self.close_with(CloseReason.SLOW_CONSUMER))

    def replay_page_size(self) -> int:
        return max(1, min(500, self._settings.send_queue // 2))

    def control(self, message: dict[str, Any]) -> None:
        """A hub message for this connection: a frame to push (announcements, broker state), or a kick."""
        if message["type"] == "push":
            self.enqueue(message["frame"])
        elif message["type"] == "kick":
            disabled = message.get("reason") == CloseReason.ACCOUNT_DISABLED.value
            spawn(self.close_with(CloseReason.ACCOUNT_DISABLED if disabled else CloseReason.KICKED))
        elif message["type"] == "staff" and self.protocol is not None and self.protocol.is_staff != message["is_staff"]:
            # The account's staff flag as the account watch read it (account_watch.py).
            self.protocol.is_staff = self.user.is_staff = message["is_staff"]
            self.log.info("staff status changed", extra={"event": "account", "is_staff": message["is_staff"]})

    def extend_session(self, expires_at: datetime) -> None:
        """``auth.refresh``: move the token deadline (not once the connection is closing)."""
        if self.deadlines is not None and not self.closing:
            self.deadlines.extend_session(expires_at)

    async def close_with(self, reason: CloseReason) -> None:
        if self.closing:
            return
        self.closing = True
        self.close_reason = reason.value
        self._cancel_timers()
        if self.outbox is not None:
            self.outbox.close()
        code = int(CLOSE_CODE_FOR[reason])
        try:
            # A peer that stops reading leaves no room for the close frame, and the server's
            # send waits for room: bounded, so that the connection is still freed.
            async with asyncio.timeout(self._settings.heartbeat_timeout):
                await self.close(code=code, reason=reason.value)
        except TimeoutError:  # before OSError, its base class
            self.log.warning("close handshake timed out: the peer does not read", extra={"event": "close"})
            await self._release(code, reason.value)
        except (OSError, RuntimeError):
            pass  # the peer is already gone, or the server already closed the connection

    # Flow control --------------------------------------------------------------------

    def _pause_client(self, now: float) -> None:
        assert self._limiter is not None
        delay = self._limiter.resume_delay(now)
        metrics.FLOW_PAUSES.inc()
        self.enqueue(render_push("flow.pause", {"retry_after_ms": math.ceil(delay * 1000)}))
        self._resume_timer = self._loop.call_at(now + delay, self._resume_client)

    def _resume_client(self) -> None:
        assert self._limiter is not None
        now = self._loop.time()
        if self._limiter.try_resume(now):
            self._resume_timer = None
            self.enqueue(render_push("flow.resume", {}))
        else:
            self._resume_timer = self._loop.call_at(now + self._limiter.resume_delay(now), self._resume_client)

    def _cancel_timers(self) -> None:
        if self.deadlines is not None:
            self.deadlines.cancel()
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None

    # Teardown ------------------------------------------------------------------------

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        await self._release(message.get("code"), message.get("reason") or "")
        raise StopConsumer()

    async def _release(self, code: int | None, reason: str) -> None:
        """Free everything the connection holds, exactly once, on every exit path."""
        if self.released:
            return
        self.released = True
        reason = reason or self.close_reason
        self.closing = True
        self._cancel_timers()
        if self.outbox is not None:
            self.outbox.close()
        if self.protocol is None:
            return  # refused at connect: nothing was registered, the row was never written
        self._hub.unregister(self, list(self.subscriptions.values()))
        self.subscriptions.clear()
        metrics.OPEN_CONNECTIONS.dec()
        metrics.CLOSES.labels(str(code)).inc()
        if self.outbox is not None:
            metrics.QUEUE_HIGH_WATER.observe(self.outbox.queue.high_water)
        messages_out = self.outbox.sent if self.outbox else 0
        close = SessionClose(self.session_id, code, reason, self.messages_in, messages_out)
        try:
            await session_log().close(close)
        except Exception as exc:
            # The row stays open until the server restarts or an audit closes it.
            self.log.error("session row could not be closed", extra={"event": "disconnect", "error": repr(exc)[:300]})
        finally:
            self.log.info(
                "disconnected",
                extra={
                    "event": "disconnect",
                    "close_code": code,
                    "close_reason": reason,
                    "messages_in": self.messages_in,
                    "messages_out": messages_out,
                },
            )
