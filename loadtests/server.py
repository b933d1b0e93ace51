"""The one launcher of server processes, for the load tests and the end-to-end tests alike.

:class:`Server` starts ``manage.py serve`` (or another command that prints the same
``listening on HOST:PORT`` line: ``loadtests.traced_serve``, ``loadtests.raw_echo_server``),
waits for that line (``port`` 0 takes any free port and reads it back), appends stderr to a
log file, and stops, kills or restarts the process. The load tests pin it to ``SERVER_CPU``;
the e2e tests use it as ``tests.e2e.helpers.ServerProcess``, with the suite's slow-machine
factor on every wait. Both build the environment with :func:`clean_env` and migrate with
:func:`migrate`.

``prepare_database`` migrates a database (a temporary SQLite file by default) and creates
the bench user once per invocation; each benchmark run then gets a fresh server process so
that memory figures start from a clean process.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from typing import IO, Literal, Self

REPO = Path(__file__).resolve().parents[1]
# The checkout whose server is started: this one, or (``BENCH_SERVER_REPO``) another, e.g. a
# worktree of the previous commit, so a change and its baseline run side by side from one harness.
SERVER_REPO = Path(os.environ.get("BENCH_SERVER_REPO") or REPO).resolve()
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
SERVE = (PYTHON, "manage.py", "serve")
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


def _pinned(argv: list[str], cpu: int) -> list[str]:
    """``taskset -c CPU ARGV`` when the machine has at least two cores and taskset exists."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu), *argv]
    return argv


def clean_env(database_url: str, secret_key: str, **settings: str) -> dict[str, str]:
    """This process's environment without its REALTIME_*, JWT_* and REDIS_URL, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REALTIME_", "JWT_", "REDIS_URL"))}
    env.update(
        DATABASE_URL=database_url,
        DJANGO_SECRET_KEY=secret_key,
        DJANGO_SETTINGS_MODULE="project.settings",
        PYTHONUNBUFFERED="1",
    )
    env.update(settings)
    return env


def server_env(database_url: str, overrides: dict[str, str]) -> dict[str, str]:
    """A benchmark server's environment: ``overrides`` over the bench defaults."""
    bench = {
        # Throughput benchmarks must not be throttled; the rest keeps sessions alive for long runs.
        "REALTIME_RATE_LIMIT": "0",
        "REALTIME_IDLE_TIMEOUT": "3600",
        # Up to 10,000 connections of the one benchmark user (the default limit is 100).
        "REALTIME_MAX_CONNECTIONS_PER_USER": "1000000",
        "JWT_ACCESS_TTL": "86400",
    }
    return clean_env(database_url, SECRET_KEY, **{**bench, **overrides})


def migrate(env: dict[str, str]) -> None:
    """``manage.py migrate`` against the database of ``env``."""
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v0"], cwd=SERVER_REPO, env=env, check=True)


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
    migrate(env)
    code = (
        "from django.contrib.auth import get_user_model\n"
        f"User = get_user_model()\nUser.objects.filter(username={USERNAME!r}).exists() or "
        f"User.objects.create_user({USERNAME!r}, password={PASSWORD!r})"
    )
    subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", code], cwd=SERVER_REPO, env=env, check=True, capture_output=True
    )
    return Database(database_url, tmpdir)


@dataclass
class Server:
    """One server process: ``command --host HOST --port PORT *extra_args``.

    ``start`` waits for the ``listening on`` line; ``pid`` is the server itself (taskset execs
    it); ``restarted`` is a new process with the same settings on the same port and log.
    """

    env: dict[str, str]
    log_path: Path
    host: str = "127.0.0.1"
    port: int = 0
    extra_args: tuple[str, ...] = ()  # more options, e.g. ("--workers", "2")
    command: tuple[str, ...] = SERVE
    # An int pins the server to that core; "every" gives it every core back (the load generator
    # pinned itself, and ``serve --workers N`` needs them); both raise its open-file limit.
    # None: it inherits this process's affinity and limits.
    cpu: int | Literal["every"] | None = None
    timeout_factor: float = 1.0  # every wait is multiplied by this (slow or loaded machines)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    stdout_lines: list[str] = field(default_factory=list, init=False)
    log_file: IO[bytes] | None = field(default=None, init=False)

    @property
    def argv(self) -> list[str]:
        return [*self.command, "--host", self.host, "--port", str(self.port), *self.extra_args]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws/"

    def start(self, timeout: float = 60.0) -> Self:
        """Start and wait for ``listening on``; with ``port`` 0 the port is read back from that line."""
        argv = self.argv
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            _pinned(argv, self.cpu) if isinstance(self.cpu, int) else argv,
            cwd=SERVER_REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=self.log_file,
            preexec_fn=None if self.cpu is None else _unpinned_child if self.cpu == "every" else _raise_nofile_in_child,
        )
        assert self.proc.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout * self.timeout_factor
        while time.monotonic() < deadline:
            if not selector.select(timeout=0.2):
                if self.proc.poll() is not None:
                    break
                continue
            line = self.proc.stdout.readline().decode()
            if not line:
                break
            self.stdout_lines.append(line)
            if line.startswith("listening on "):
                self.port = int(line.rsplit(":", 1)[1])
                return self
        self.stop()
        raise RuntimeError(f"server did not start: {' '.join(argv)}\n{self.log_text()[-5000:]}")

    def restarted(self) -> Self:
        """A new process on the same port with the same environment (database), options and log."""
        return dataclasses.replace(self).start()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Signal the process (SIGTERM: a graceful stop), wait, kill it if it does not exit; its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout * self.timeout_factor)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.log_file is not None:
            self.log_file.close()
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def realtime_server(
    database: Database, log_dir: str, overrides: dict[str, str], tracemalloc_frames: int = 0, workers: int = 1
) -> Server:
    """``manage.py serve``; with ``tracemalloc_frames`` the same command under ``loadtests.traced_serve``.

    ``workers`` > 1 adds ``--workers N`` (``overrides`` must then hold ``REDIS_URL``) and
    leaves the server unpinned."""
    log_path = Path(log_dir) / "server.log"
    extra = ("--workers", str(workers)) if workers > 1 else ()
    if tracemalloc_frames:
        traced = tempfile.mkdtemp(prefix="tracemalloc-", dir=log_dir)
        overrides = {**overrides, "BENCH_TRACEMALLOC_DIR": traced, "BENCH_TRACEMALLOC_FRAMES": str(tracemalloc_frames)}
        return Server(
            server_env(database.url, overrides),
            log_path,
            extra_args=extra,
            command=(PYTHON, "-m", "loadtests.traced_serve"),
            cpu=SERVER_CPU,
        )
    return Server(
        server_env(database.url, overrides), log_path, extra_args=extra, cpu=SERVER_CPU if workers == 1 else "every"
    )


def raw_server(log_dir: str) -> Server:
    return Server(
        {**os.environ, "PYTHONUNBUFFERED": "1"},
        Path(log_dir) / "raw_server.log",
        extra_args=("--seconds", "3600"),
        command=(PYTHON, "-m", "loadtests.raw_echo_server"),
        cpu=SERVER_CPU,
    )


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
