"""Operator tools against real servers and the real database: admin action, stats, trace (issue 8)."""

from __future__ import annotations

import http.cookiejar
import re
import urllib.parse
import urllib.request

from tests.e2e.conftest import E2EDatabase
from tests.e2e.helpers import (
    PASSWORD,
    ServerProcess,
    call,
    connect,
    expect_close,
    manage,
    obtain_tokens,
    recv_json,
)


class AdminBrowser:
    """Django admin over real HTTP, with its session cookie and CSRF token."""

    def __init__(self, server: ServerProcess) -> None:
        self.base = server.http_url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def _csrf(self, path: str) -> str:
        page = self.opener.open(self.base + path, timeout=10).read().decode()
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert match, page[:500]
        return match.group(1)

    def post(self, path: str, fields: list[tuple[str, str]]) -> str:
        token = self._csrf(path)
        body = urllib.parse.urlencode([("csrfmiddlewaretoken", token), *fields]).encode()
        request = urllib.request.Request(self.base + path, data=body, headers={"Referer": self.base + path})  # noqa: S310
        return str(self.opener.open(request, timeout=10).read().decode())

    def login(self, username: str) -> None:
        page = self.post("/admin/login/?next=/admin/", [("username", username), ("password", PASSWORD)])
        assert "Log out" in page or "logout" in page, page[:500]


async def test_admin_closes_selected_sessions(server: ServerProcess) -> None:
    """Security: Unauthorized action (operator side) -> the admin's "close selected sessions"
    action closes those live connections (4403 kicked) and leaves the others open."""
    token = obtain_tokens(server, "bob")["access"]
    target, other = await connect(server, token), await connect(server, token)
    target_id = (await recv_json(target))["data"]["session_id"]
    await recv_json(other)
    browser = AdminBrowser(server)
    browser.login("admin")
    page = browser.post(
        "/admin/realtime/connectionsession/",
        [("action", "close_sessions"), ("_selected_action", target_id), ("index", "0")],
    )
    assert "Asked 1 open session(s) to close." in page
    code, reason, _ = await expect_close(target)
    assert (code, reason) == (4403, "kicked")
    assert (await call(other, {"event": "ping", "id": "ok"}))["ref"] == "ok"


async def test_realtime_stats_and_trace_connection(server_factory, e2e_db: E2EDatabase) -> None:
    """Risks: Debugging difficulty -> realtime_stats shows per-server connections and busiest streams;
    trace_connection shows a session's lifecycle, its published events and its log lines."""
    srv = server_factory(REALTIME_SERVER_HEARTBEAT_INTERVAL="0.3")
    ws = await connect(srv, obtain_tokens(srv, "alice")["access"])
    session_id = (await recv_json(ws))["data"]["session_id"]
    stream = f"room:trace{session_id[:8]}"
    ack = await call(ws, {"event": "message.send", "id": "traced-1", "data": {"stream": stream, "text": "hello"}})
    assert ack["event"] == "ack"
    await call(ws, {"event": "nope.nope", "id": "bad"})
    await ws.close()

    stats = manage(e2e_db.url, "realtime_stats", "--top", "100000")  # other tests publish to many rooms
    assert stats.returncode == 0, stats.stderr
    assert f":{srv.port}\talive" in stats.stdout
    assert f"  {stream}\t1" in stats.stdout
    watched = manage(e2e_db.url, "realtime_stats", "--top", "100000", "--watch", "0.2", "--count", "3")
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout.count("(every 0.2 s)") == 3  # three refreshed views, not redrawn off a terminal
    assert watched.stdout.count(f"  {stream}\t1") == 3

    srv.stop()
    trace = manage(e2e_db.url, "trace_connection", session_id, "--log", str(srv.log_path))
    assert trace.returncode == 0, trace.stderr
    assert "user        alice" in trace.stdout
    assert "code 1000" in trace.stdout
    assert f"{stream}#1  message.new  id=traced-1" in trace.stdout
    assert '"code":"unknown_event"' in trace.stdout
    assert '"event":"disconnect"' in trace.stdout
    missing = manage(e2e_db.url, "trace_connection", "not-a-uuid")
    assert missing.returncode != 0
    assert "is not a session id" in missing.stderr
