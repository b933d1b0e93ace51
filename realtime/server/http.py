"""The production server's HTTP/1.1 side: uvicorn's httptools protocol, bounded before it buffers.

uvicorn bounds none of these with httptools (checked for uvicorn 0.54: ``limit_concurrency``
is not applied to WebSocket upgrades and counts the connection asking; ``timeout_keep_alive``
runs only between requests), so a server without a proxy in front could be made to hold any
number of connections, a request head of any size, or a head that never ends. Here:

- the request target is at most :data:`MAX_REQUEST_TARGET` bytes (414), a head at most
  :data:`MAX_HEADERS` headers and :data:`MAX_HEAD_BYTES` bytes of names, values and target
  (431), and raw bytes without the end of a head at most :data:`MAX_RAW_HEAD_BYTES` (431,
  so a header line without an end is cut off too);
- a head must arrive whole within ``REALTIME_HTTP_HEADER_TIMEOUT`` seconds of the connection
  (or of the request's first byte on a kept-alive connection), else 408;
- a connection past ``max_connections`` open connections of this process (HTTP and
  WebSocket alike) gets 503 to its request, HTTP or upgrade.

A refused request's answer is written, the write side is shut, and input is read and
dropped for up to :data:`LINGER_SECONDS` before the socket closes, so a client still sending
reads the answer instead of a connection reset.

Request bodies are bounded by ``BodyLimitMiddleware`` (``realtime/server/http_limits.py``), which
knows the method.
"""

from __future__ import annotations

import asyncio
import http
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

MAX_REQUEST_TARGET = 8192
MAX_HEADERS = 100
MAX_HEAD_BYTES = 32768
MAX_RAW_HEAD_BYTES = 65536
LINGER_SECONDS = 2.0


def refusal_bytes(status: http.HTTPStatus) -> bytes:
    body = f"{status.value} {status.phrase}\n".encode()
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds above; ``serve`` sets the two class settings."""

    max_connections = 0  # 0: no limit
    header_timeout = 10.0

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.reading_head = True
        self.raw_head_bytes = 0
        self.head_bytes = 0
        self.over_limit = False
        self.refused: http.HTTPStatus | None = None
        self.head_timer: asyncio.TimerHandle | None = None
        self.linger_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # This connection is already in the set: the limit'th connection is still served.
        self.over_limit = 0 < self.max_connections < len(self.connections)
        self.head_timer = self.loop.call_later(self.header_timeout, self.head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel_timers()
        super().connection_lost(exc)

    def cancel_timers(self) -> None:
        for timer in (self.head_timer, self.linger_timer):
            if timer is not None:
                timer.cancel()
        self.head_timer = self.linger_timer = None

    def data_received(self, data: bytes) -> None:
        if self.refused is not None:
            return  # lingering after a refusal: read and drop
        if self.reading_head:
            self.raw_head_bytes += len(data)
        super().data_received(data)
        # Checked after parsing, so that a head and body arriving together are not refused.
        if self.refused is None and self.reading_head and self.raw_head_bytes > MAX_RAW_HEAD_BYTES:
            self.refuse(http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)

    # Once a request is refused, the rest of what was read in the same chunk is parsed but
    # ignored: no callback raises (uvicorn would log each refusal as an invalid request).

    def on_message_begin(self) -> None:
        if self.refused is not None:
            return
        super().on_message_begin()
        if not self.reading_head:  # the next request on a kept-alive connection
            self.reading_head = True
            self.raw_head_bytes = 0
            self.head_timer = self.loop.call_later(self.header_timeout, self.head_timed_out)
        self.head_bytes = 0

    def on_url(self, url: bytes) -> None:
        if self.refused is not None:
            return
        super().on_url(url)
        if len(self.url) > MAX_REQUEST_TARGET:
            self.refuse(http.HTTPStatus.REQUEST_URI_TOO_LONG)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.refused is not None:
            return
        super().on_header(name, value)
        self.head_bytes += len(name) + len(value)
        if len(self.headers) > MAX_HEADERS or self.head_bytes + len(self.url) > MAX_HEAD_BYTES:
            self.refuse(http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)

    def on_headers_complete(self) -> None:
        if self.refused is not None:
            return
        self.reading_head = False
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        if self.over_limit:
            self.refuse(http.HTTPStatus.SERVICE_UNAVAILABLE)
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.refused is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.refused is None:
            super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        if self.refused is None:  # a refused upgrade's head still ends in the parser's upgrade signal
            super().handle_websocket_upgrade()

    def head_timed_out(self) -> None:
        self.head_timer = None
        if self.reading_head and self.refused is None and not self.transport.is_closing():
            self.refuse(http.HTTPStatus.REQUEST_TIMEOUT)

    def refuse(self, status: http.HTTPStatus) -> None:
        """Answer ``status``, shut the write side, drop input for a while, then close."""
        self.refused = status
        self.cancel_timers()
        transport = self.transport
        if transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request's refusal must not cut into the response before it.
            transport.abort()
            return
        transport.write(refusal_bytes(status))
        if transport.can_write_eof():
            transport.write_eof()
        self.linger_timer = self.loop.call_later(LINGER_SECONDS, transport.close)

    def eof_received(self) -> None:
        if self.refused is not None:
            self.transport.close()  # the client has read the answer and is done
