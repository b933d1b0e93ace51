"""The one launcher (``loadtests/server.py``) that the e2e tests and the load tests share (issue #20).

The e2e tests' ``ServerProcess`` is that launcher with the suite's timeout factor; the load
tests pin the same class to a core. Both uses are exercised on real processes here.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from loadtests.server import SERVER_CPU, Server, server_env
from tests.e2e.conftest import E2EDatabase
from tests.e2e.helpers import ServerProcess, base_env, http_json


def test_e2e_server_process_is_the_load_tests_launcher_and_restarts_on_its_port(
    e2e_db: E2EDatabase, tmp_path: Path
) -> None:
    """One launcher: port 0 read back from `listening on`, kill, restart on the same port and log."""
    assert issubclass(ServerProcess, Server)
    server = ServerProcess(env=base_env(e2e_db.url), log_path=tmp_path / "server.log").start()
    try:
        assert server.port > 0
        assert server.stdout_lines[-1] == f"listening on 127.0.0.1:{server.port}\n"
        assert http_json("GET", f"{server.http_url}/healthz")[0] == 200
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
        restarted = server.restarted()
    finally:
        server.stop()
    try:
        assert isinstance(restarted, ServerProcess)
        assert restarted.port == server.port
        assert restarted.pid != server.pid
        assert http_json("GET", f"{restarted.http_url}/healthz")[0] == 200
    finally:
        assert restarted.stop() == 0  # SIGTERM: a graceful stop
    assert restarted.log_text().count("listening on") == 2  # one log, appended to


@pytest.mark.skipif((os.cpu_count() or 1) < 2 or shutil.which("taskset") is None, reason="needs 2 cores and taskset")
def test_load_test_server_is_pinned_to_its_core_with_the_bench_settings(e2e_db: E2EDatabase, tmp_path: Path) -> None:
    """Load tests: the same launcher pins the server to SERVER_CPU (taskset execs it: pid is the server)."""
    server = Server(
        env=server_env(e2e_db.url, {"REALTIME_SEND_QUEUE": "4096"}), log_path=tmp_path / "bench.log", cpu=SERVER_CPU
    ).start()
    try:
        status = Path(f"/proc/{server.pid}/status").read_text()
        allowed = next(line for line in status.splitlines() if line.startswith("Cpus_allowed_list:"))
        assert allowed.split()[-1] == str(SERVER_CPU)
        assert server.env["REALTIME_RATE_LIMIT"] == "0"
        assert server.env["REALTIME_SEND_QUEUE"] == "4096"
        assert "manage.py" in Path(f"/proc/{server.pid}/cmdline").read_text()
    finally:
        server.stop()
