"""Issue 20: the project's own HTTP/1.1 front (realtime/server/http.py), driven in memory.

Keep-alive and pipelining order, chunked request bodies, ``Expect: 100-continue``, ``HEAD``,
chunked responses, the ``Date`` header and no ``Server`` header, proxy headers (the client
is the rightmost ``X-Forwarded-For`` entry that is not a trusted proxy), the head limits
(414, 431, 503) and the hand-over of an upgrade to the WebSocket connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.frames import Opcode

from realtime.server.http import MAX_REQUEST_TARGET, HttpConnection
from realtime.server.state import Message
from realtime.server.websocket import WebSocketConnection
from tests.unit.server.fakes import FakeTransport, connect, make_state, masked, settle, upgrade_request

Scope = dict[str, Any]


class Recorder:
    """An ASGI app answering ``METHOD PATH BODYLEN CLIENT SCHEME``; ``slow`` paths wait for ``release``."""

    def __init__(self, length: bool = True) -> None:
        self.scopes: list[Scope] = []
        self.bodies: list[bytes] = []
        self.release = asyncio.Event()
        self.length = length
        self.websocket: list[Message] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            self.websocket.append(await receive())
            await send({"type": "websocket.accept"})
            self.websocket.append(await receive())
            await self.release.wait()
            return
        self.scopes.append(scope)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        if scope["path"] == "/slow":
            await self.release.wait()
        client = scope["client"][0] if scope["client"] else "-"
        payload = f"{scope['method']} {scope['path']} {len(body)} {client} {scope['scheme']}".encode()
        headers = [(b"content-type", b"text/plain")]
        if self.length:
            headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if self.length:
            await send({"type": "http.response.body", "body": payload})
        else:
            await send({"type": "http.response.body", "body": payload[:3], "more_body": True})
            await send({"type": "http.response.body", "body": payload[3:]})


async def served(
    app: Recorder, data: bytes, peer: tuple[str, int] = ("203.0.113.7", 5), **settings: Any
) -> FakeTransport:
    transport = FakeTransport(peer)
    protocol = HttpConnection(make_state(app, **settings))
    connect(protocol, transport)
    protocol.data_received(data)
    await settle(10)
    return transport


async def test_keep_alive_pipelined_requests_are_answered_in_order() -> None:
    """Issue 20, HTTP front: pipelined requests on one kept-alive connection run one at a time, in order."""
    app = Recorder()
    transport = FakeTransport()
    protocol = HttpConnection(make_state(app))
    connect(protocol, transport)
    protocol.data_received(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\nGET /fast HTTP/1.1\r\nHost: h\r\n\r\n")
    await settle(10)
    assert [scope["path"] for scope in app.scopes] == ["/slow"]  # the second waits for the first's response
    assert transport.written == b""
    assert not transport.reading  # and reading pauses behind it
    app.release.set()
    await settle(10)
    answer = transport.take()
    assert answer.index(b"GET /slow") < answer.index(b"GET /fast")
    assert answer.count(b"HTTP/1.1 200 OK") == 2
    assert not transport.closed  # kept alive
    assert transport.reading


async def test_chunked_request_body_is_reassembled() -> None:
    """Issue 20, HTTP front: a chunked request body reaches the app whole."""
    app = Recorder()
    request = b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"
    transport = await served(app, request)
    assert app.bodies == [b"abcdefg"]
    assert b"POST /p 7" in transport.written


async def test_expect_100_continue_is_answered_when_the_body_is_read() -> None:
    """Issue 20, HTTP front: Expect: 100-continue gets 100 Continue before the final response."""
    app = Recorder()
    transport = FakeTransport()
    protocol = HttpConnection(make_state(app))
    connect(protocol, transport)
    protocol.data_received(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    await settle()
    assert transport.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    protocol.data_received(b"abc")
    await settle(10)
    answer = transport.take()
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert answer.endswith(b"POST /p 3 203.0.113.7 http")


async def test_head_has_headers_and_no_body() -> None:
    """Issue 20, HTTP front: HEAD is answered with the GET's headers and no body."""
    transport = await served(Recorder(), b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n")
    head, _, body = bytes(transport.written).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"content-length: " in head
    assert body == b""


async def test_response_without_length_is_chunked_with_date_and_no_server_header() -> None:
    """Issue 20, HTTP front: no Content-Length -> chunked; a Date header; no Server header."""
    transport = await served(Recorder(length=False), b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n")
    head, _, body = bytes(transport.written).partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head
    assert b"date: " in head
    assert b"server:" not in head.lower()
    assert body == b"3\r\nGET\r\n16\r\n /c 0 203.0.113.7 http\r\n0\r\n\r\n"


async def test_http_1_0_and_connection_close_are_not_kept_alive() -> None:
    """Issue 20, HTTP front: HTTP/1.0 and Connection: close end the connection after the response."""
    for request in (b"GET /a HTTP/1.0\r\n\r\n", b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"):
        transport = await served(Recorder(), request)
        assert b"connection: close" in transport.written
        assert transport.closed


async def test_proxy_headers_only_from_a_trusted_peer() -> None:
    """Issue 20 / addendum: X-Forwarded-For and -Proto are honoured only from FORWARDED_ALLOW_IPS."""
    request = b"GET /a HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 198.51.100.1\r\nX-Forwarded-Proto: https\r\n\r\n"
    trusted = await served(Recorder(), request, peer=("127.0.0.1", 5))
    assert trusted.written.endswith(b"GET /a 0 198.51.100.1 https")
    untrusted = await served(Recorder(), request, peer=("203.0.113.7", 5))
    assert untrusted.written.endswith(b"GET /a 0 203.0.113.7 http")


async def test_spoofed_leftmost_forwarded_for_is_not_the_client() -> None:
    """Addendum: with FORWARDED_ALLOW_IPS="*" behind nginx, a client claiming 127.0.0.1 in its
    own X-Forwarded-For is seen as the address nginx appended (the rightmost entry)."""
    request = b"GET /metrics HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 127.0.0.1, 198.51.100.9\r\n\r\n"
    transport = await served(Recorder(), request, peer=("172.18.0.5", 5), forwarded_allow_ips="*")
    assert transport.written.endswith(b"GET /metrics 0 198.51.100.9 http")
    listed = await served(Recorder(), request, peer=("127.0.0.1", 5), forwarded_allow_ips="127.0.0.1")
    assert listed.written.endswith(b"GET /metrics 0 198.51.100.9 http")


async def test_head_limits_414_431_and_connection_limit_503() -> None:
    """Issue 13 limits on the owned front: 414 past the target limit, 431 past the header
    count, 503 past the connection limit; each answer shuts the write side."""
    long_target = b"GET /" + b"a" * MAX_REQUEST_TARGET + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    assert (await served(Recorder(), long_target)).written.startswith(b"HTTP/1.1 414 ")
    many = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % n for n in range(101)) + b"\r\n"
    refused = await served(Recorder(), many)
    assert refused.written.startswith(b"HTTP/1.1 431 ")
    assert refused.eof
    app = Recorder()
    state = make_state(app, max_connections=1)
    first, second = FakeTransport(), FakeTransport()
    connect(HttpConnection(state), first)
    over = HttpConnection(state)
    connect(over, second)
    over.data_received(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    await settle()
    assert second.written.startswith(b"HTTP/1.1 503 ")
    assert app.scopes == []


async def test_upgrade_is_handed_over_with_the_bytes_after_it() -> None:
    """Issue 20: Upgrade: websocket hands the connection, and a frame sent with the request, to
    the WebSocket protocol; the HTTP connection leaves the registry, the WebSocket joins it."""
    app = Recorder()
    state = make_state(app)
    transport = FakeTransport(("127.0.0.1", 5))
    protocol = HttpConnection(state)
    connect(protocol, transport)
    protocol.data_received(upgrade_request(extra="X-Forwarded-For: 198.51.100.3\r\n") + masked(Opcode.TEXT, b"hi"))
    await settle(10)
    assert isinstance(transport.protocol, WebSocketConnection)
    assert state.connections == {transport.protocol}
    assert transport.written.startswith(b"HTTP/1.1 101 ")
    assert app.websocket == [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "hi"}]
    assert transport.protocol.client == ("198.51.100.3", 0)
    app.release.set()
    await settle(10)
    assert transport.closed
    assert state.connections == set()
