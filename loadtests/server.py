"""Start the server under test: ``manage.py serve`` (or the raw echo server) pinned to CPU 0.

``prepare_database`` migrates a database (a temporary SQLite file by default) and creates
the bench user once per invocation; each run then gets a fresh server process so that
memory figures start from a clean process.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
SECRET_KEY = "loadtests-bench-secret-key-0123456789abcdef0123456789"  # noqa: S105 - throwaway servers only
USERNAME = "bench"
PASSWORD = "bench-password-not-a-secret"  # noqa: S105 - a throwaway user in a throwaway database
SERVER_CPU = 0
LOADGEN_CPU = 1


def _raise_nofile_in_child() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _unpinned_child() -> None:
    _raise_nofile_in_child()
    # The load generator pins itself to LOADGEN_CPU before it starts a server, and children
    # inherit affinity: give an unpinned server every core back.
    os.sched_setaffinity(0, range(os.cpu_count() or 1))


def _pinned(argv: list[str]) -> list[str]:
    """``taskset -c 0 ARGV`` when the machine has at least two cores and taskset exists."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(SERVER_CPU), *argv]
    return argv


def server_env(database_url: str, overrides: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REALTIME_", "JWT_", "REDIS_URL"))}
    env.update(
        DATABASE_URL=database_url,
        DJANGO_SECRET_KEY=SECRET_KEY,
        DJANGO_SETTINGS_MODULE="project.settings",
        PYTHONUNBUFFERED="1",
        # Throughput benchmarks must not be throttled; the rest keeps sessions alive for long runs.
        REALTIME_RATE_LIMIT="0",
        REALTIME_IDLE_TIMEOUT="3600",
        # Up to 10,000 connections of the one benchmark user (the default limit is 100).
        REALTIME_MAX_CONNECTIONS_PER_USER="1000000",
        JWT_ACCESS_TTL="86400",
    )
    env.update(overrides)
    return env


@dataclass
class Database:
    url: str
    tmpdir: str | None = None

    def cleanup(self) -> None:
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def prepare_database(database_url: str | None) -> Database:
    """Migrate and create the bench user (idempotent); a temp SQLite file when no URL is given."""
    tmpdir = None
    if database_url is None:
        tmpdir = tempfile.mkdtemp(prefix="realtime-bench-")
        database_url = f"sqlite:///{tmpdir}/bench.sqlite3"
    env = server_env(database_url, {})
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v0"], cwd=REPO, env=env, check=True)
    code = (
        "from django.contrib.auth import get_user_model\n"
        f"User = get_user_model()\nUser.objects.filter(username={USERNAME!r}).exists() or "
        f"User.objects.create_user({USERNAME!r}, password={PASSWORD!r})"
    )
    subprocess.run([PYTHON, "manage.py", "shell", "-c", code], cwd=REPO, env=env, check=True, capture_output=True)
    return Database(database_url, tmpdir)


@dataclass
class Server:
    """A server process started by ``start``; ``pid`` is the server itself (taskset execs it)."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    host: str = "127.0.0.1"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    stdout_lines: list[str] = field(default_factory=list)
    _log: IO[bytes] | None = None
    pin: bool = True  # to SERVER_CPU; not for ``serve --workers N``, whose workers need the cores

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws/"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> Server:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            _pinned(self.argv) if self.pin else self.argv,
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=self._log,
            preexec_fn=_raise_nofile_in_child if self.pin else _unpinned_child,
        )
        assert self.proc.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if not selector.select(timeout=0.2):
                continue
            line = self.proc.stdout.readline().decode()
            self.stdout_lines.append(line)
            if line.startswith("listening on "):
                self.port = int(line.rsplit(":", 1)[1])
                return self
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"server did not start: {' '.join(self.argv)}\n{tail}")

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log is not None:
            self._log.close()
        return self.proc.returncode


def realtime_server(
    database: Database, log_dir: str, overrides: dict[str, str], tracemalloc_frames: int = 0, workers: int = 1
) -> Server:
    """``manage.py serve``; with ``tracemalloc_frames`` the same command under ``loadtests.traced_serve``.

    ``workers`` > 1 adds ``--workers N`` (``overrides`` must then hold ``REDIS_URL``) and
    leaves the server unpinned."""
    args = ["--host", "127.0.0.1", "--port", "0"]
    if workers > 1:
        args += ["--workers", str(workers)]
    if tracemalloc_frames:
        traced = tempfile.mkdtemp(prefix="tracemalloc-", dir=log_dir)
        overrides = {**overrides, "BENCH_TRACEMALLOC_DIR": traced, "BENCH_TRACEMALLOC_FRAMES": str(tracemalloc_frames)}
        return Server(
            [PYTHON, "-m", "loadtests.traced_serve", *args],
            server_env(database.url, overrides),
            Path(log_dir) / "server.log",
        )
    return Server(
        [PYTHON, "manage.py", "serve", *args],
        server_env(database.url, overrides),
        Path(log_dir) / "server.log",
        pin=workers == 1,
    )


def raw_server(log_dir: str) -> Server:
    argv = [PYTHON, "-m", "loadtests.raw_echo_server", "--port", "0", "--seconds", "3600"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return Server(argv, env, Path(log_dir) / "raw_server.log")


def obtain_token(server: Server) -> str:
    body = json.dumps({"username": USERNAME, "password": PASSWORD}).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback URL built here
        f"{server.http_url}/api/auth/token/", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        token: str = json.loads(response.read())["access"]
    return token


@contextlib.contextmanager
def log_directory(keep: str | None) -> Iterator[str]:
    if keep:
        os.makedirs(keep, exist_ok=True)
        yield keep
        return
    path = tempfile.mkdtemp(prefix="realtime-bench-logs-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
