"""Issue 20: the project's own HTTP/1.1 front against a real ``manage.py serve``.

Keep-alive with pipelined requests answered in order, a chunked request body, ``Expect:
100-continue``, ``HEAD``, and proxy headers: behind a trusted proxy the client is the
rightmost ``X-Forwarded-For`` entry that is not a proxy, so a client claiming ``127.0.0.1``
in its own header cannot read ``/metrics`` (allow-listed by REALTIME_METRICS_ALLOW).
"""

from __future__ import annotations

import socket

import orjson

from tests.conftest import scaled
from tests.e2e.helpers import PASSWORD, ServerProcess, raw_http


def read_responses(sock: socket.socket, count: int, head_only: bool = False) -> list[tuple[int, bytes, bytes]]:
    """``count`` responses with a Content-Length (or, ``head_only``, answers to HEAD), read in order."""
    data = b""
    responses: list[tuple[int, bytes, bytes]] = []
    while len(responses) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(responses)} responses"
            data += chunk
        head, _, data = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and not head_only:
                length = int(value)
        while len(data) < length:
            chunk = sock.recv(65536)
            assert chunk
            data += chunk
        responses.append((int(head.split(b" ", 2)[1]), head, data[:length]))
        data = data[length:]
    return responses


def test_pipelined_requests_on_a_kept_alive_connection(server: ServerProcess) -> None:
    """Issue 20, HTTP front: three pipelined requests are answered in order on one connection,
    which stays open for a fourth."""
    host = f"Host: 127.0.0.1:{server.port}\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=scaled(5)) as sock:
        paths = ("/healthz", "/nope-404", "/readyz")
        sock.sendall("".join(f"GET {path} HTTP/1.1\r\n{host}\r\n" for path in paths).encode())
        statuses = [status for status, _, _ in read_responses(sock, 3)]
        assert statuses[:2] == [200, 404]
        assert statuses[2] in (200, 503)  # readiness, answered third
        sock.sendall(f"HEAD /healthz HTTP/1.1\r\n{host}\r\n".encode())
        status, head, _ = read_responses(sock, 1, head_only=True)[0]
        assert status == 200
        assert b"content-length:" in head.lower()
        sock.sendall(f"GET /healthz HTTP/1.1\r\n{host}\r\n".encode())
        assert read_responses(sock, 1)[0][0] == 200  # nothing followed the HEAD's headers
        assert b"date:" in head.lower()
        assert b"server:" not in head.lower()


def test_expect_100_continue_then_login(server: ServerProcess) -> None:
    """Issue 20, HTTP front: Expect: 100-continue is answered before the body is sent."""
    body = orjson.dumps({"username": "alice", "password": PASSWORD})
    head = (
        f"POST /api/auth/token/ HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=scaled(5)) as sock:
        sock.sendall(head.encode())
        assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        status, _, answer = read_responses(sock, 1)[0]
    assert status == 200, answer
    assert "access" in orjson.loads(answer)


def test_chunked_request_body_is_streamed_to_the_app(server_factory) -> None:
    """Issue 20, HTTP front: a chunked request body is decoded and streamed to the application:
    within the body limit it is answered by the view, past it 413 as the chunks arrive."""
    srv = server_factory(REALTIME_MAX_REQUEST_BODY_BYTES="4096")

    def post_chunked(chunks: list[bytes]) -> int:
        head = (
            f"POST /api/auth/token/ HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ).encode()
        body = b"".join(b"%x\r\n%b\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"
        return raw_http(srv.port, head + body)[0]

    # DRF reads no body without a Content-Length: the view answers, asking for the fields.
    assert post_chunked([b'{"username": ', b'"alice"}']) == 400
    assert post_chunked([b"x" * 3000, b"y" * 3000]) == 413


def metrics_status(server: ServerProcess, forwarded_for: str | None) -> int:
    extra = f"X-Forwarded-For: {forwarded_for}\r\n" if forwarded_for is not None else ""
    request = f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n{extra}Connection: close\r\n\r\n"
    return raw_http(server.port, request.encode())[0]


def test_spoofed_forwarded_for_cannot_claim_localhost_for_metrics(server_factory) -> None:
    """Addendum: with FORWARDED_ALLOW_IPS="*" (the compose file's setting behind nginx), a request
    through a trusted peer whose X-Forwarded-For starts with a spoofed 127.0.0.1 is from the
    rightmost address, and /metrics refuses it; the proxy's own word for a local client counts."""
    srv = server_factory(FORWARDED_ALLOW_IPS="*")
    assert metrics_status(srv, "127.0.0.1, 203.0.113.5") == 403
    assert metrics_status(srv, "203.0.113.5") == 403
    assert metrics_status(srv, "127.0.0.1") == 200
    assert metrics_status(srv, None) == 200


def test_forwarded_for_from_an_untrusted_peer_is_ignored(server_factory) -> None:
    """Issue 20, proxy headers: a peer not in FORWARDED_ALLOW_IPS cannot set its address, so a
    local client claiming a remote address is still local (and a remote one could not claim local)."""
    srv = server_factory(FORWARDED_ALLOW_IPS="192.0.2.1")
    assert metrics_status(srv, "203.0.113.5") == 200
