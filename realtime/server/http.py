"""The production server's HTTP/1.1 connection: ``httptools`` parses, this runs the ASGI cycle.

One :class:`HttpConnection` per accepted TCP connection. Requests are parsed by
``httptools.HttpRequestParser`` (its public callback interface) and each one is handed to
the application as an ASGI ``http`` scope (``realtime/server/http_cycle.py``), one at a
time and in order: pipelined requests wait, with reading paused, until the response before
them is complete. A kept-alive connection idle for ``KEEP_ALIVE_TIMEOUT`` seconds is closed.
The client address and scheme honour ``X-Forwarded-For`` / ``X-Forwarded-Proto`` only from
a trusted proxy (``realtime/server/proxy.py``). A request with ``Upgrade: websocket`` is
handed, with whatever followed it, to a ``WebSocketConnection`` on the same transport, when
one of the server's handshake slots is free (``ServerState.admission``, issue 19); until then
it waits in line, its request head already read.

Bounded before anything is buffered (issue 13), so a server without a proxy in front cannot
be made to hold any number of connections, a request head of any size, or one that never ends:

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
reads the answer instead of a connection reset. Request bodies are bounded by
``BodyLimitMiddleware`` (``realtime/server/http_limits.py``), which knows the method.
"""

from __future__ import annotations

import asyncio
import http
import logging
import urllib.parse
from collections import deque
from typing import Any, cast

import httptools

from realtime.server.http_cycle import STATUS_LINES, FlowControl, RequestCycle
from realtime.server.state import ServerState
from realtime.server.websocket import WebSocketConnection

logger = logging.getLogger("realtime.server")

MAX_REQUEST_TARGET = 8192
MAX_HEADERS = 100
MAX_HEAD_BYTES = 32768
MAX_RAW_HEAD_BYTES = 65536
LINGER_SECONDS = 2.0


def refusal_bytes(status: http.HTTPStatus) -> bytes:
    body = f"{status.value} {status.phrase}\n".encode()
    head = (
        f"content-type: text/plain; charset=utf-8\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    return STATUS_LINES[status.value] + head + body


def peer(transport: asyncio.BaseTransport, key: str) -> tuple[str, int] | None:
    info = transport.get_extra_info(key)
    if isinstance(info, tuple | list) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return None


class HttpConnection(asyncio.Protocol):
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.loop = state.loop
        self.parser = httptools.HttpRequestParser(self)
        # Answer the first of pipelined requests even when it said ``Connection: close``.
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.transport: asyncio.Transport | None = None
        self.flow: FlowControl | None = None
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.scheme = "http"
        self.cycle: RequestCycle | None = None
        self.pipeline: deque[RequestCycle] = deque()
        self.keep_alive_timer: asyncio.TimerHandle | None = None
        # The request being parsed.
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect_continue = False
        self.upgrading = False
        # Limits.
        self.reading_head = True
        self.raw_head_bytes = 0
        self.head_bytes = 0
        self.over_limit = False
        self.refused: http.HTTPStatus | None = None
        self.head_timer: asyncio.TimerHandle | None = None
        self.linger_timer: asyncio.TimerHandle | None = None
        # What followed an upgrade request waiting for a handshake slot (state.Admission).
        self.upgrade_rest: bytearray | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not derive from it
        self.transport = transport
        self.flow = FlowControl(transport)
        self.client = peer(transport, "peername")
        self.server = peer(transport, "sockname")
        connections = self.state.connections
        connections.add(self)
        limit = self.state.settings.max_connections
        # This connection is already counted: the limit'th connection is still served.
        self.over_limit = 0 < limit < len(connections)
        self.head_timer = self.loop.call_later(self.state.settings.header_timeout, self.head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        self.upgrade_rest = None  # if it waits for a handshake slot, it is skipped
        self.cancel_timers()
        for cycle in (self.cycle, *self.pipeline):
            if cycle is not None:
                cycle.lost()
        self.pipeline.clear()
        if self.flow is not None:
            self.flow.writable.set()  # wake a send waiting for room: it sees the disconnect

    def eof_received(self) -> bool | None:
        if self.refused is not None and self.transport is not None:
            self.transport.close()  # the client has read the answer and is done
        return None

    def pause_writing(self) -> None:
        assert self.flow is not None
        self.flow.writable.clear()

    def resume_writing(self) -> None:
        assert self.flow is not None
        self.flow.writable.set()

    def data_received(self, data: bytes) -> None:
        if self.refused is not None:
            return  # lingering after a refusal: read and drop
        rest = self.upgrade_rest
        if rest is not None:
            # Waiting for a handshake slot: a client sends nothing before the 101, so this
            # is at most a little; reading stops rather than buffer more than a head.
            rest += data
            if len(rest) > MAX_RAW_HEAD_BYTES and self.flow is not None:
                self.flow.pause_reading()
            return
        if self.keep_alive_timer is not None:
            self.keep_alive_timer.cancel()
            self.keep_alive_timer = None
        if self.reading_head:
            self.raw_head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self.upgrading and self.refused is None:
                self.hand_over(data[upgrade.args[0] :])
            return
        except httptools.HttpParserError:
            if self.refused is None:
                self.refuse(http.HTTPStatus.BAD_REQUEST)
            return
        # Checked after parsing, so that a head and body arriving together are not refused.
        if self.refused is None and self.reading_head and self.raw_head_bytes > MAX_RAW_HEAD_BYTES:
            self.refuse(http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)

    # httptools callbacks. Once a request is refused, the rest of what was read in the same
    # chunk is parsed but ignored: no callback raises.

    def on_message_begin(self) -> None:
        if self.refused is not None:
            return
        if not self.reading_head:  # the next request on a kept-alive connection
            self.reading_head = True
            self.raw_head_bytes = 0
            self.head_timer = self.loop.call_later(self.state.settings.header_timeout, self.head_timed_out)
        self.head_bytes = 0
        self.url = b""
        self.headers = []
        self.expect_continue = False

    def on_url(self, url: bytes) -> None:
        if self.refused is not None:
            return
        self.url += url
        if len(self.url) > MAX_REQUEST_TARGET:
            self.refuse(http.HTTPStatus.REQUEST_URI_TOO_LONG)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.refused is not None:
            return
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True
        self.headers.append((name, value))
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
        parser = self.parser
        if parser.should_upgrade() and self.upgrade_token() == b"websocket":
            self.upgrading = True  # handed over when the parser signals the upgrade
            return
        scope = self.http_scope()
        if scope is None:
            self.refuse(http.HTTPStatus.BAD_REQUEST)
            return
        assert self.transport is not None
        assert self.flow is not None
        http_version = parser.get_http_version()
        cycle = RequestCycle(
            scope,
            self.state,
            self.transport,
            self.flow,
            keep_alive=http_version != "1.0" and parser.should_keep_alive(),
            expect_continue=self.expect_continue,
            on_complete=self.response_complete,
        )
        if self.cycle is None or self.cycle.response_complete:
            self.cycle = cycle
            self.state.start(cycle.run())
        else:
            # Pipelined: it runs when the response before it is complete.
            self.flow.pause_reading()
            self.pipeline.append(cycle)

    def on_body(self, body: bytes) -> None:
        if self.refused is None and not self.upgrading:
            self.current().feed(body)

    def on_message_complete(self) -> None:
        if self.refused is None and not self.upgrading:
            self.current().end_of_body()

    # Requests and responses

    def current(self) -> RequestCycle:
        """The cycle of the request being parsed: the last one queued, else the running one."""
        cycle = self.pipeline[-1] if self.pipeline else self.cycle
        assert cycle is not None
        return cycle

    def upgrade_token(self) -> bytes | None:
        connection: list[bytes] = []
        upgrade = None
        for name, value in self.headers:
            if name == b"connection":
                connection = [token.strip().lower() for token in value.split(b",")]
            elif name == b"upgrade":
                upgrade = value.strip().lower()
        return upgrade if b"upgrade" in connection else None

    def http_scope(self) -> dict[str, Any] | None:
        try:
            url = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            return None
        raw_path = url.path or b"/"
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = urllib.parse.unquote(path)
        version = self.parser.get_http_version()
        client, scheme = self.state.settings.trusted_proxies.resolve(self.client, self.scheme, self.headers, False)
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": version if version in ("1.0", "1.1") else "1.1",
            "method": self.parser.get_method().decode("ascii"),
            "scheme": scheme,
            "path": path,
            "raw_path": raw_path,
            "query_string": url.query or b"",
            "root_path": "",
            "headers": self.headers,
            "client": client,
            "server": self.server,
        }

    def response_complete(self, cycle: RequestCycle) -> None:
        transport = self.transport
        assert transport is not None
        assert self.flow is not None
        if transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            self.cycle = self.pipeline.popleft()
            self.state.start(self.cycle.run())
        elif not self.reading_head or self.raw_head_bytes == 0:
            self.keep_alive_timer = self.loop.call_later(
                self.state.settings.keep_alive_timeout, self.keep_alive_expired
            )

    def keep_alive_expired(self) -> None:
        self.keep_alive_timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def hand_over(self, rest: bytes) -> None:
        """Give the transport to a WebSocket connection, with the request and what followed it,
        once a handshake slot is free (``ServerState.admission``)."""
        self.cancel_timers()
        admission = self.state.admission
        if admission.free():
            self.hand_over_now(rest)
        else:
            self.upgrade_rest = bytearray(rest)
            admission.wait(self)

    def admitted(self) -> None:
        """A handshake slot for this waiting upgrade (nothing if the connection is gone)."""
        rest = self.upgrade_rest
        if rest is None or self.transport is None or self.transport.is_closing():
            return
        self.upgrade_rest = None
        assert self.flow is not None
        self.flow.resume_reading()
        self.hand_over_now(bytes(rest))

    def hand_over_now(self, rest: bytes) -> None:
        transport = self.transport
        assert transport is not None
        self.state.connections.discard(self)
        head = [self.parser.get_method(), b" ", self.url, b" HTTP/1.1\r\n"]
        for name, value in self.headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"\r\n")
        client, scheme = self.state.settings.trusted_proxies.resolve(self.client, "ws", self.headers, True)
        websocket = WebSocketConnection(self.state, client, self.server, scheme)
        self.state.admission.hold(websocket)  # until the application answers (or it is lost)
        transport.set_protocol(websocket)
        websocket.connection_made(transport)
        # The parser's callbacks hold this object, a cycle: broken, the object is freed now by
        # reference counting, even when a collect-and-freeze tick (gc_policy.py) froze it while
        # it waited for a slot; frozen, the cycle would stay until the next reclaim.
        del self.parser
        websocket.data_received(b"".join(head) + rest)

    def shutdown(self) -> None:
        """Close when idle; else let the response in flight finish, then close."""
        if self.transport is None:
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()
        else:
            self.cycle.keep_alive = False
            self.pipeline.clear()

    # Limits

    def cancel_timers(self) -> None:
        for timer in (self.head_timer, self.linger_timer, self.keep_alive_timer):
            if timer is not None:
                timer.cancel()
        self.head_timer = self.linger_timer = self.keep_alive_timer = None

    def head_timed_out(self) -> None:
        self.head_timer = None
        transport = self.transport
        if self.reading_head and self.refused is None and transport is not None and not transport.is_closing():
            self.refuse(http.HTTPStatus.REQUEST_TIMEOUT)

    def refuse(self, status: http.HTTPStatus) -> None:
        """Answer ``status``, shut the write side, drop input for a while, then close."""
        self.refused = status
        self.cancel_timers()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request's refusal must not cut into the response before it.
            transport.abort()
            return
        transport.write(refusal_bytes(status))
        if transport.can_write_eof():
            transport.write_eof()
        self.linger_timer = self.loop.call_later(LINGER_SECONDS, transport.close)
