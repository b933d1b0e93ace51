"""Issue 14: every exit path frees the connection, and a database fault at connect is not an
authentication failure (PROTOCOL.md sections 5 and 11).

After each server-side close the open-connections gauge (/metrics) and the session row (the
database, as the admin shows it) must say the connection is gone.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.frames import Frame, Opcode

from realtime_client import RealtimeClient
from tests.conftest import scaled
from tests.e2e.conftest import E2EDatabase
from tests.e2e.helpers import (
    PYTHON,
    REPO,
    ServerProcess,
    base_env,
    connect,
    create_user,
    db_query,
    expect_close,
    mint_token,
    raw_upgrade,
    recv_json,
)
from tests.e2e.test_metrics import scrape

ROW = "SELECT close_code, disconnected_at IS NOT NULL FROM realtime_connectionsession WHERE id = %s"


def masked(opcode: Opcode, payload: bytes) -> bytes:
    return Frame(opcode, payload).serialize(mask=True)


def message_send(stream: str) -> bytes:
    frame = {"event": "message.send", "id": uuid.uuid4().hex, "data": {"stream": stream, "text": "in flight"}}
    return masked(Opcode.TEXT, orjson.dumps(frame))


def read_frame(sock: socket.socket) -> dict[str, Any]:
    """One server frame (unmasked, text, at most a 16-bit length), parsed."""
    head = sock.recv(2)
    length = head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(sock.recv(2), "big")
    body = b""
    while len(body) < length:
        body += sock.recv(length - len(body))
    frame: dict[str, Any] = orjson.loads(body)
    return frame


def read_welcome(sock: socket.socket) -> str:
    """The session id from the welcome frame."""
    welcome = read_frame(sock)
    assert welcome["event"] == "session.welcome", welcome
    return str(welcome["data"]["session_id"])


async def freed(srv: ServerProcess, database_url: str, session_id: str, code: int | None, timeout: float = 10) -> None:
    """Poll until the gauge is back to 0 and the session row is closed with ``code``."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        gauge = scrape(srv).get("realtime_open_connections{}")
        row = db_query(database_url, ROW, (session_id.replace("-", "") if "sqlite" in database_url else session_id,))
        if gauge == 0 and row and row[0][1] and (code is None or row[0][0] == code):
            return
        assert time.monotonic() < deadline, f"not freed: gauge {gauge}, row {row}"
        await asyncio.sleep(0.05)


def no_traceback(srv: ServerProcess) -> None:
    log = srv.log_text()
    assert "Traceback" not in log, log[-3000:]


async def test_invalid_utf8_while_a_handler_runs_frees_the_connection(server_factory, e2e_db: E2EDatabase) -> None:
    """Issue 14 / Fault tolerance: Partial message -> invalid UTF-8 arrives while a publish is in
    the database: the server closes 1007; on main the reply's send then raised, the consumer died
    with a traceback and the gauge, hub entry and session row stayed open forever."""
    srv = server_factory()
    sock = raw_upgrade(srv.port, mint_token(e2e_db.user_ids["alice"], expires_in=600))
    session_id = read_welcome(sock)
    stream = f"room:utf{uuid.uuid4().hex[:8]}"
    sock.sendall(message_send(stream) + masked(Opcode.TEXT, b"\xff\xfe not utf-8"))
    await freed(srv, e2e_db.url, session_id, 1007)
    sock.close()
    no_traceback(srv)


async def test_oversized_frame_while_a_handler_runs_frees_the_connection(server_factory, e2e_db: E2EDatabase) -> None:
    """Issue 14 / Message size limit -> a frame over REALTIME_MAX_MESSAGE_BYTES while a publish is
    in flight: closed 1009, and the connection is freed (gauge, session row)."""
    srv = server_factory(REALTIME_MAX_MESSAGE_BYTES="1024")
    sock = raw_upgrade(srv.port, mint_token(e2e_db.user_ids["alice"], expires_in=600))
    session_id = read_welcome(sock)
    stream = f"room:big{uuid.uuid4().hex[:8]}"
    sock.sendall(message_send(stream) + masked(Opcode.TEXT, b'"' + b"x" * 4000 + b'"'))
    await freed(srv, e2e_db.url, session_id, 1009)
    sock.close()
    no_traceback(srv)


async def test_keepalive_timeout_frees_the_connection(server_factory, e2e_db: E2EDatabase) -> None:
    """Issue 14 / Risks: connection leaks -> a peer that never answers pings is dropped after
    REALTIME_HEARTBEAT_TIMEOUT and the connection is freed (gauge, session row)."""
    srv = server_factory(REALTIME_HEARTBEAT_INTERVAL="0.2", REALTIME_HEARTBEAT_TIMEOUT="0.3")
    sock = raw_upgrade(srv.port, mint_token(e2e_db.user_ids["alice"], expires_in=600))
    session_id = read_welcome(sock)
    await freed(srv, e2e_db.url, session_id, None)
    sock.close()
    no_traceback(srv)


@pytest.mark.slow  # ~12 s: the server's close handshake timeout is 10 s
async def test_a_peer_that_stops_reading_is_dropped_and_freed(server_factory, e2e_db: E2EDatabase) -> None:
    """Issue 14: a peer that sends big echoes and then reads nothing (so it cannot see pings and
    the server's socket buffer stays full) is dropped by the heartbeat and aborted once the close
    handshake times out, and the connection is freed. On main the graceful close waited for the
    buffer to drain: forever; the session stayed open and counted."""
    srv = server_factory(REALTIME_HEARTBEAT_INTERVAL="0.5", REALTIME_HEARTBEAT_TIMEOUT="0.5", REALTIME_RATE_LIMIT="0")
    sock = raw_upgrade(srv.port, mint_token(e2e_db.user_ids["alice"], expires_in=600))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    session_id = read_welcome(sock)
    echo = masked(Opcode.TEXT, orjson.dumps({"event": "echo", "data": {"b": "e" * 900_000}}))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    for _ in range(40):  # the kernel's socket buffers take the first several MB of replies
        try:
            await asyncio.wait_for(loop.sock_sendall(sock, echo), 1)
        except TimeoutError:
            break  # the server stopped reading: its writes to this peer are paused
    else:
        pytest.fail("the server kept reading from a peer that reads nothing")
    await freed(srv, e2e_db.url, session_id, None, timeout=25)
    sock.close()
    no_traceback(srv)


async def test_slow_consumer_overflow_frees_the_connection(server_factory, e2e_db: E2EDatabase) -> None:
    """Issue 14 / Backpressure: Buffer overflow -> a subscriber that never reads is closed 1013
    slow_consumer and freed: gauge back to the publisher's 1, its session row closed with 1013.
    On main the close waited forever for room in the full socket buffer: the session stayed open,
    counted and in the hub."""
    srv = server_factory(REALTIME_SEND_QUEUE="5", REALTIME_RATE_LIMIT="0", REALTIME_HEARTBEAT_TIMEOUT="1")
    user = e2e_db.user_ids["alice"]
    stream = f"room:ovf{uuid.uuid4().hex[:8]}"
    sock = raw_upgrade(srv.port, mint_token(user, expires_in=600))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    session_id = read_welcome(sock)
    subscribe = {"event": "stream.subscribe", "id": "s", "data": {"stream": stream}}
    sock.sendall(masked(Opcode.TEXT, orjson.dumps(subscribe)))
    publisher = await connect(srv, mint_token(user, expires_in=600))
    await recv_json(publisher)
    while read_frame(sock).get("ref") != "s":  # the subscribe is processed; from here on it never reads
        pass
    text = "p" * 60_000
    deadline = time.monotonic() + scaled(15)
    while True:
        await publisher.send(orjson.dumps({"event": "message.send", "data": {"stream": stream, "text": text}}).decode())
        assert (await recv_json(publisher))["event"] == "ack"
        rows = db_query(e2e_db.url, ROW, (session_id.replace("-", "") if "sqlite" in e2e_db.url else session_id,))
        if rows and rows[0][1]:
            break
        assert time.monotonic() < deadline, "the non-reading subscriber was never closed"
    assert rows[0][0] == 1013
    deadline = time.monotonic() + scaled(10)
    while scrape(srv).get("realtime_open_connections{}") != 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    sock.close()
    no_traceback(srv)


# A database fault at connect ---------------------------------------------------------


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path, int]]:
    """A server on a private SQLite database with a 1 s lock timeout: (server, file, a user's id)."""
    scratch = tmp_path_factory.mktemp("fault")
    path = scratch / "fault.sqlite3"
    url = f"sqlite:///{path}?timeout=1"
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v0"], cwd=REPO, env=base_env(url), check=True)
    user_id = create_user(url, "dora")
    srv = ServerProcess(env=base_env(url), log_path=scratch / "server.log").start()
    yield srv, path, user_id
    srv.stop()


def exclusive_lock(path: Path) -> sqlite3.Connection:
    """Hold the database's write lock from this (another) process until released."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


async def test_database_locked_at_connect_closes_1013_try_again_later(fault_server) -> None:
    """Issue 14 / Section 11: a session row that cannot be written (database locked) is not an
    authentication answer. On main it closed 4401 invalid_token (clients stop for good); now it
    closes 1013 try_again_later, the log says what failed, and once the lock goes the same
    token connects."""
    srv, path, user = fault_server
    token = mint_token(user, expires_in=600)
    lock = exclusive_lock(path)
    try:
        ws = await connect(srv, token)
        code, reason, frames = await expect_close(ws)
    finally:
        lock.rollback()
        lock.close()
    assert (code, reason, frames) == (1013, "try_again_later", [])
    assert "session could not be opened: database unavailable" in srv.log_text()
    assert "database is locked" in srv.log_text()
    again = await connect(srv, token)
    assert (await recv_json(again))["event"] == "session.welcome"
    await again.close()
    no_traceback(srv)


async def test_python_client_reconnects_after_try_again_later(fault_server) -> None:
    """Section 10 / issue 14: the Python client treats 1013 try_again_later as reconnect with
    backoff: it keeps trying while the database is locked and opens once it is free."""
    srv, path, user = fault_server
    lock = exclusive_lock(path)
    client = RealtimeClient(srv.ws_url, token=mint_token(user, expires_in=600), backoff_initial=0.05, backoff_max=0.2)
    connecting = asyncio.create_task(client.connect())
    try:
        deadline = time.monotonic() + scaled(15)
        while not any(c.code == 1013 and c.reason == "try_again_later" for c in client.recent_closes):
            assert time.monotonic() < deadline, list(client.recent_closes)
            assert not connecting.done(), connecting
            await asyncio.sleep(0.05)
        assert client.state in ("connecting", "reconnecting")
    finally:
        lock.rollback()
        lock.close()
    await asyncio.wait_for(connecting, scaled(15))
    assert client.state == "open"
    assert await client.call("echo", {"back": True}) == {"back": True}
    await client.close()
    no_traceback(srv)
