"""RealtimeClient: calls with retries, subscriptions that resume, reconnects with backoff.

One background task owns the connection (:meth:`RealtimeClient._run`): it connects,
re-subscribes, re-sends pending calls, reads frames and decides what each close means.
A second task per connection sends queued calls, honouring ``flow.pause`` and the
in-flight window. Everything the application awaits is a future settled by those tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from realtime_client.backoff import Backoff
from realtime_client.calls import Outcome
from realtime_client.codes import CloseAction, CloseCode, State, close_action, stop_code
from realtime_client.connection import Closed, ConnectFailed, ConnectOptions, ended, open_connection
from realtime_client.dispatch import FrameRouter, PushCallback
from realtime_client.errors import ClientClosed, ConnectionLost, RealtimeError
from realtime_client.flow import FlowGate
from realtime_client.ids import check_id
from realtime_client.outbox import Outbox
from realtime_client.subscription import Phase, Subscription

logger = logging.getLogger("realtime_client")

TokenProvider = Callable[[], Awaitable[str]]
StateCallback = Callable[[str, str], None]


class RealtimeClient:
    """A client of the realtime protocol v1 (PROTOCOL.md section 10); see docs/client.md.

    It composes an :class:`Outbox` (queued calls, the in-flight window, retries, replies) and a
    :class:`FrameRouter` (incoming frames), and is the owner both of them report to.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        token_provider: TokenProvider | None = None,
        ack_timeout: float = 5.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        max_in_flight: int = 64,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        max_size: int | None = 2**24,
        reconnect_on_idle: bool = False,
        refresh_on_expiring: bool = True,
        id_prefix: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if ack_timeout <= 0 or max_in_flight < 1:
            raise ValueError("ack_timeout must be > 0 and max_in_flight >= 1")
        self.url = url
        self._token = token
        self._token_provider = token_provider
        self.reconnect_on_idle = reconnect_on_idle
        self.refresh_on_expiring = refresh_on_expiring
        self.backoff = Backoff(backoff_initial, backoff_max)
        self._options = ConnectOptions(
            open_timeout, ping_interval, ping_timeout, max_size, tuple((headers or {}).items())
        )
        self._outbox = Outbox(self, ack_timeout=ack_timeout, max_in_flight=max_in_flight, id_prefix=id_prefix)
        self._router = FrameRouter(self, self._outbox)
        self._state = State.CONNECTING
        self._state_callbacks: list[StateCallback] = []
        self._state_changed = asyncio.Event()
        self.subscriptions: dict[str, Subscription] = {}
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.welcome: dict[str, Any] | None = None
        self.close_error: RealtimeError | None = None
        self.last_close: Closed | None = None
        self.recent_closes: deque[Closed] = deque(maxlen=16)  # how the last connections ended
        self.connections = 0  # successful opens, the first one included

    # Lifecycle ----------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``"connecting"`` | ``"open"`` | ``"reconnecting"`` | ``"closed"``."""
        return self._state.value

    @property
    def closed(self) -> bool:
        return self._state is State.CLOSED

    @property
    def is_open(self) -> bool:
        return self._state is State.OPEN

    @property
    def flow(self) -> FlowGate:
        """The send gate (``paused``, ``pauses``)."""
        return self._outbox.flow

    @property
    def max_message_bytes(self) -> int | None:
        """The server's frame limit from the last welcome; a larger call raises ``MessageTooLarge``."""
        return self._outbox.max_message_bytes

    @max_message_bytes.setter
    def max_message_bytes(self, limit: int | None) -> None:
        self._outbox.max_message_bytes = limit

    @property
    def ack_timeout(self) -> float:
        return self._outbox.ack_timeout

    @property
    def max_in_flight(self) -> int:
        return self._outbox.max_in_flight

    async def __aenter__(self) -> RealtimeClient:
        await self.connect()
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def connect(self) -> None:
        """Start connecting and wait until open; raises the reason if the client stops first."""
        self._start()
        await self.wait_for_state("open", "closed")
        if self._state is State.CLOSED:
            raise self.close_error or ClientClosed()

    async def close(self) -> None:
        """Close normally (1000); pending calls raise ``ClientClosed``, iterators end."""
        if self._state is not State.CLOSED:
            self._stop(None)
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close(CloseCode.NORMAL)
        for task in [self._task, *self._background]:
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def wait_for_state(self, *states: str) -> str:
        while self._state.value not in states:
            self._state_changed.clear()
            await self._state_changed.wait()
        return self._state.value

    def on_state_change(self, callback: StateCallback) -> None:
        self._state_callbacks.append(callback)

    def on_push(self, callback: PushCallback) -> None:
        self._router.push_callbacks.append(callback)

    # Calls and subscriptions -----------------------------------------------------------------

    async def call(self, event: str, data: dict[str, Any] | None = None, id: str | None = None) -> Any:
        """Send ``event`` and return its ack data; raises :class:`RealtimeError` on an error reply."""
        return await self._outbox.call(event, data or {}, check_id(id) if id is not None else None)

    async def subscribe(
        self, stream: str, since: int | None = None, epoch: str | None = None, *, presence: bool = False
    ) -> Subscription:
        """Follow ``stream`` (from ``since``, or live from the head); see :class:`Subscription`.

        ``presence=True`` asks a presence-enabled stream for its members: ``sub.presence`` is
        kept current (``presence.state``, ``presence.join``, ``presence.leave``) and the
        stream's ``stream.signal`` pushes arrive; without it only events arrive.

        ``since`` and ``epoch`` together are a position read before loading state (the REST
        API's ``?position=1``, ``realtime.position()``): if the stream's epoch is no longer
        ``epoch`` the subscription ends with ``not_recovered`` instead of replaying.
        """
        if stream in self.subscriptions:
            raise ValueError(f"already subscribed to {stream}")
        if epoch is not None and since is None:
            raise ValueError("epoch: only meaningful with since (a position is an offset and an epoch)")
        sub = Subscription(self, stream, since, epoch, presence)
        self.subscriptions[stream] = sub

        def on_reply(ack: Any, error: RealtimeError | None) -> None:
            # Settled inline, before the next frame is read: a reconnect that follows at once
            # then already resumes this subscription.
            if error is None:
                sub.subscribed(ack)
            else:
                self.forget(sub, unsubscribe=False)
                sub.end(error)

        try:
            await self._outbox.call("stream.subscribe", sub.subscribe_data(), None, on_reply)
        except BaseException:
            self.forget(sub, unsubscribe=False)
            sub.end(None)
            raise
        return sub

    def send_internal(self, event: str, data: dict[str, Any], on_done: Outcome) -> None:
        """A call the client makes for itself; a reconnect supersedes it (fails it with ``superseded``)."""
        try:
            self._outbox.new_call(event, data, None, on_done, resend=False)
        except RealtimeError as exc:
            on_done(None, exc)

    def forget(self, subscription: Subscription, *, unsubscribe: bool) -> None:
        if self.subscriptions.get(subscription.stream) is subscription:
            del self.subscriptions[subscription.stream]
        if unsubscribe and self._state is State.OPEN:
            self.send_internal("stream.unsubscribe", {"stream": subscription.stream}, lambda ack, error: None)

    # What the outbox and the router ask of the client ------------------------------------------

    def ensure_running(self) -> None:
        if self._state is State.CLOSED:
            raise self.close_error or ClientClosed()
        self._start()

    def session_expiring(self) -> None:
        if self.refresh_on_expiring and self._token_provider is not None:
            self._spawn(self._refresh_session())

    async def _refresh_session(self) -> None:
        """Extend the session with a fresh token before it expires (``auth.refresh``)."""
        assert self._token_provider is not None
        try:
            token = await self._token_provider()
            self._token = token
            await self.call("auth.refresh", {"token": token})
        except Exception as exc:
            logger.warning("session refresh failed (the client reconnects on token_expired): %r", exc)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # The connection task -------------------------------------------------------------------

    def _start(self) -> None:
        if self._task is None and self._state is not State.CLOSED:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="realtime-client")

    async def _run(self) -> None:
        try:
            while self._state is not State.CLOSED:
                opened = False
                try:
                    ws, welcome = await open_connection(self.url, self._token, self._options)
                    opened = True
                    closed = await self._serve(ws, welcome)
                except ConnectFailed as exc:
                    closed = exc.closed
                self.last_close = closed
                self.recent_closes.append(closed)
                logger.info("connection ended: %s", closed)
                if self.closed:  # close() while connecting or serving
                    return
                if not await self._after_close(closed, opened):
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("realtime client failed")
            self._stop(RealtimeError("internal_error"))

    async def _after_close(self, closed: Closed, opened: bool) -> bool:
        """Decide what follows a close; False when the client stopped for good."""
        action = close_action(
            closed.code,
            closed.reason,
            has_token_provider=self._token_provider is not None,
            reconnect_on_idle=self.reconnect_on_idle,
        )
        if closed.fatal:
            action = CloseAction.STOP
        if action is CloseAction.STOP:
            self._stop(ConnectionLost(stop_code(closed.code, closed.reason), {"close_code": closed.code}))
            return False
        self._set_state(State.RECONNECTING if self.connections else State.CONNECTING)
        if action is CloseAction.REFRESH_TOKEN:
            assert self._token_provider is not None
            try:
                self._token = await self._token_provider()
            except Exception as exc:
                logger.warning("token_provider failed: %r", exc)
                self._stop(ConnectionLost("token_expired", {"message": f"token_provider failed: {exc!r}"}))
                return False
            if opened:  # a session that worked expired: reconnect at once
                return True
        await asyncio.sleep(self.backoff.next_delay())
        return True

    async def _serve(self, ws: ClientConnection, welcome: dict[str, Any]) -> Closed:
        self._ws = ws
        self.welcome = welcome
        limit = welcome.get("max_message_bytes")
        self._outbox.max_message_bytes = limit if isinstance(limit, int) else None
        self.connections += 1
        self.backoff.reset()
        resend = self._outbox.new_connection()
        for sub in self.subscriptions.values():
            if sub.phase in (Phase.LIVE, Phase.RESUMING):
                sub.resuming()
                self.send_internal("stream.subscribe", sub.subscribe_data(), self._resumed(sub))
        self._outbox.requeue(resend)
        self._set_state(State.OPEN)
        sender = asyncio.get_running_loop().create_task(self._outbox.send_loop(ws), name="realtime-client-send")
        on_frame = self._router.on_frame
        try:
            async for raw in ws:
                on_frame(raw)
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            if self._ws is ws:
                self._ws = None
        closed = ended(ws)
        if closed.code == CloseCode.MESSAGE_TOO_BIG:
            self._outbox.fail_oversize()
        return closed

    def _resumed(self, sub: Subscription) -> Outcome:
        def done(ack: Any, error: RealtimeError | None) -> None:
            if error is None:
                sub.subscribed(ack)
            elif error.code != "superseded":  # e.g. forbidden: the subscription cannot go on
                sub.end(error)
                self.forget(sub, unsubscribe=False)

        return done

    # State ---------------------------------------------------------------------------------

    def _set_state(self, new: State) -> None:
        old, self._state = self._state, new
        if old is new:
            return
        self._state_changed.set()
        for callback in list(self._state_callbacks):
            try:
                callback(old.value, new.value)
            except Exception:
                logger.exception("on_state_change callback failed")

    def _stop(self, error: RealtimeError | None) -> None:
        """Stop for good: every pending call fails, every subscription ends."""
        self.close_error = error or ClientClosed()
        self._set_state(State.CLOSED)
        for sub in list(self.subscriptions.values()):
            sub.end(error)
        self.subscriptions.clear()
        self._outbox.stop(self.close_error)
