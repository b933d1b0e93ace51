"""The I/O side of the production server's WebSocket connection, on ``websockets`` Sans-I/O.

:class:`WebSocketWire` feeds what the transport reads to a ``websockets.server.ServerProtocol``
(``receive_data``, ``events_received``) and writes what that protocol produces
(``data_to_send``; an empty chunk means "shut the write side"). Framing, masking, the
handshake's checks and close-frame rules stay in the ``websockets`` library; the contract's
own answers (:class:`ContractServerProtocol` and below) are:

- an unsupported ``Sec-WebSocket-Version`` gets 426 with ``Sec-WebSocket-Version: 13``
  (RFC 6455 section 4.4) instead of a plain 400;
- a message over the size limit is closed with 1009 reason ``message_too_large``;
- invalid UTF-8 in a text message closes with 1007 ``invalid_utf8`` and one warning line,
  not a traceback per message (a client could otherwise flood the log);
- transport pings count against ``REALTIME_RATE_LIMIT`` (a bucket of their own, made on the
  first ping) and a flood ends in 4429 ``rate_limited``; while the transport's writes are
  paused nothing is read, so pongs for a client that does not read cannot pile up;
- a failed connection (1009, 1007, 1002, 4429) writes its close frame, shuts the write
  side and reads and drops input until the client closes or ``close_timeout`` passes, as
  the ``websockets`` library's own server does (closing at once with unread input makes
  the kernel reset the connection and drop the close frame);
- the keepalive ping waits on the process's timer wheel, not on an event-loop timer per
  connection; a peer that neither answers it nor reads is aborted after ``close_timeout``.

Writes go through ``CoalescingTransport`` (``wire.py``): one system call per connection and
loop iteration; ``send_now`` writes a broadcast's frame, built once for all subscribers.
"""

from __future__ import annotations

import asyncio
import http
import logging
import random
import struct
from typing import Any, cast

from websockets.exceptions import InvalidHeaderValue
from websockets.frames import CloseCode as WsCloseCode
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import BytesLike

from realtime.loop.flow_control import RateLimiter, RateVerdict
from realtime.loop.timer_wheel import WheelTimer, timer_wheel
from realtime.protocol.close_codes import CloseCode, CloseReason
from realtime.server.state import Message, ServerState
from realtime.server.wire import CoalescingTransport, Gate, MessageQueue, flusher_for, wire_bytes, wire_cache

logger = logging.getLogger("realtime.server")


class QuietLogger(logging.LoggerAdapter[logging.Logger]):
    """The ``websockets`` protocol's logger: its per-connection INFO lines ("connection open",
    "connection closed") are dropped, its warnings and errors kept."""

    def isEnabledFor(self, level: int) -> bool:
        return level >= logging.WARNING and self.logger.isEnabledFor(level)


PROTOCOL_LOGGER = QuietLogger(logging.getLogger("realtime.server.websocket"), {})


class ContractServerProtocol(ServerProtocol):
    def accept(self, request: Request) -> Response:
        response = super().accept(request)
        exc = self.handshake_exc
        if (
            response.status_code == http.HTTPStatus.BAD_REQUEST
            and isinstance(exc, InvalidHeaderValue)
            and exc.name == "Sec-WebSocket-Version"
        ):
            response = self.reject(
                http.HTTPStatus.UPGRADE_REQUIRED, "Unsupported WebSocket version: this server speaks version 13.\n"
            )
            response.headers["Sec-WebSocket-Version"] = "13"
        return response

    def fail(self, code: WsCloseCode | int, reason: str = "") -> None:
        if code == CloseCode.MESSAGE_TOO_BIG:
            reason = CloseReason.MESSAGE_TOO_LARGE.value
        super().fail(code, reason)


class WebSocketWire(asyncio.Protocol):
    """The I/O side of a WebSocket connection: reading, writing, closing, keepalive."""

    __slots__ = (
        "client",
        "close_sent",
        "close_timer",
        "conn",
        "disconnected",
        "frames",
        "handshake_complete",
        "last_ping_rtt",
        "loop",
        "pending_ping",
        "ping_limiter",
        "ping_sent_at",
        "ping_timer",
        "pong_timer",
        "queue",
        "read_paused",
        "response",
        "scheme",
        "scope",
        "server",
        "state",
        "text",
        "transport",
        "writable",
        "write_paused",
    )

    def __init__(
        self, state: ServerState, client: tuple[str, int] | None, server: tuple[str, int] | None, scheme: str
    ) -> None:
        self.state = state
        self.loop = state.loop
        self.client = client
        self.server = server
        self.scheme = scheme
        self.conn = ContractServerProtocol(max_size=state.settings.ws_max_size, logger=PROTOCOL_LOGGER)
        self.transport: CoalescingTransport = None  # type: ignore[assignment]
        self.queue: MessageQueue[Message] = MessageQueue(self.loop)
        self.writable = Gate()
        self.write_paused = False  # mirrors ``writable``, read on every direct send
        self.read_paused = False  # the app has a message queued
        self.handshake_complete = False
        self.close_sent = False
        self.disconnected = False
        self.response: Response | None = None
        self.scope: dict[str, Any] | None = None
        self.close_timer: asyncio.TimerHandle | None = None
        self.ping_timer: WheelTimer | None = None
        self.pong_timer: asyncio.TimerHandle | None = None
        self.pending_ping: bytes | None = None
        self.ping_sent_at = 0.0
        self.last_ping_rtt = 0.0
        self.ping_limiter: RateLimiter | None = None
        self.frames: list[BytesLike] = []
        self.text = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not derive from it
        self.state.connections.add(self)
        self.transport = CoalescingTransport(transport, flusher_for(self.loop))

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_keepalive()
        self.state.connections.discard(self)
        code = 1005 if self.handshake_complete else 1006
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code})
        self.handshake_done()
        self.disconnected = True
        # Wake a send waiting for room: a transport lost while paused never resumes.
        self.writable.set()
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None

    def handshake_done(self) -> None:
        """The opening handshake is answered (or lost): its admission slot goes to the next."""
        self.handshake_complete = True
        self.state.admission.leave(self)

    def eof_received(self) -> bool | None:
        self.conn.receive_eof()
        return None  # the transport closes

    def pause_writing(self) -> None:
        self.write_paused = True
        self.writable.clear()
        # What a client sends may need an answer (a pong, a reply): stop taking it in
        # while the answers cannot leave.
        if not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.writable.set()
        if not self.read_paused and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        conn.receive_data(data)
        for event in conn.events_received():
            if self.close_sent and isinstance(event, Frame) and event.opcode is not Opcode.CLOSE:
                continue  # the rest of what was read with the frame that failed the connection
            if isinstance(event, Frame):
                self.handle_frame(event)
            elif isinstance(event, Request):
                self.handle_connect(event)
        if conn.parser_exc is not None and not self.close_sent:
            self.failed()  # the protocol failed it (1002, 1009, ...): its close frame is queued
        elif conn.state is State.CONNECTING and conn.handshake_exc is not None:
            self.write_pending()  # not a request at all: the protocol shut its side
            self.transport.close()
        else:
            self.write_pending()

    def handle_connect(self, request: Request) -> None:
        """Answer the opening handshake: the ASGI side (``WebSocketConnection``) does."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Close for a server shutdown: the ASGI side (``WebSocketConnection``) does."""
        raise NotImplementedError

    # Writing

    def write_pending(self) -> None:
        """Write what the protocol produced; an empty chunk shuts the write side."""
        transport = self.transport
        for data in self.conn.data_to_send():
            if data:
                if not transport.is_closing():
                    transport.write(data)
            elif not transport.is_closing():
                transport.flush()
                if transport.can_write_eof():
                    transport.write_eof()

    def send_now(self, text: str) -> bool:
        """Write a text frame now if the connection is open and the transport has room."""
        if self.write_paused or self.close_sent or self.disconnected or self.conn.state is not State.OPEN:
            return False
        # A broadcast's subscribers see the same str one after the other: usually a cache hit.
        hit = wire_cache.get(id(text))
        self.transport.write(hit[1] if hit is not None and hit[0] is text else wire_bytes(text))
        return True

    # Reading

    def handle_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            self.text = opcode is Opcode.TEXT
            if frame.fin:
                self.deliver(frame.data)
            else:
                self.frames = [frame.data]
        elif opcode is Opcode.CONT:
            self.frames.append(frame.data)
            if frame.fin:
                data, self.frames = b"".join(self.frames), []
                self.deliver(data)
        elif opcode is Opcode.PING:
            self.handle_ping()
        elif opcode is Opcode.PONG:
            self.handle_pong(frame)
        else:
            self.handle_close()

    def deliver(self, frame_data: BytesLike) -> None:
        if self.close_sent:
            return  # past ``websocket.close``: read on until the peer's close arrives
        data = frame_data if isinstance(frame_data, bytes) else bytes(frame_data)
        queue = self.queue
        # The application already waits for it: it takes the message in this loop iteration,
        # so pausing reading (and resuming it in ``receive``) would buy nothing.
        taken = queue.waited_for()
        if self.text:
            try:
                text = data.decode()
            except UnicodeDecodeError as exc:
                logger.warning("closing connection: invalid UTF-8 in a text frame at byte %d", exc.start)
                self.conn.fail(WsCloseCode.INVALID_DATA, "invalid_utf8")
                self.failed()
                return
            queue.put_nowait({"type": "websocket.receive", "text": text})
        else:
            queue.put_nowait({"type": "websocket.receive", "bytes": data})
        if not self.read_paused and not taken:
            self.read_paused = True
            self.transport.pause_reading()

    def handle_ping(self) -> None:
        # The protocol queued the pong; ``data_received`` writes it.
        rate = self.state.settings.ping_rate
        if rate > 0:
            now = self.loop.time()
            if self.ping_limiter is None:
                self.ping_limiter = RateLimiter(rate, now)
            if self.ping_limiter.take(now) is RateVerdict.CLOSE:
                logger.warning("closing a client flooding pings", extra={"event": "rate_limited"})
                self.conn.fail(int(CloseCode.RATE_LIMITED), CloseReason.RATE_LIMITED.value)
                self.failed()

    def handle_pong(self, frame: Frame) -> None:
        if self.pending_ping is None or bytes(frame.data) != self.pending_ping:
            return  # unsolicited, or an answer to an older ping
        self.last_ping_rtt = self.loop.time() - self.ping_sent_at
        self.pending_ping = None
        if self.pong_timer is not None:
            self.pong_timer.cancel()
            self.pong_timer = None
            self.schedule_ping()

    def handle_close(self) -> None:
        if self.close_sent:
            # The peer answered our close: the closing handshake is complete.
            if self.close_timer is not None:
                self.close_timer.cancel()
                self.close_timer = None
            self.write_pending()
            self.transport.close()
            return
        if not self.transport.is_closing():
            received = self.conn.close_rcvd
            code, reason = (received.code, received.reason) if received is not None else (1005, "")
            self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
            self.write_pending()  # the protocol's echo of the close frame
            self.transport.close()

    def failed(self) -> None:
        """Send the failing close frame, shut the write side, drop input until the peer closes."""
        if self.close_sent:
            return
        close = self.conn.close_sent
        code, reason = (close.code, close.reason) if close is not None else (int(WsCloseCode.ABNORMAL_CLOSURE), "")
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.close_sent = True
        self.stop_keepalive()
        self.write_pending()
        transport = self.transport
        transport.flush()
        self.read_paused = False
        if not transport.is_closing():
            transport.resume_reading()  # to see the client's close (or EOF); input is dropped
        self.close_timer = self.loop.call_later(self.state.settings.close_timeout, transport.abort)

    # Keepalive

    def start_keepalive(self) -> None:
        if self.state.settings.ping_interval > 0:
            self.schedule_ping()

    def stop_keepalive(self) -> None:
        if self.ping_timer is not None:
            self.ping_timer.cancel()
            self.ping_timer = None
        if self.pong_timer is not None:
            self.pong_timer.cancel()
            self.pong_timer = None
        self.pending_ping = None

    def schedule_ping(self) -> None:
        # On the timer wheel: an idle connection keeps no event-loop timer.
        delay = max(0.0, self.state.settings.ping_interval - self.last_ping_rtt)
        self.ping_timer = timer_wheel(self.loop).call_later(delay, self.send_keepalive_ping)

    def send_keepalive_ping(self) -> None:
        self.ping_timer = None
        if self.close_sent or self.transport.is_closing() or self.conn.state is not State.OPEN:
            return
        self.pending_ping = struct.pack("!I", random.getrandbits(32))
        self.ping_sent_at = self.loop.time()
        self.conn.send_ping(self.pending_ping)
        self.write_pending()
        timeout = self.state.settings.ping_timeout
        if timeout > 0:
            self.pong_timer = self.loop.call_later(timeout, self.keepalive_timeout)
        else:
            self.schedule_ping()

    def keepalive_timeout(self) -> None:
        self.pong_timer = None
        self.pending_ping = None
        if self.close_sent or self.transport.is_closing():
            return
        self.conn.fail(1011, "keepalive ping timeout")
        self.close_sent = True
        self.write_pending()
        # A peer that neither answers nor reads would keep a graceful close forever.
        self.close_timer = self.loop.call_later(self.state.settings.close_timeout, self.transport.abort)
        self.transport.close()
