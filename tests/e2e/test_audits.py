"""Connection audits: sessions left open by a crashed server are found and closed (issue 4)."""

from __future__ import annotations

import asyncio
import signal
import subprocess

from tests.conftest import scaled
from tests.e2e.conftest import E2EDatabase
from tests.e2e.helpers import PYTHON, REPO, base_env, connect, db_query, obtain_tokens, recv_json

FAST_BEATS = {"REALTIME_SERVER_HEARTBEAT_INTERVAL": "0.3"}


def _audit(e2e_db: E2EDatabase, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "manage.py", "audit_connections", *args],
        cwd=REPO,
        env=base_env(e2e_db.url),
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )


async def test_sessions_of_a_killed_server_are_closed_by_the_audit(server_factory, e2e_db: E2EDatabase) -> None:
    """Risks: Connection leaks -> a server killed with SIGKILL leaves open session rows; the audit
    reports them (exit 1), marks them closed, and the next audit is clean (exit 0)."""
    srv = server_factory(**FAST_BEATS)
    ws = await connect(srv, obtain_tokens(srv, "alice")["access"])
    session_id = (await recv_json(ws))["data"]["session_id"]
    key = session_id.replace("-", "") if e2e_db.url.startswith("sqlite") else session_id
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    await ws.close()
    query = "SELECT disconnected_at IS NULL, close_reason FROM realtime_connectionsession WHERE id = %s"
    assert db_query(e2e_db.url, query, (key,)) == [(True, "")]

    await asyncio.sleep(scaled(1.2))  # more than three missed heartbeats
    report = _audit(e2e_db, "--dry-run")
    # A live server sharing the database may already have closed them (servers close a dead
    # peer's sessions within two of its heartbeat intervals: test_delivery_registry.py).
    if db_query(e2e_db.url, query, (key,)) == [(True, "")]:
        assert report.returncode == 1, report.stdout + report.stderr
        assert f":{srv.port}\tdead\t1 open" in report.stdout
        _audit(e2e_db)
    assert db_query(e2e_db.url, query, (key,)) == [(False, "server_lost")]
    assert _audit(e2e_db).returncode == 0


async def test_live_server_sessions_are_left_alone(server_factory, e2e_db: E2EDatabase) -> None:
    """Risks: Connection leaks -> the audit never closes sessions of a server that heartbeats."""
    srv = server_factory(**FAST_BEATS)
    ws = await connect(srv, obtain_tokens(srv, "bob")["access"])
    await recv_json(ws)
    await asyncio.sleep(scaled(1.2))
    report = _audit(e2e_db, "--dry-run")
    assert f":{srv.port}\talive\t1 open" in report.stdout
    await ws.close()
