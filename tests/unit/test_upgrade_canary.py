"""Issue 20: upgrade canary for the public APIs the server seam (realtime/server/) is built on.

Each test drives one library the way the server does, in memory, and says which API changed
when it fails: ``websockets``' Sans-I/O ``ServerProtocol`` (handshake, frames, pings, close,
failure), its ``Frame``/``Opcode``/``CloseCode``/``State``/``Request``/``Response``;
``httptools.HttpRequestParser``'s callbacks and upgrade signal; uvloop's loop factory and
server; and the ``logging`` hooks the structured log relies on.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import logging
import os
import socket
from typing import cast

import httptools
import pytest
import uvloop
from websockets.exceptions import InvalidHeaderValue, InvalidState
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import SEND_EOF, State
from websockets.server import ServerProtocol
from websockets.typing import BytesLike

KEY = base64.b64encode(os.urandom(16)).decode()


def handshake(version: str = "13") -> bytes:
    return (
        "GET /ws/?token=t HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: {version}\r\nSec-WebSocket-Protocol: a, b\r\n\r\n"
    ).encode()


def masked(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=True)


def opened(max_size: int = 1024) -> ServerProtocol:
    protocol = ServerProtocol(max_size=max_size, logger=logging.getLogger("canary"))
    protocol.receive_data(handshake())
    [request] = protocol.events_received()
    assert isinstance(request, Request)
    protocol.send_response(protocol.accept(request))
    protocol.data_to_send()
    return protocol


def test_websockets_server_protocol_constructor() -> None:
    """websockets: ServerProtocol(max_size=, logger=) keyword arguments."""
    parameters = inspect.signature(ServerProtocol).parameters
    assert {"max_size", "logger"} <= set(parameters), "ServerProtocol's keyword arguments changed"


def test_websockets_handshake_request_and_response() -> None:
    """websockets: receive_data -> events_received gives a Request; accept gives a 101 Response;
    send_response makes the state OPEN; Request.path, headers.raw_items/get_all/clear."""
    protocol = ServerProtocol(max_size=1024)
    assert protocol.state is State.CONNECTING
    protocol.receive_data(handshake())
    events = protocol.events_received()
    assert len(events) == 1, "events_received() no longer gives the handshake Request"
    request = events[0]
    assert isinstance(request, Request), "the handshake event is no longer a websockets.http11.Request"
    assert request.path == "/ws/?token=t", "Request.path changed"
    assert ("Upgrade", "websocket") in list(request.headers.raw_items()), "Headers.raw_items() changed"
    assert request.headers.get_all("Sec-WebSocket-Protocol") == ["a, b"], "Headers.get_all() changed"
    response = protocol.accept(request)
    assert isinstance(response, Response), "accept() no longer returns a Response"
    assert response.status_code == 101, "accept() of a valid request is no longer 101"
    assert "Date" in response.headers, "accept() no longer sets a Date header"
    response.headers["X-Extra"] = "1"
    protocol.send_response(response)
    assert protocol.state.name == "OPEN", "send_response(101) no longer opens the connection"
    written = b"".join(protocol.data_to_send())
    assert written.startswith(b"HTTP/1.1 101 "), "data_to_send() after send_response"
    assert b"X-Extra: 1" in written, "a header added to accept()'s Response is not sent"
    request.headers.clear()
    assert not list(request.headers.raw_items()), "Headers.clear() changed"


def test_websockets_unsupported_version_is_invalid_header_value() -> None:
    """websockets: accept() of an unsupported Sec-WebSocket-Version answers 400 and sets
    handshake_exc to InvalidHeaderValue naming the header (the server turns it into 426)."""
    protocol = ServerProtocol()
    protocol.receive_data(handshake(version="8"))
    [request] = protocol.events_received()
    assert isinstance(request, Request)
    response = protocol.accept(request)
    assert response.status_code == 400, "accept() of version 8 is no longer 400"
    exc = protocol.handshake_exc
    assert isinstance(exc, InvalidHeaderValue), "handshake_exc is no longer InvalidHeaderValue"
    assert exc.name == "Sec-WebSocket-Version", "InvalidHeaderValue.name changed"
    rejection = protocol.reject(426, "text")
    assert rejection.status_code == 426, "reject() changed"
    protocol.send_response(rejection)
    assert protocol.data_to_send()[-1] == SEND_EOF, "a rejection no longer ends with SEND_EOF (b'')"


def test_websockets_frames_ping_and_text() -> None:
    """websockets: client frames come out of events_received as Frame(opcode, data, fin); a
    PING's PONG is queued in data_to_send; send_text/send_binary/send_ping write frames."""
    protocol = opened()
    protocol.receive_data(
        masked(Opcode.TEXT, b"hel", fin=False) + masked(Opcode.CONT, b"lo") + masked(Opcode.PING, b"p")
    )
    events = protocol.events_received()
    assert [(e.opcode, bytes(e.data), e.fin) for e in events if isinstance(e, Frame)] == [
        (Opcode.TEXT, b"hel", False),
        (Opcode.CONT, b"lo", True),
        (Opcode.PING, b"p", True),
    ], "Frame events changed"
    assert protocol.data_to_send() == [Frame(Opcode.PONG, b"p").serialize(mask=False)], "automatic PONG changed"
    protocol.send_text(b"x")
    protocol.send_binary(b"y")
    protocol.send_ping(b"z")
    assert protocol.data_to_send() == [
        Frame(Opcode.TEXT, b"x").serialize(mask=False),
        Frame(Opcode.BINARY, b"y").serialize(mask=False),
        Frame(Opcode.PING, b"z").serialize(mask=False),
    ], "send_text/send_binary/send_ping framing changed"
    data: BytesLike = b"ok"
    assert isinstance(data, bytes), "websockets.typing.BytesLike changed"


def test_websockets_client_close_is_echoed_then_eof() -> None:
    """websockets: a client's close frame is a CLOSE event, close_rcvd has code and reason,
    the echo and SEND_EOF are queued, the state is CLOSING; a later send raises InvalidState."""
    protocol = opened()
    protocol.receive_data(masked(Opcode.CLOSE, Close(1000, "bye").serialize()))
    [frame] = protocol.events_received()
    assert isinstance(frame, Frame)
    assert frame.opcode is Opcode.CLOSE
    assert protocol.close_rcvd is not None
    assert (protocol.close_rcvd.code, protocol.close_rcvd.reason) == (1000, "bye"), "close_rcvd changed"
    assert protocol.data_to_send() == [
        Frame(Opcode.CLOSE, Close(1000, "bye").serialize()).serialize(mask=False),
        SEND_EOF,
    ]
    assert protocol.state is State.CLOSING
    assert protocol.close_expected(), "close_expected() changed"
    with pytest.raises(InvalidState):
        protocol.send_text(b"late")


def test_websockets_server_close_then_client_reply() -> None:
    """websockets: send_close(code, reason) writes the close frame; the client's reply is a
    CLOSE event followed by SEND_EOF."""
    protocol = opened()
    protocol.send_close(1012, "service_restart")
    assert protocol.data_to_send() == [
        Frame(Opcode.CLOSE, Close(1012, "service_restart").serialize()).serialize(mask=False)
    ]
    assert protocol.close_sent is not None
    assert protocol.close_sent.code == 1012, "close_sent changed"
    protocol.receive_data(masked(Opcode.CLOSE, Close(1012, "service_restart").serialize()))
    assert [e.opcode for e in protocol.events_received() if isinstance(e, Frame)] == [Opcode.CLOSE]
    assert protocol.data_to_send() == [SEND_EOF], "the server no longer half-closes after the handshake"


def test_websockets_oversized_message_fails_1009_and_discards() -> None:
    """websockets: a message over max_size sets parser_exc, fails the connection with 1009
    (fail() is what the server's subclass overrides to set the reason), queues the close frame
    and SEND_EOF, and then reading goes on, discarding, until receive_eof."""
    reasons: list[tuple[int, str]] = []

    class Recording(ServerProtocol):
        def fail(self, code: CloseCode | int, reason: str = "") -> None:
            reasons.append((int(code), reason))
            super().fail(code, "message_too_large")

    protocol = Recording(max_size=8)
    protocol.receive_data(handshake())
    [request] = protocol.events_received()
    assert isinstance(request, Request)
    protocol.send_response(protocol.accept(request))
    protocol.data_to_send()
    protocol.receive_data(masked(Opcode.TEXT, b"x" * 9))
    assert protocol.parser_exc is not None, "parser_exc is no longer set on an oversized message"
    assert [code for code, _ in reasons] == [CloseCode.MESSAGE_TOO_BIG], "fail() is no longer called with 1009"
    assert protocol.data_to_send() == [
        Frame(Opcode.CLOSE, Close(1009, "message_too_large").serialize()).serialize(mask=False),
        SEND_EOF,
    ]
    protocol.receive_data(masked(Opcode.TEXT, b"more"))  # still read, and dropped
    assert protocol.events_received() == []
    protocol.receive_eof()
    assert protocol.state is State.CLOSED, "receive_eof() after a failure no longer closes"


def test_websockets_names_the_server_uses() -> None:
    """websockets: the enum members the server names."""
    assert {Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PING, Opcode.PONG, Opcode.CLOSE}
    codes = {CloseCode.MESSAGE_TOO_BIG: 1009, CloseCode.INVALID_DATA: 1007, CloseCode.ABNORMAL_CLOSURE: 1006}
    assert all(int(code) == value for code, value in codes.items()), "CloseCode values changed"
    assert {State.CONNECTING, State.OPEN, State.CLOSING, State.CLOSED}
    assert SEND_EOF == b""
    assert Frame(Opcode.TEXT, b"hi").serialize(mask=False) == b"\x81\x02hi", "Frame.serialize changed"


class Callbacks:
    def __init__(self) -> None:
        self.seen: list[object] = []

    def on_message_begin(self) -> None:
        self.seen.append("begin")

    def on_url(self, url: bytes) -> None:
        self.seen.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.seen.append((name, value))

    def on_headers_complete(self) -> None:
        self.seen.append("headers")

    def on_body(self, body: bytes) -> None:
        self.seen.append(body)

    def on_message_complete(self) -> None:
        self.seen.append("complete")


def test_httptools_callbacks_and_pipelining() -> None:
    """httptools: HttpRequestParser(callbacks) calls on_message_begin, on_url, on_header,
    on_headers_complete, on_body (chunked decoded), on_message_complete, per pipelined request;
    get_method, get_http_version, should_keep_alive; parse_url().path/.query."""
    callbacks = Callbacks()
    parser = httptools.HttpRequestParser(callbacks)
    parser.set_dangerous_leniencies(lenient_data_after_close=True)
    parser.feed_data(
        b"POST /a?b=1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    assert callbacks.seen == [
        "begin",
        b"/a?b=1",
        (b"Host", b"h"),
        (b"Transfer-Encoding", b"chunked"),
        "headers",
        b"abc",
        "complete",
        "begin",
        b"/c",
        (b"Host", b"h"),
        "headers",
        "complete",
    ], "httptools callbacks changed"
    assert parser.get_method() == b"GET", "get_method() changed"
    assert parser.get_http_version() == "1.1", "get_http_version() changed"
    assert parser.should_keep_alive(), "should_keep_alive() changed"
    url = httptools.parse_url(b"/a%20b?c=d")
    assert (url.path, url.query) == (b"/a%20b", b"c=d"), "parse_url() changed"
    with pytest.raises(httptools.HttpParserInvalidURLError):
        httptools.parse_url(b"\x00")


def test_httptools_upgrade_signal_gives_the_offset() -> None:
    """httptools: an upgrade request raises HttpParserUpgrade whose first argument is the
    offset of the bytes after the head; should_upgrade() is true."""
    parser = httptools.HttpRequestParser(Callbacks())
    data = handshake() + b"FRAME"
    with pytest.raises(httptools.HttpParserUpgrade) as upgrade:
        parser.feed_data(data)
    assert data[upgrade.value.args[0] :] == b"FRAME", "HttpParserUpgrade's offset changed"
    assert parser.should_upgrade(), "should_upgrade() changed"
    with pytest.raises(httptools.HttpParserError):
        httptools.HttpRequestParser(Callbacks()).feed_data(b"NOT HTTP\r\n\r\n")


def test_uvloop_runner_and_create_server_on_a_bound_socket() -> None:
    """uvloop: new_event_loop as asyncio.Runner's loop_factory; create_server(factory, sock=,
    backlog=) serves a socket bound elsewhere; transports have peername/sockname,
    pause_reading/resume_reading, can_write_eof/write_eof."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    port = sock.getsockname()[1]

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            assert transport.get_extra_info("peername")[0] == "127.0.0.1"
            assert transport.get_extra_info("sockname")[1] == port

        def data_received(self, data: bytes) -> None:
            transport = cast(asyncio.Transport, self.transport)  # uvloop's do not derive from it
            transport.pause_reading()
            transport.resume_reading()
            transport.write(data)
            assert transport.can_write_eof()
            transport.write_eof()

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, sock=sock, backlog=8)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        answer = await reader.read()
        writer.close()
        server.close()
        return answer

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(main()) == b"ping"


def test_logging_hooks() -> None:
    """logging: setLoggerClass/getLoggerClass, Logger.findCaller's signature, the
    logThreads/logProcesses/logMultiprocessing flags, LoggerAdapter.isEnabledFor."""
    assert list(inspect.signature(logging.Logger.findCaller).parameters) == ["self", "stack_info", "stacklevel"]
    assert callable(logging.setLoggerClass)
    assert issubclass(logging.getLoggerClass(), logging.Logger)
    for flag in ("logThreads", "logProcesses", "logMultiprocessing"):
        assert hasattr(logging, flag), f"logging.{flag} is gone"
    adapter = logging.LoggerAdapter(logging.getLogger("canary"), {})
    assert isinstance(adapter.isEnabledFor(logging.WARNING), bool)
