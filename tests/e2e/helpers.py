"""Helpers for end-to-end tests: real server processes, real sockets, the real database."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from loadtests.server import PYTHON as PYTHON
from loadtests.server import REPO as REPO
from loadtests.server import Server, clean_env, migrate
from tests.conftest import TIMEOUT_FACTOR, scaled

SECRET_KEY = "e2e-test-secret-key-0123456789abcdef0123456789abcdef"
PASSWORD = "correct-horse-battery-staple"


def base_env(database_url: str, **overrides: str) -> dict[str, str]:
    """An e2e server's environment: the defaults, the suite's key, login limits a test run does not hit."""
    return clean_env(
        database_url,
        SECRET_KEY,
        # The suite logs in far more often than a person would; test_credentials.py lowers these.
        **{"REALTIME_LOGIN_RATE": "10000/min", "REALTIME_LOGIN_ADDRESS_RATE": "10000/min", **overrides},
    )


@dataclass
class ServerProcess(Server):
    """The one launcher (``loadtests/server.py``) with the suite's slow-machine factor on every wait."""

    timeout_factor: float = TIMEOUT_FACTOR


def http_json(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback test URL
    request.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=scaled(10)) as response:  # noqa: S310
            raw = response.read()
            return response.status, dict(response.headers), json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw.decode(errors="replace")
        return exc.code, dict(exc.headers), parsed


def obtain_tokens(server: Server, username: str, password: str = PASSWORD) -> dict[str, str]:
    status, _, body = http_json(
        "POST", f"{server.http_url}/api/auth/token/", {"username": username, "password": password}
    )
    assert status == 200, body
    return dict(body)


def mint_token(user_id: int, *, expires_in: float, key: str = SECRET_KEY, token_type: str = "access") -> str:
    """An HS256 token shaped like simplejwt's, for expired, forged and short-lived cases."""
    now = int(time.time())
    claims = {
        "token_type": token_type,
        "exp": int(now + expires_in),
        "iat": now,
        "jti": os.urandom(8).hex(),
        "user_id": str(user_id),
    }
    return jwt.encode(claims, key, algorithm="HS256")


def raw_http(port: int, request: bytes, host: str = "127.0.0.1", timeout: float = 5.0) -> tuple[int, bytes, bytes]:
    """Send raw bytes, return (status, header block, body) of the first response."""
    with socket.create_connection((host, port), timeout=scaled(timeout)) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    status = int(head.split(b" ", 2)[1])
    return status, head, body


# Every client a test opens, closed by the e2e conftest after the test even when it failed,
# so no socket is left for the garbage collector to complain about in a later test.
open_clients: list[ClientConnection] = []


async def connect(server: Server, token: str | None = None, **kwargs: Any) -> ClientConnection:
    url = server.ws_url if token is None else f"{server.ws_url}?token={token}"
    ws = await ws_connect(url, open_timeout=scaled(10), **kwargs)
    open_clients.append(ws)
    return ws


async def recv_json(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    """The next frame, whatever it is: a subscription that did not ask for presence receives
    no presence or signal pushes, so nothing is skipped (issue 17 keeps the contract's frames)."""
    import asyncio

    value: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), scaled(timeout)))
    return value


async def call(ws: ClientConnection, frame: dict[str, Any] | str, timeout: float = 5.0) -> dict[str, Any]:
    await ws.send(frame if isinstance(frame, str) else orjson.dumps(frame).decode())
    return await recv_json(ws, timeout)


async def expect_close(ws: ClientConnection, timeout: float = 10.0) -> tuple[int | None, str | None, list[Any]]:
    """Wait for the server to close; return (code, reason, frames received before the close)."""
    import asyncio

    frames: list[Any] = []
    try:
        async with asyncio.timeout(scaled(timeout)):
            while True:
                frames.append(orjson.loads(await ws.recv()))
    except ConnectionClosed:
        pass
    assert ws.close_code is not None, "the server did not close the connection"
    return ws.close_code, ws.close_reason, frames


def db_query(database_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the server's database directly (SQLite file or PostgreSQL)."""
    if database_url.startswith("sqlite:"):
        import sqlite3

        path = database_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            return list(conn.execute(sql.replace("%s", "?"), params).fetchall())
    import psycopg

    with psycopg.connect(database_url) as conn:
        return list(conn.execute(sql, params).fetchall())


def raw_upgrade(port: int, token: str) -> socket.socket:
    """A raw socket past a successful WebSocket handshake (reads the 101 byte by byte, so no
    frame is consumed): for peers that stall, send partial frames or never answer pings."""
    import base64

    sock = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws/?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def manage(database_url: str, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a management command against the e2e database, as an operator would."""
    return subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=REPO,
        env=base_env(database_url),
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=check,
    )


def create_user(database_url: str, username: str, password: str = PASSWORD) -> int:
    """A user in a test's own database (migrated already); returns its id."""
    code = (
        "from accounts.models import User\n"
        f"print('ID=%d' % User.objects.create_user(username={username!r}, password={password!r}).pk)\n"
    )
    out = manage(database_url, "shell", "-c", code, check=True).stdout
    return int(next(line for line in out.splitlines() if line.startswith("ID="))[3:])


@contextlib.contextmanager
def migrated_database(prefix: str, scratch: Path) -> Iterator[str]:
    """A fresh, migrated database shared by real processes: a new PostgreSQL database when the
    test command started a server (dropped afterwards), else a SQLite file under ``scratch``."""
    postgres = os.environ.get("REALTIME_TEST_POSTGRES_URL")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    if postgres:
        import psycopg

        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = postgres.rsplit("/", 1)[0] + f"/{name}"
    else:
        url = f"sqlite:///{scratch / f'{name}.sqlite3'}"
    migrate(base_env(url))
    try:
        yield url
    finally:
        if postgres:
            import psycopg

            with psycopg.connect(postgres, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
