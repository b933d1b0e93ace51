"""``manage.py serve --workers N``: one socket, N worker processes, one supervisor (issue 7).

Real processes on a real socket, with a real Redis between the workers and the e2e database.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from tests.conftest import scaled
from tests.e2e.conftest import E2EDatabase
from tests.e2e.helpers import (
    PYTHON,
    REPO,
    ServerProcess,
    base_env,
    connect,
    db_query,
    expect_close,
    obtain_tokens,
    recv_json,
)
from tests.e2e.redis_server import RedisServer, free_port

WORKERS = ("--workers", "2")


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(port=free_port(), workdir=tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()


def _start(e2e_db: E2EDatabase, redis: RedisServer, log_dir: Path, **settings: str) -> ServerProcess:
    env = base_env(e2e_db.url, REDIS_URL=redis.url, **settings)
    log = log_dir / f"workers-{uuid.uuid4().hex[:8]}.log"
    return ServerProcess(env=env, log_path=log, extra_args=WORKERS).start()


@pytest.fixture(scope="module")
def workers(
    e2e_db: E2EDatabase, redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One ``--workers 2`` server shared by the tests that leave it running (a start costs seconds)."""
    srv = _start(e2e_db, redis, tmp_path_factory.mktemp("workers"), REALTIME_RATE_LIMIT="0")
    yield srv
    srv.stop()


async def _by_worker(srv: ServerProcess, token: str, ids: set[str]) -> dict[str, list[tuple[ClientConnection, str]]]:
    """Open connections in concurrent batches until every id in ``ids`` has welcomed one.

    Returns the connections, each with its session id, grouped by the welcome's server."""
    found: dict[str, list[tuple[ClientConnection, str]]] = {}
    for _ in range(10):
        batch = await asyncio.gather(*(connect(srv, token) for _ in range(10)))
        for ws in batch:
            welcome = await recv_json(ws)
            found.setdefault(welcome["data"]["server"], []).append((ws, welcome["data"]["session_id"]))
        if set(found) >= ids:
            assert set(found) == ids, found.keys()
            return found
    raise AssertionError(f"only {sorted(found)} answered, expected {sorted(ids)}")


async def _reply(ws: ClientConnection, frame: dict[str, Any]) -> dict[str, Any]:
    """The ack or error answering ``frame``; pushes read meanwhile (broker state) are skipped."""
    await ws.send(orjson.dumps(frame).decode())
    while True:
        reply = await recv_json(ws, timeout=10)
        if reply["event"] in ("ack", "error") and reply.get("ref") == frame["id"]:
            return reply


async def _next(ws: ClientConnection, event: str) -> dict[str, Any]:
    while True:
        frame = await recv_json(ws, timeout=10)
        if frame["event"] == event:
            return frame


def _registry(e2e_db: E2EDatabase, prefix: str) -> dict[str, tuple[int, bool]]:
    rows = db_query(
        e2e_db.url,
        "SELECT server_id, pid, stopped_at IS NULL FROM realtime_serverinstance WHERE server_id LIKE %s",
        (prefix + "/%",),
    )
    return {str(server): (int(pid), bool(running)) for server, pid, running in rows}


def _session(e2e_db: E2EDatabase, session_id: str) -> tuple[Any, ...]:
    key = session_id.replace("-", "") if e2e_db.url.startswith("sqlite") else session_id
    rows = db_query(
        e2e_db.url,
        "SELECT close_code, close_reason, disconnected_at IS NOT NULL FROM realtime_connectionsession WHERE id = %s",
        (key,),
    )
    return rows[0]


async def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + scaled(timeout)
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


def _open_connections_metric(srv: ServerProcess) -> float:
    with urllib.request.urlopen(f"{srv.http_url}/metrics", timeout=scaled(10)) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    line = next(line for line in text.splitlines() if line.startswith("realtime_open_connections "))
    return float(line.split()[1])


async def test_two_workers_share_one_port_and_streams_through_redis(
    workers: ServerProcess, e2e_db: E2EDatabase
) -> None:
    """Scale: --workers 2 -> both workers answer on the one port, each under its own server id
    (welcome and registry), a subscriber on one worker gets what a client on the other
    publishes, and /metrics from either counts both workers' connections."""
    srv = workers
    base = f"{socket.gethostname()}:{srv.port}"
    ids = {f"{base}/1", f"{base}/2"}
    groups = await _by_worker(srv, obtain_tokens(srv, "alice")["access"], ids)
    registry = _registry(e2e_db, base)
    assert set(registry) == ids
    assert all(running for _, running in registry.values())
    assert len({pid for pid, _ in registry.values()}) == 2

    (on_1, _), (on_2, _) = groups[f"{base}/1"][0], groups[f"{base}/2"][0]
    stream = f"room:w{uuid.uuid4().hex[:10]}"
    for subscriber, publisher, text in ((on_1, on_2, "from two"), (on_2, on_1, "from one")):
        ack = await _reply(subscriber, {"event": "stream.subscribe", "id": "s", "data": {"stream": stream}})
        assert ack["event"] == "ack", ack
        sent = await _reply(
            publisher, {"event": "message.send", "id": uuid.uuid4().hex, "data": {"stream": stream, "text": text}}
        )
        assert sent["event"] == "ack", sent
        pushed = await _next(subscriber, "message.new")
        assert (pushed["event"], pushed["offset"], pushed["data"]["text"]) == (
            "message.new",
            sent["data"]["offset"],
            text,
        )
        await _reply(subscriber, {"event": "stream.unsubscribe", "id": "u", "data": {"stream": stream}})

    opened = sum(len(group) for group in groups.values())
    await _eventually(lambda: _open_connections_metric(srv) == opened)


async def test_sigterm_closes_every_worker_with_1012_and_exits_0(
    e2e_db: E2EDatabase, redis: RedisServer, tmp_path: Path
) -> None:
    """Graceful restart -> SIGTERM to the supervisor closes every connection on every worker with
    1012 service_restart, the workers deregister, the supervisor exits 0; an explicit
    REALTIME_SERVER_ID gets /1 and /2 appended, and `listening on` was printed exactly once."""
    base = f"wk-{uuid.uuid4().hex[:8]}"
    srv = _start(e2e_db, redis, tmp_path, REALTIME_SERVER_ID=base)
    try:
        groups = await _by_worker(srv, obtain_tokens(srv, "bob")["access"], {f"{base}/1", f"{base}/2"})
        clients = [client for group in groups.values() for client in group]
        assert srv.proc is not None
        assert srv.proc.stdout is not None

        srv.proc.send_signal(signal.SIGTERM)
        closes = await asyncio.gather(*(expect_close(ws) for ws, _ in clients))
        assert {(code, reason) for code, reason, _ in closes} == {(1012, "service_restart")}
        assert await asyncio.to_thread(srv.proc.wait, scaled(30)) == 0

        stdout = srv.stdout_lines + srv.proc.stdout.read().decode().splitlines(keepends=True)
        assert sum(line.startswith("listening on ") for line in stdout) == 1
        assert sum(line.startswith("listening on ") for line in srv.log_text().splitlines()) == 1
        registry = _registry(e2e_db, base)
        assert set(registry) == set(groups)
        assert not any(running for _, running in registry.values())
        assert _session(e2e_db, clients[0][1]) == (1012, "service_restart", True)
    finally:
        srv.stop()


def test_workers_without_redis_are_refused(e2e_db: E2EDatabase) -> None:
    """Configuration -> --workers 2 without REDIS_URL stops at start, non-zero, saying why."""
    result = subprocess.run(
        [PYTHON, "manage.py", "serve", "--port", "0", *WORKERS],
        cwd=REPO,
        env=base_env(e2e_db.url),
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert result.returncode != 0
    assert "--workers 2 needs REDIS_URL" in result.stderr
    assert "listening on" not in result.stdout + result.stderr


async def test_a_killed_worker_is_replaced(workers: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Crash recovery -> SIGKILL of one worker: the supervisor starts a replacement under the same
    id, which closes the sessions the dead one left open (1006 server_lost), and new
    connections reach both workers again."""
    srv = workers
    base = f"{socket.gethostname()}:{srv.port}"
    victim = f"{base}/1"
    token = obtain_tokens(srv, "alice")["access"]
    groups = await _by_worker(srv, token, {victim, f"{base}/2"})
    old_pid = _registry(e2e_db, base)[victim][0]

    os.kill(old_pid, signal.SIGKILL)
    code, _, _ = await expect_close(groups[victim][0][0])
    assert code == 1006
    await _eventually(lambda: _registry(e2e_db, base)[victim][0] != old_pid, timeout=20)
    assert srv.proc is not None
    assert srv.proc.poll() is None
    assert "worker exited unexpectedly; restarting it" in srv.log_text()
    await _eventually(lambda: _session(e2e_db, groups[victim][0][1]) == (1006, "server_lost", True))

    again = await _by_worker(srv, token, {victim, f"{base}/2"})
    for group in again.values():
        ws = group[0][0]
        assert (await _reply(ws, {"event": "echo", "id": "e", "data": {"n": 1}}))["data"] == {"n": 1}
