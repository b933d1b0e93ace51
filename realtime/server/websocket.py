"""The production server: uvicorn with websockets' Sans-I/O protocol, closed where the contract needs it.

uvicorn + ``websockets-sansio`` was chosen by measurement (docs/decisions.md). Four
gaps between it and PROTOCOL.md are closed here, by subclassing rather than by
touching framing or handshake parsing, which stay in the ``websockets`` library:

- an unsupported ``Sec-WebSocket-Version`` gets 426 with ``Sec-WebSocket-Version: 13``
  (RFC 6455 section 4.4) instead of a plain 400;
- a message over the size limit is closed with 1009 reason ``message_too_large``;
- server shutdown closes with 1012 reason ``service_restart``;
- invalid UTF-8 in a text frame closes with 1007 and one warning line, not a traceback
  per message (a client could otherwise flood the log).

And three that let one client grow the server or lose its close frame (issues 13, 14, 20):

- transport pings count against ``REALTIME_RATE_LIMIT`` (a bucket of their own, made on the
  first ping) and a flood ends in 4429 ``rate_limited``; while the transport's writes are
  paused nothing is read, so pongs for a client that does not read cannot pile up;
- a failed connection (1009, 1007, 1002, 4429) writes its close frame, shuts the write
  side and reads and drops input until the client closes or ``close_timeout`` passes, as
  the ``websockets`` library's own server does (closing at once with unread input makes
  the kernel reset the connection and drop the close frame);
- a close handshake that times out aborts the connection: a peer that stopped reading is
  not left holding it half-closed behind an unsent buffer.

For speed and memory (``connection_io.py`` has the pieces): writes are coalesced per
event-loop iteration into one system call per connection; the app is offered the ASGI
scope extension ``realtime.send_now`` (docs/protocol.md, "Server extension"), a
synchronous ``send(text) -> bool`` that writes a text frame at once when the transport
can take it and returns False otherwise (then the app awaits the ordinary ``send``, which
waits for room), with a broadcast framed once for all its subscribers; the receive queue
and the writable flag allocate nothing while idle; and the handshake's request, response
and header list are released once the connection is accepted (the app reads headers in
``connect``, before it accepts); the keepalive ping waits on the process's timer wheel
(``deadlines.py``), not on an event-loop timer per connection.
"""

from __future__ import annotations

import asyncio
import http
import logging
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.websockets import websockets_sansio_impl
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.exceptions import InvalidHeaderValue
from websockets.frames import CloseCode as WsCloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from realtime.loop.flow_control import RateLimiter, RateVerdict
from realtime.loop.timer_wheel import timer_wheel
from realtime.protocol.close_codes import CloseCode, CloseReason
from realtime.server.extensions import SEND_NOW
from realtime.server.wire import CoalescingTransport, Gate, MessageQueue, flusher_for, wire_bytes, wire_cache

logger = logging.getLogger("realtime.server")


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


# uvicorn builds its ServerProtocol in __init__ from this module-level name; pointing the
# name at the subclass builds the right one directly (building two cost ~4 % of a connect).
websockets_sansio_impl.ServerProtocol = ContractServerProtocol  # type: ignore[attr-defined]


class RealtimeWebSocketProtocol(WebSocketsSansIOProtocol):
    ping_rate = 0.0  # pings/s per connection (REALTIME_RATE_LIMIT; 0: not limited); set by serve

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.write_paused = False  # mirrors ``writable``, read on every direct send
        self.queue = MessageQueue()  # type: ignore[assignment]
        self.writable = Gate()  # type: ignore[assignment]
        self.ping_limiter: RateLimiter | None = None
        assert isinstance(self.conn, ContractServerProtocol)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.transport = CoalescingTransport(self.transport, flusher_for(self.loop))  # type: ignore[assignment]

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None and not self.conn.extensions:
            scope["extensions"][SEND_NOW] = {"send": self.send_now}

    def start_keepalive(self) -> None:
        # Called once the 101 response is written: the handshake's data is no longer needed.
        super().start_keepalive()
        # websockets' parser generator keeps its Request as a local for the connection's
        # lifetime, so dropping our reference is not enough: empty its headers too.
        self.request.headers.clear()
        self.response.headers.clear()
        self.request = self.response = None  # type: ignore[assignment]
        headers = self.scope.get("headers")
        if isinstance(headers, list):
            headers.clear()  # shared with the app's scope copies, which read it in connect

    def schedule_ping(self) -> None:
        # uvicorn's own, on the timer wheel: an idle connection keeps no event-loop timer.
        assert self.ping_interval is not None
        delay = max(0.0, self.ping_interval - self.last_ping_rtt)
        self.ping_timer = timer_wheel(self.loop).call_later(delay, self.send_keepalive_ping)  # type: ignore[assignment]

    def pause_writing(self) -> None:
        self.write_paused = True
        super().pause_writing()
        # What a client sends may need an answer (a pong, a reply): stop taking it in
        # while the answers cannot leave. ``read_paused`` stays the app queue's own flag.
        if not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        super().resume_writing()
        if not self.read_paused and not self.transport.is_closing():
            self.transport.resume_reading()

    async def receive(self) -> Any:
        # uvicorn's own, except that reading stays paused while writes are.
        message = await self.queue.get()
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            if not self.write_paused:
                self.transport.resume_reading()
        return message

    def handle_ping(self) -> None:
        if self.close_sent:
            return  # the rest of a flood, parsed in the same read as the ping that ended it
        if self.ping_rate > 0:
            now = self.loop.time()
            if self.ping_limiter is None:
                self.ping_limiter = RateLimiter(self.ping_rate, now)
            if self.ping_limiter.take(now) is RateVerdict.CLOSE:
                logger.warning("closing a client flooding pings", extra={"event": "rate_limited"})
                self.conn.fail(int(CloseCode.RATE_LIMITED), CloseReason.RATE_LIMITED.value)
                self.handle_parser_exception()
                return
        super().handle_ping()

    def handle_parser_exception(self) -> None:
        # uvicorn's closes TCP at once; see the module docstring.
        if self.close_sent:
            return
        close = self.conn.close_sent
        code, reason = (close.code, close.reason) if close is not None else (int(WsCloseCode.ABNORMAL_CLOSURE), "")
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.close_sent = True
        self.stop_keepalive()
        transport = self.transport
        output = self.conn.data_to_send()
        transport.write(b"".join(output))
        if isinstance(transport, CoalescingTransport):
            transport.flush()
        if not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()
        self.read_paused = False
        if not transport.is_closing():
            transport.resume_reading()  # to see the client's close (or EOF); input is dropped
        self.close_timer = self.loop.call_later(self.close_timeout, transport.abort)

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        if self.close_sent and self.close_timer is None:
            # uvicorn closes gracefully: a peer that neither answers nor reads would keep it.
            self.close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message.get("type") == "websocket.close" and self.close_timer is not None:
            # uvicorn's timer closes gracefully, which waits for the write buffer to drain:
            # forever, for a peer that stopped reading.
            self.close_timer.cancel()
            self.close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)

    def send_now(self, text: str) -> bool:
        """Write a text frame now if the connection is open and the transport has room."""
        if (
            self.write_paused
            or self.close_sent
            or self.disconnected
            or not self.handshake_complete
            or self.conn.state is not State.OPEN
        ):
            return False
        # A broadcast's subscribers see the same str one after the other: usually a cache hit.
        hit = wire_cache.get(id(text))
        self.transport.write(hit[1] if hit is not None and hit[0] is text else wire_bytes(text))
        return True

    def shutdown(self) -> None:
        if self.handshake_complete and not self.close_sent and not self.transport.is_closing():
            self.stop_keepalive()
            code, reason = int(CloseCode.SERVICE_RESTART), CloseReason.SERVICE_RESTART.value
            self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
            self.conn.send_close(code, reason)
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()
            return
        super().shutdown()

    def send_receive_event_to_app(self) -> None:
        # uvicorn's own version, except for the invalid-UTF-8 branch.
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return
        if self.curr_msg_data_type == "text":
            try:
                text = data.decode()
            except UnicodeDecodeError as exc:
                logger.warning("closing connection: invalid UTF-8 in a text frame at byte %d", exc.start)
                self.conn.fail(WsCloseCode.INVALID_DATA, "invalid_utf8")
                self.handle_parser_exception()
                return
            self.queue.put_nowait({"type": "websocket.receive", "text": text})
        else:
            self.queue.put_nowait({"type": "websocket.receive", "bytes": data})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()
