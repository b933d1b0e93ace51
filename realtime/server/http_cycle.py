"""One HTTP/1.1 request's ASGI cycle: the application's ``receive`` and ``send`` for it.

The request body arrives through :meth:`RequestCycle.feed` from the connection's parser;
the response is written as the application sends it: with its ``Content-Length``, or
chunked when it declares none (never for ``HEAD``, 204 or 304), a ``Date`` header, no
``Server`` header, ``connection: close`` when the connection will not be kept alive.
``Expect: 100-continue`` is answered when the application first asks for the body.
"""

from __future__ import annotations

import asyncio
import http
import logging
import re
from collections.abc import Callable
from typing import Any

from realtime.server.state import Message, ServerState
from realtime.server.wire import Gate

logger = logging.getLogger("realtime.server")

# Header names are tokens; values carry no control characters but tab (RFC 9110 section 5).
INVALID_NAME = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
INVALID_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
# Request bytes buffered for the application past which the connection stops reading.
BODY_HIGH_WATER = 65536


def status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode()


STATUS_LINES = {status: status_line(status) for status in range(100, 600)}
INTERNAL_ERROR = b"Internal Server Error"


class FlowControl:
    """The transport's backpressure, shared by a connection's cycles: ``send`` waits for room."""

    __slots__ = ("read_paused", "transport", "writable")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writable = Gate()
        self.read_paused = False

    def pause_reading(self) -> None:
        if not self.read_paused and not self.transport.is_closing():
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and not self.transport.is_closing():
            self.read_paused = False
            self.transport.resume_reading()


class RequestCycle:
    def __init__(
        self,
        scope: dict[str, Any],
        state: ServerState,
        transport: asyncio.Transport,
        flow: FlowControl,
        keep_alive: bool,
        expect_continue: bool,
        on_complete: Callable[[RequestCycle], None],
    ) -> None:
        self.scope = scope
        self.state = state
        self.transport = transport
        self.flow = flow
        self.keep_alive = keep_alive
        self.waiting_for_continue = expect_continue
        self.on_complete = on_complete
        self.head = scope["method"] == "HEAD"
        self.body = bytearray()
        self.more_body = True
        self.arrived = asyncio.Event()
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.chunked = False
        self.remaining = 0  # bytes still owed under the response's Content-Length

    # From the connection's parser.

    def feed(self, body: bytes) -> None:
        if self.response_complete:
            return
        self.body += body
        if len(self.body) > BODY_HIGH_WATER:
            self.flow.pause_reading()
        self.arrived.set()

    def end_of_body(self) -> None:
        self.more_body = False
        self.arrived.set()

    def lost(self) -> None:
        if not self.response_complete:
            self.disconnected = True
        self.arrived.set()

    # The application.

    async def run(self) -> None:
        try:
            await self.state.app(self.scope, self.receive, self.send)
        except Exception:
            logger.exception("exception in the ASGI application")
            if not self.response_started:
                await self.send_500()
            else:
                self.transport.close()
        else:
            if not self.response_started and not self.disconnected:
                logger.error("the ASGI application returned without starting a response")
                await self.send_500()
            elif not self.response_complete and not self.disconnected:
                logger.error("the ASGI application returned without completing its response")
                self.transport.close()

    async def send_500(self) -> None:
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
        headers.append((b"content-length", str(len(INTERNAL_ERROR)).encode()))
        await self.send({"type": "http.response.start", "status": 500, "headers": headers})
        await self.send({"type": "http.response.body", "body": INTERNAL_ERROR})

    async def receive(self) -> Message:
        if self.waiting_for_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_continue = False
        if not self.disconnected and not self.response_complete:
            if self.more_body:
                # Only for this request's body: requests pipelined behind it wait unread.
                self.flow.resume_reading()
            await self.arrived.wait()
            self.arrived.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        message = {"type": "http.request", "body": bytes(self.body), "more_body": self.more_body}
        self.body = bytearray()
        return message

    async def send(self, message: Message) -> None:
        if not self.flow.writable.is_set() and not self.disconnected:
            await self.flow.writable.wait()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected 'http.response.start', got {kind!r}")
            self.start_response(int(message["status"]), message.get("headers", ()))
        elif not self.response_complete:
            if kind != "http.response.body":
                raise RuntimeError(f"expected 'http.response.body', got {kind!r}")
            self.write_body(bytes(message.get("body", b"")), bool(message.get("more_body", False)))
        else:
            raise RuntimeError(f"{kind!r} sent after the response was complete")

    def start_response(self, status: int, headers: Any) -> None:
        self.response_started = True
        self.waiting_for_continue = False
        content = [STATUS_LINES[status], b"date: ", self.state.date_header(), b"\r\n"]
        length: int | None = None
        close_sent = False
        for raw_name, value in headers:
            if INVALID_NAME.search(raw_name):
                raise RuntimeError(f"invalid response header name {raw_name!r}")
            if INVALID_VALUE.search(value):
                raise RuntimeError(f"invalid response header value for {raw_name!r}")
            name = raw_name.lower()
            if name == b"content-length" and length is None and not self.chunked:
                length = int(value)
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.chunked = True
                length = None
            elif name == b"connection" and b"close" in [token.strip().lower() for token in value.split(b",")]:
                self.keep_alive = False
                close_sent = True
            elif name == b"date":
                continue  # ours is already there
            content.extend((name, b": ", value, b"\r\n"))
        if not self.keep_alive and not close_sent:
            content.append(b"connection: close\r\n")
        if length is not None:
            self.remaining = length
        elif not self.chunked and not self.head and status not in (204, 304):
            self.chunked = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        self.transport.write(b"".join(content))

    def write_body(self, body: bytes, more_body: bool) -> None:
        if self.head:
            self.remaining = 0
        elif self.chunked:
            chunk = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            self.transport.write(chunk if more_body else chunk + b"0\r\n\r\n")
        else:
            if len(body) > self.remaining:
                raise RuntimeError("response body longer than its Content-Length")
            self.remaining -= len(body)
            if body:
                self.transport.write(body)
        if more_body:
            return
        if self.remaining:
            raise RuntimeError("response body shorter than its Content-Length")
        self.response_complete = True
        self.arrived.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_complete(self)
