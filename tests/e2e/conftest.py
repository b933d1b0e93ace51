"""Real ``manage.py serve`` processes against a real database (PostgreSQL when the test
command started one, else a temporary SQLite file), after daphne's ``DaphneProcess``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.helpers import PASSWORD, PYTHON, REPO, ServerProcess, base_env, migrated_database, open_clients
from tests.e2e.redis_server import RedisServer, free_port

SEED = f"""
import json
from accounts.models import User
ids = {{}}
for name, staff, active in [("alice", False, True), ("bob", False, True), ("carol", False, False),
                            ("admin", True, True)]:
    user = User.objects.create_user(
        username=name, password={PASSWORD!r}, is_staff=staff, is_superuser=staff, is_active=active
    )
    ids[name] = user.pk
print("USERS=" + json.dumps(ids))
"""


@dataclass(frozen=True)
class E2EDatabase:
    url: str
    user_ids: dict[str, int]


@pytest.fixture(scope="session")
def e2e_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EDatabase]:
    with migrated_database("e2e", tmp_path_factory.mktemp("db")) as url:
        out = subprocess.run(
            [PYTHON, "manage.py", "shell", "-c", SEED],
            cwd=REPO,
            env=base_env(url),
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        ids = json.loads(next(line for line in out.splitlines() if line.startswith("USERS="))[6:])
        yield E2EDatabase(url=url, user_ids=ids)


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture(scope="session")
def _session_servers(e2e_db: E2EDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def _start(e2e_db: E2EDatabase, log_dir: Path, settings: dict[str, str]) -> ServerProcess:
    log = log_dir / f"server-{uuid.uuid4().hex[:8]}.log"
    return ServerProcess(env=base_env(e2e_db.url, **settings), log_path=log).start()


@pytest.fixture(scope="session")
def server(
    e2e_db: E2EDatabase, _session_servers: list[ServerProcess], tmp_path_factory: pytest.TempPathFactory
) -> ServerProcess:
    """One server with the contract's default settings, shared by the session."""
    proc = _start(e2e_db, tmp_path_factory.mktemp("logs"), {})
    _session_servers.append(proc)
    return proc


@pytest.fixture
def server_factory(e2e_db: E2EDatabase, tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers with custom REALTIME_* settings; each is stopped after the test."""
    started: list[ServerProcess] = []

    def start(**settings: str) -> ServerProcess:
        proc = _start(e2e_db, tmp_path, settings)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis server for one test (started, killed after), for tests that restart it."""
    server = RedisServer(port=free_port(), workdir=tmp_path).start()
    yield server
    server.kill()


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while open_clients:
        ws = open_clients.pop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 5)
        # A close the server never answered (stopped or frozen by the test) was cancelled
        # above; drop the socket now, or the garbage collector warns in a later test.
        ws.transport.abort()
