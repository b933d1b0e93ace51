"""The production server: uvicorn with websockets' Sans-I/O protocol, closed where the contract needs it.

uvicorn + ``websockets-sansio`` was chosen by measurement (docs/decisions.md). Three
gaps between it and PROTOCOL.md are closed here, by subclassing rather than by
touching framing or handshake parsing, which stay in the ``websockets`` library:

- an unsupported ``Sec-WebSocket-Version`` gets 426 with ``Sec-WebSocket-Version: 13``
  (RFC 6455 section 4.4) instead of a plain 400;
- a message over the size limit is closed with 1009 reason ``message_too_large``;
- server shutdown closes with 1012 reason ``service_restart``;
- invalid UTF-8 in a text frame closes with 1007 and one warning line, not a traceback
  per message (a client could otherwise flood the log).

Two additions for speed. Writes are coalesced per event-loop iteration: everything written
to a connection during one iteration leaves in one ``transport.write`` (one system call)
when the iteration's ready callbacks are done, or sooner once 64 KiB are waiting, so the
transport's backpressure still engages at its usual mark. Order is kept, because every
write of the connection (frames, pings, closes) goes through the same buffer.

And the app is offered the ASGI scope extension ``realtime.send_now`` (docs/protocol.md,
"Server extension"): a synchronous ``send(text) -> bool`` that writes a text frame at once
when the transport can take it and returns False otherwise (not open, closing, or the transport's buffer above its high
water mark: then the app awaits the ordinary ASGI ``send``, which waits for room). A
broadcast hands the same ``str`` to every subscriber; its wire bytes (framed by the
``websockets`` library, never by hand) are computed once and reused for all of them.
"""

from __future__ import annotations

import asyncio
import http
import logging
import weakref
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.exceptions import InvalidHeaderValue
from websockets.frames import CloseCode as WsCloseCode
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from realtime.protocol.close_codes import CloseCode, CloseReason

logger = logging.getLogger("realtime.server")

SEND_NOW = "realtime.send_now"
# Recently framed texts by identity: a broadcast reaches its subscribers one after the
# other with the same ``str`` object, so a few entries serve a whole fan-out.
_WIRE_CACHE_SIZE = 16
_wire_cache: dict[int, tuple[str, bytes]] = {}


# Past this many buffered bytes a connection's writes go out at once, so that pause_writing
# (the transport's backpressure) still fires near its high water mark, not one iteration late.
COALESCE_LIMIT = 64 * 1024


class CoalescingTransport:
    """A transport whose writes wait for the end of the loop iteration, then leave together."""

    __slots__ = ("_chunks", "_flusher", "_size", "transport")

    def __init__(self, transport: asyncio.Transport, flusher: WriteFlusher) -> None:
        self.transport = transport
        self._flusher = flusher
        self._chunks: list[bytes] | None = None
        self._size = 0

    def write(self, data: bytes) -> None:
        chunks = self._chunks
        if chunks is None:
            self._chunks = [data]
            self._size = len(data)
            if self._size > COALESCE_LIMIT:
                self.flush()
            else:
                self._flusher.mark(self)
            return
        chunks.append(data)
        self._size += len(data)
        if self._size > COALESCE_LIMIT:
            self.flush()

    def flush(self) -> None:
        chunks, self._chunks, self._size = self._chunks, None, 0
        if chunks and not self.transport.is_closing():
            self.transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._chunks, self._size = None, 0
        self.transport.abort()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class WriteFlusher:
    """Flushes every connection written to during this loop iteration, once, after the rest of it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._marked: list[CoalescingTransport] = []

    def mark(self, transport: CoalescingTransport) -> None:
        if not self._marked:
            self._loop.call_soon(self._flush)
        self._marked.append(transport)

    def _flush(self) -> None:
        marked, self._marked = self._marked, []
        for transport in marked:
            transport.flush()


_flushers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WriteFlusher] = weakref.WeakKeyDictionary()


def flusher_for(loop: asyncio.AbstractEventLoop) -> WriteFlusher:
    flusher = _flushers.get(loop)
    if flusher is None:
        flusher = _flushers[loop] = WriteFlusher(loop)
    return flusher


def wire_bytes(text: str) -> bytes:
    """The unmasked, uncompressed text frame for ``text`` (servers never mask)."""
    key = id(text)
    hit = _wire_cache.get(key)
    if hit is not None and hit[0] is text:
        return hit[1]
    wire = Frame(Opcode.TEXT, text.encode()).serialize(mask=False)
    if len(_wire_cache) >= _WIRE_CACHE_SIZE:
        del _wire_cache[next(iter(_wire_cache))]
    _wire_cache[key] = (text, wire)  # holding ``text`` keeps its id from being reused
    return wire


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


class RealtimeWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.write_paused = False  # mirrors ``writable``, read on every direct send
        self.conn = ContractServerProtocol(
            extensions=self.conn.available_extensions,
            max_size=config.ws_max_size,
            logger=logging.getLogger("uvicorn.error"),
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.transport = CoalescingTransport(self.transport, flusher_for(self.loop))  # type: ignore[assignment]

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None and not self.conn.extensions:
            scope["extensions"][SEND_NOW] = {"send": self.send_now}

    def pause_writing(self) -> None:
        self.write_paused = True
        super().pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        super().resume_writing()

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
        hit = _wire_cache.get(id(text))
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
