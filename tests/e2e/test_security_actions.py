"""Staff-only actions and hostile text against real server processes (PROTOCOL.md sections 4 and 5):
admin.announce / admin.kick permissions and effects, sanitizing, SQL-looking text stored verbatim."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from tests.e2e.conftest import E2EDatabase, ServerFactory
from tests.e2e.helpers import ServerProcess, call, connect, db_query, expect_close, mint_token, recv_json


def _room() -> str:
    return f"room:t{uuid.uuid4().hex[:12]}"


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


async def _login(server: ServerProcess, e2e_db: E2EDatabase, username: str) -> ClientConnection:
    ws = await connect(server, mint_token(e2e_db.user_ids[username], expires_in=600))
    welcome = await recv_json(ws)
    assert welcome["event"] == "session.welcome", welcome
    return ws


async def _ack(ws: ClientConnection, event: str, data: dict[str, Any]) -> dict[str, Any]:
    ref = _uid(event.replace(".", "-"))
    reply = await call(ws, {"event": event, "id": ref, "data": data})
    assert (reply["event"], reply["ref"]) == ("ack", ref), reply
    ack: dict[str, Any] = reply["data"]
    return ack


# Security: Unauthorized action -------------------------------------------------------------


async def test_regular_user_cannot_announce(server_factory: ServerFactory, e2e_db: E2EDatabase) -> None:
    """Security: Unauthorized action -> admin.announce from a regular user is forbidden and delivers nothing;
    the connection stays open."""
    srv = server_factory()
    alice = await _login(srv, e2e_db, "alice")
    bob = await _login(srv, e2e_db, "bob")
    for data in ({"text": "fake announcement"}, {}):
        ref = _uid("ann")
        reply = await call(alice, {"event": "admin.announce", "id": ref, "data": data})
        assert (reply["event"], reply["ref"], reply["data"]["code"]) == ("error", ref, "forbidden"), reply
    # Nothing was announced: the first frame bob and alice receive is the staff announcement sent next.
    admin = await _login(srv, e2e_db, "admin")
    assert await _ack(admin, "admin.announce", {"text": "real announcement"}) == {"delivered_to": 3}
    for ws in (bob, alice, admin):
        frame = await recv_json(ws)
        assert (frame["event"], frame["data"]["text"]) == ("system.announcement", "real announcement"), frame
    assert (await call(alice, {"event": "ping", "id": "open"}))["ref"] == "open"


async def test_regular_user_cannot_kick(server_factory: ServerFactory, e2e_db: E2EDatabase) -> None:
    """Security: Unauthorized action -> admin.kick from a regular user is forbidden and kicks nobody."""
    srv = server_factory()
    alice = await _login(srv, e2e_db, "alice")
    bob = await _login(srv, e2e_db, "bob")
    admin = await _login(srv, e2e_db, "admin")
    for target in ("bob", "admin", "alice"):
        ref = _uid("kick")
        reply = await call(alice, {"event": "admin.kick", "id": ref, "data": {"username": target, "reason": "x"}})
        assert (reply["event"], reply["ref"], reply["data"]["code"]) == ("error", ref, "forbidden"), reply
    for ws, name in ((bob, "bob"), (admin, "admin"), (alice, "alice")):
        assert (await call(ws, {"event": "echo", "id": name, "data": {}}))["ref"] == name
    # Everybody is still connected: a staff announcement reaches all three sessions.
    assert await _ack(admin, "admin.announce", {"text": "still here?"}) == {"delivered_to": 3}
    for ws in (alice, bob, admin):
        assert (await recv_json(ws))["event"] == "system.announcement"


async def test_staff_announcement_reaches_every_session(server_factory: ServerFactory, e2e_db: E2EDatabase) -> None:
    """Security: Unauthorized action -> a staff admin.announce reaches every open session, the sender's included,
    as system.announcement, and delivered_to counts them (sanitized like any text)."""
    srv = server_factory()
    sessions = [await _login(srv, e2e_db, name) for name in ("alice", "alice", "bob", "bob", "bob")]
    admin = await _login(srv, e2e_db, "admin")
    other_admin = await _login(srv, e2e_db, "admin")
    await _ack(sessions[0], "stream.subscribe", {"stream": _room()})  # subscriptions play no part
    text = "Maintenance at <b>noon</b><script>alert(1)</script>"
    assert await _ack(admin, "admin.announce", {"text": text}) == {"delivered_to": 7}
    for ws in [*sessions, admin, other_admin]:
        frame = await recv_json(ws)
        assert frame["event"] == "system.announcement", frame
        assert "ref" not in frame
        assert frame["data"]["text"] == "Maintenance at noon"
    # A session that closed is no longer counted.
    await sessions[0].close()
    await _ack(sessions[1], "ping", {})  # a round trip: the close was processed before the next announce
    for _ in range(50):
        reply = await _ack(admin, "admin.announce", {"text": "again"})
        for ws in [*sessions[1:], admin, other_admin]:
            assert (await recv_json(ws))["data"]["text"] == "again"
        if reply["delivered_to"] == 6:
            break
    assert reply == {"delivered_to": 6}


async def test_staff_kick_closes_that_users_sessions(server_factory: ServerFactory, e2e_db: E2EDatabase) -> None:
    """Security: Unauthorized action -> a staff admin.kick closes every session of that user with 4403 kicked,
    `closed` counts them, others stay; the user may connect again (a kick is not a ban)."""
    srv = server_factory()
    bobs = [await _login(srv, e2e_db, "bob") for _ in range(3)]
    alice = await _login(srv, e2e_db, "alice")
    admin = await _login(srv, e2e_db, "admin")
    await _ack(bobs[0], "stream.subscribe", {"stream": _room()})

    assert await _ack(admin, "admin.kick", {"username": "bob", "reason": "spam"}) == {"closed": 3}
    for ws in bobs:
        code, reason, frames = await expect_close(ws)
        assert (code, reason, frames) == (4403, "kicked", [])
    assert (await call(alice, {"event": "ping", "id": "a"}))["ref"] == "a"
    assert (await call(admin, {"event": "ping", "id": "b"}))["ref"] == "b"

    # Not a ban: bob connects again and is served; kicking a user with no session closes none.
    bob = await _login(srv, e2e_db, "bob")
    assert (await call(bob, {"event": "ping", "id": "back"}))["ref"] == "back"
    assert await _ack(admin, "admin.kick", {"username": "carol"}) == {"closed": 0}
    reply = await call(admin, {"event": "admin.kick", "data": {"username": f"ghost{uuid.uuid4().hex[:6]}"}})
    assert reply["data"]["code"] == "not_found"
    reply = await call(admin, {"event": "admin.kick", "data": {}})
    assert reply["data"]["code"] == "validation_error"
    assert set(reply["data"]["fields"]) == {"username"}


# Security: Injection attack ----------------------------------------------------------------

TAG = re.compile(r"<\s*/?\s*[a-zA-Z!?]")

SANITIZED = [
    ("<script>alert(1)</script>hello", "hello"),
    ('<img src=x onerror="alert(1)">picture', "picture"),
    ("<IMG SRC=x OnError=alert(1)>caps", "caps"),
    ('<a href="javascript:alert(1)">click me</a>', "click me"),
    ("<b>bold</b> and <i>italic</i>", "bold and italic"),
    ("<div><p>Hi <b>there</b></p></div>", "Hi there"),
    ('<svg onload="alert(1)"><text>x</text></svg>after svg', "after svg"),
    ("<style>body{display:none}</style>visible", "visible"),
    ("<iframe src=//evil.example></iframe>framed", "framed"),
    ("<!-- hidden -->shown", "shown"),
    ("a &amp; b <i>c</i>", "a & b c"),
]

PLAIN = ["Tom & Jerry", "2 < 3", "3 > 2", "1<2", "a &amp; b", "&lt;script&gt;", "plain 'quoted' \"text\""]

NESTED = [
    "<scr<script>ipt>alert(1)</script>",
    "<<script>script>alert(1)<</script>/script>ok",
    "<<b>script>alert(1)<</b>/script>ok",
    "&lt;script&gt;alert(1)&lt;/script&gt;<b>x</b>",
    "<img src=x onerror=alert(1)//<b>y</b>",
    '<a href="x" title="<script>alert(1)</script>">t</a>',
]


async def _roundtrip(ws: ClientConnection, room: str, text: str) -> tuple[str, str]:
    """Publish ``text`` to ``room`` (the sender is subscribed); return (pushed text, stored text)."""
    msg_id = _uid("inj")
    reply = await call(ws, {"event": "message.send", "id": msg_id, "data": {"stream": room, "text": text}})
    assert reply["event"] == "ack", (text, reply)
    pushed = await recv_json(ws)
    assert pushed["data"]["id"] == msg_id
    history = await _ack(ws, "stream.history", {"stream": room, "since": reply["data"]["offset"] - 1, "limit": 1})
    assert history["events"] == [pushed]
    return pushed["data"]["text"], history["events"][0]["data"]["text"]


async def test_markup_is_removed_and_visible_text_kept(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Security: Injection attack -> script tags, event handlers and other markup are removed, their visible
    text kept; the push and the stored history agree."""
    room = _room()
    ws = await _login(server, e2e_db, "alice")
    await _ack(ws, "stream.subscribe", {"stream": room})
    for text, expected in SANITIZED:
        pushed, stored = await _roundtrip(ws, room, text)
        assert (text, pushed, stored) == (text, expected, expected)


@pytest.mark.parametrize("text", PLAIN)
async def test_plain_text_is_kept_exactly(server: ServerProcess, e2e_db: E2EDatabase, text: str) -> None:
    """Security: Injection attack -> text without markup (`Tom & Jerry`, `2 < 3`) is kept exactly, not escaped."""
    room = _room()
    ws = await _login(server, e2e_db, "alice")
    await _ack(ws, "stream.subscribe", {"stream": room})
    assert await _roundtrip(ws, room, text) == (text, text)


async def test_nested_markup_tricks_leave_no_markup(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Security: Injection attack -> nested and entity-encoded tricks never come out as markup, in pushes,
    history, direct messages or announcements."""
    room = _room()
    ws = await _login(server, e2e_db, "alice")
    await _ack(ws, "stream.subscribe", {"stream": room})
    for text in NESTED:
        reply = await call(ws, {"event": "message.send", "data": {"stream": room, "text": text}})
        if reply["event"] == "error":  # nothing visible was left
            assert (reply["data"]["code"], set(reply["data"]["fields"])) == ("validation_error", {"text"}), reply
            continue
        pushed = (await recv_json(ws))["data"]["text"]
        assert not TAG.search(pushed), (text, pushed)
        assert "<script" not in pushed.lower(), (text, pushed)

    bob = await _login(server, e2e_db, "bob")
    await _ack(bob, "stream.subscribe", {"stream": f"user:{e2e_db.user_ids['bob']}"})
    await _ack(ws, "message.direct", {"to": "bob", "text": '<img src=x onerror="alert(1)">hi <b>bob</b>'})
    assert (await recv_json(bob))["data"]["text"] == "hi bob"


SQL_TEXTS = [
    "'; DROP TABLE realtime_event; --",
    "Robert'); DROP TABLE accounts_user;--",
    "1' OR '1'='1",
    '" OR ""="',
    "x'); DELETE FROM realtime_stream WHERE ('1'='1",
    "%s %s %(name)s ? ?",
    "\\'; SELECT pg_sleep(5); --",
]


async def test_sql_looking_text_is_stored_verbatim(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Security: Injection attack -> SQL-looking text is stored and delivered verbatim (parameterized queries),
    and the tables still work afterwards."""
    room = _room()
    ws = await _login(server, e2e_db, "alice")
    await _ack(ws, "stream.subscribe", {"stream": room})
    before = db_query(e2e_db.url, "SELECT COUNT(*) FROM realtime_event")[0][0]
    ids = []
    for text in SQL_TEXTS:
        msg_id = _uid("sql")
        ids.append(msg_id)
        reply = await call(ws, {"event": "message.send", "id": msg_id, "data": {"stream": room, "text": text}})
        assert reply["event"] == "ack", reply
        pushed = await recv_json(ws)
        assert pushed["data"]["text"] == text
    history = await _ack(ws, "stream.history", {"stream": room, "since": 0})
    assert [event["data"]["text"] for event in history["events"]] == SQL_TEXTS

    for msg_id, text in zip(ids, SQL_TEXTS, strict=True):
        rows = db_query(e2e_db.url, "SELECT data FROM realtime_event WHERE client_id = %s", (msg_id,))
        assert len(rows) == 1
        stored = rows[0][0] if isinstance(rows[0][0], dict) else json.loads(rows[0][0])
        assert stored["text"] == text
    assert db_query(e2e_db.url, "SELECT COUNT(*) FROM realtime_event")[0][0] >= before + len(SQL_TEXTS)
    assert db_query(e2e_db.url, "SELECT COUNT(*) FROM accounts_user WHERE username = %s", ("alice",)) == [(1,)]
    assert db_query(e2e_db.url, "SELECT COUNT(*) FROM realtime_stream WHERE name = %s", (room,)) == [(1,)]

    # SQL-looking names and ids are data too: an unknown user is not_found, a quote in a room name is refused.
    reply = await call(ws, {"event": "message.direct", "data": {"to": "bob' OR '1'='1", "text": "x"}})
    assert reply["data"]["code"] == "not_found"
    reply = await call(ws, {"event": "message.send", "data": {"stream": "room:x';--", "text": "x"}})
    assert set(reply["data"]["fields"]) == {"stream"}
    # The service still works: new publishes get the next offset.
    reply = await call(ws, {"event": "message.send", "data": {"stream": room, "text": "still fine"}})
    assert reply["data"]["offset"] == len(SQL_TEXTS) + 1
