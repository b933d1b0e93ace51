"""Handshake refusals and the HTTP side (issue 2; PROTOCOL.md sections 1 and 2)."""

from __future__ import annotations

import base64
import os

import pytest

from tests.e2e.helpers import ServerProcess, connect, http_json, obtain_tokens, raw_http, recv_json

KEY = base64.b64encode(os.urandom(16)).decode()


def upgrade(port: int, *headers: str) -> str:
    lines = ["GET /ws/ HTTP/1.1", f"Host: 127.0.0.1:{port}", *headers]
    return "\r\n".join(lines) + "\r\n\r\n"


@pytest.mark.parametrize(
    ("case", "headers"),
    [
        ("missing key", ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13"]),
        (
            "malformed key",
            [
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Key: not-base64!",
                "Sec-WebSocket-Version: 13",
            ],
        ),
        ("missing version", ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {KEY}"]),
    ],
)
def test_invalid_handshake_is_400(server: ServerProcess, case: str, headers: list[str]) -> None:
    """Connection: Invalid handshake -> HTTP 400, no upgrade."""
    status, head, _ = raw_http(server.port, upgrade(server.port, *headers).encode())
    assert status == 400, (case, head)
    assert b"101" not in head.split(b"\r\n", 1)[0]


def test_unsupported_websocket_version_is_426_naming_13(server: ServerProcess) -> None:
    """Connection: Invalid handshake (unsupported version) -> 426 with Sec-WebSocket-Version: 13."""
    request = upgrade(
        server.port,
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 8",
    )
    status, head, _ = raw_http(server.port, request.encode())
    assert status == 426
    assert b"sec-websocket-version: 13" in head.lower()


def test_plain_http_to_ws_is_426_with_json(server: ServerProcess) -> None:
    """Connection: Wrong protocol -> 426 with Upgrade: websocket and a JSON body, no upgrade."""
    status, headers, body = http_json("GET", f"{server.http_url}/ws/")
    assert status == 426
    assert {k.lower(): v for k, v in headers.items()}["upgrade"] == "websocket"
    assert body["code"] == "upgrade_required"


def test_disallowed_origin_is_403(server: ServerProcess) -> None:
    """Security: Origin validation -> a disallowed Origin gets HTTP 403, no upgrade."""
    request = upgrade(
        server.port,
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
        "Origin: http://evil.example",
    )
    status, _, _ = raw_http(server.port, request.encode())
    assert status == 403


async def test_allowed_origin_and_no_origin_connect(server: ServerProcess) -> None:
    """Security: Origin validation -> allowed origins and non-browser clients (no Origin) get in."""
    token = obtain_tokens(server, "alice")["access"]
    ws = await connect(server, token, origin="http://localhost:8000")
    assert (await recv_json(ws))["event"] == "session.welcome"
    await ws.close()
    ws = await connect(server, token)
    assert (await recv_json(ws))["event"] == "session.welcome"
    await ws.close()


async def test_origin_list_comes_from_environment(server_factory) -> None:
    """Security: Origin validation -> REALTIME_ALLOWED_ORIGINS replaces the default list."""
    custom = server_factory(REALTIME_ALLOWED_ORIGINS="https://app.example.com")
    base = upgrade(custom.port, "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {KEY}")
    base = base.removesuffix("\r\n\r\n") + "\r\nSec-WebSocket-Version: 13\r\n"
    status, _, _ = raw_http(custom.port, (base + "Origin: http://localhost:8000\r\n\r\n").encode())
    assert status == 403
    status, _, _ = raw_http(custom.port, (base + "Origin: https://app.example.com\r\n\r\n").encode())
    assert status == 101


def test_health_and_readiness(server: ServerProcess) -> None:
    status, _, body = http_json("GET", f"{server.http_url}/healthz")
    assert status == 200
    status, _, body = http_json("GET", f"{server.http_url}/readyz")
    assert (status, body) == (200, {"database": "ok", "broker": "ok"})


def test_token_obtain_and_refresh(server: ServerProcess) -> None:
    tokens = obtain_tokens(server, "alice")
    assert set(tokens) == {"access", "refresh"}
    status, _, body = http_json("POST", f"{server.http_url}/api/auth/token/refresh/", {"refresh": tokens["refresh"]})
    assert status == 200
    assert "access" in body
    status, _, _ = http_json("POST", f"{server.http_url}/api/auth/token/", {"username": "alice", "password": "wrong"})
    assert status == 401
