"""Connection lifetime: clean close, idle timeout, restart, and what the logs hold (issue 2)."""

from __future__ import annotations

import asyncio
import signal

from tests.e2e.conftest import E2EDatabase
from tests.e2e.helpers import ServerProcess, call, connect, db_query, expect_close, obtain_tokens, recv_json
from tests.waiting import wait_until


def _session_row(e2e_db: E2EDatabase, session_id: str) -> list[tuple[object, ...]]:
    key = session_id.replace("-", "") if e2e_db.url.startswith("sqlite") else session_id
    return db_query(
        e2e_db.url,
        "SELECT close_code, close_reason, disconnected_at IS NOT NULL, messages_in, messages_out"
        " FROM realtime_connectionsession WHERE id = %s",
        (key,),
    )


async def _wait_for_row(e2e_db: E2EDatabase, session_id: str, expected: list[tuple[object, ...]]) -> None:
    for _ in range(100):
        if _session_row(e2e_db, session_id) == expected:
            return
        await asyncio.sleep(0.05)
    assert _session_row(e2e_db, session_id) == expected


async def test_clean_close_records_the_session(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Connection: Disconnect -> close 1000, the server marks the session closed with counts."""
    ws = await connect(server, obtain_tokens(server, "alice")["access"])
    session_id = (await recv_json(ws))["data"]["session_id"]
    await call(ws, {"event": "ping"})
    await ws.close(1000)
    await _wait_for_row(e2e_db, session_id, [(1000, "", True, 1, 2)])


async def test_idle_connection_is_closed_4408(server_factory) -> None:
    """Connection: Idle timeout -> no client frame for REALTIME_IDLE_TIMEOUT closes with 4408 idle_timeout."""
    srv = server_factory(REALTIME_IDLE_TIMEOUT="1")
    ws = await connect(srv, obtain_tokens(srv, "alice")["access"])
    welcome = await recv_json(ws)
    assert welcome["data"]["idle_timeout"] == 1
    code, reason, frames = await expect_close(ws, timeout=5)
    assert (code, reason, frames) == (4408, "idle_timeout", [])


async def test_active_connection_is_not_idle(server_factory) -> None:
    """Connection: Idle timeout -> client messages reset the timer."""
    srv = server_factory(REALTIME_IDLE_TIMEOUT="1")
    ws = await connect(srv, obtain_tokens(srv, "alice")["access"])
    await recv_json(ws)
    for _ in range(6):
        await asyncio.sleep(0.4)  # time passing is the subject: silence shorter than the idle timeout
        assert (await call(ws, {"event": "ping"}))["event"] == "ack"
    await ws.close()


async def test_sigterm_closes_with_1012_service_restart(server_factory, e2e_db: E2EDatabase) -> None:
    """Graceful restart -> SIGTERM closes every connection with 1012 service_restart and exits 0."""
    srv = server_factory()
    ws = await connect(srv, obtain_tokens(srv, "alice")["access"])
    session_id = (await recv_json(ws))["data"]["session_id"]
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGTERM)
    code, reason, _ = await expect_close(ws)
    assert (code, reason) == (1012, "service_restart")
    assert await asyncio.to_thread(srv.proc.wait, 20) == 0
    assert _session_row(e2e_db, session_id)[0][:3] == (1012, "service_restart", True)


async def test_tokens_never_reach_the_log(server_factory) -> None:
    """Security: tokens never appear in any log line, from the query string or a header."""
    srv = server_factory(REALTIME_LOG_LEVEL="DEBUG")
    tokens = obtain_tokens(srv, "alice")
    ws = await connect(srv, tokens["access"])
    await recv_json(ws)
    await call(ws, {"event": "auth.refresh", "data": {"token": tokens["access"]}})
    await call(ws, {"event": "auth.refresh", "data": {"token": tokens["access"] + "x"}})
    await ws.close()
    ws = await connect(srv, None, additional_headers={"Authorization": f"Bearer {tokens['access']}"})
    await recv_json(ws)
    await ws.close()
    wait_until(lambda: srv.log_text().count('"event":"disconnect"') >= 2, message="both sessions logged their end")
    srv.stop()
    log = srv.log_text()
    assert '"event":"connect"' in log
    assert tokens["access"] not in log
    assert tokens["refresh"] not in log
    assert tokens["access"].split(".")[2] not in log
