"""Issue 13: no poison events, and a sanitizer that cannot pin the loop (PROTOCOL.md section 11).

Each test is an attack seen on ``main``:

- a ``resource.update`` (and an ``echo``) whose ``data`` nests 300 levels deep was committed,
  then could not be rendered: the publisher's follow-up died, the stream stopped;
- a lone surrogate stored through the REST API on SQLite made every later read of it fail;
- U+0000 in a message ``text`` failed on PostgreSQL (jsonb refuses it) and sent the whole
  group-commit batch of other users' publishes back to one transaction each;
- a poison row already in the log (written by an older server) broke replay (1011),
  ``stream.history`` and the live gap fill for good;
- 64 KB of nested markup cost the event loop hundreds of milliseconds per message;
- ``GET /api/resources/?limit=`` had no maximum.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from realtime.connection.sanitize import MAX_MARKUP_TAGS
from tests.conftest import scaled
from tests.e2e.conftest import SEED, E2EDatabase
from tests.e2e.helpers import (
    PYTHON,
    REPO,
    ServerProcess,
    base_env,
    call,
    connect,
    db_query,
    http_json,
    mint_token,
    recv_json,
)

DEPTH = 300


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class LogWindow:
    """The part of a server's log written since it was opened: the module's server is shared."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.start = len(server.log_text())

    def text(self) -> str:
        return self.server.log_text()[self.start :]

    def assert_no_traceback(self) -> None:
        text = self.text()
        assert "Traceback" not in text, text[-4000:]


@pytest.fixture(scope="module")
def poison_server(e2e_db: E2EDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("poison-logs") / "server.log"
    proc = ServerProcess(env=base_env(e2e_db.url), log_path=log).start()
    yield proc
    proc.stop()


async def _login(server: ServerProcess, user_id: int) -> ClientConnection:
    ws = await connect(server, mint_token(user_id, expires_in=600))
    welcome = await recv_json(ws)
    assert welcome["event"] == "session.welcome", welcome
    return ws


def _rest(server: ServerProcess, method: str, path: str, user_id: int, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {mint_token(user_id, expires_in=600)}"}
    status, _, payload = http_json(method, f"{server.http_url}{path}", body, headers)
    return status, payload


async def _next_push(ws: ClientConnection, stream: str, timeout: float = 10.0) -> dict[str, Any]:
    """The next frame of ``stream``, skipping anything else (acks of this client's own calls)."""
    async with asyncio.timeout(scaled(timeout)):
        while True:
            frame = await recv_json(ws, timeout)
            if frame.get("stream") == stream:
                return frame


# --- the 300-deep resource.update ---------------------------------------------------------------


async def test_resource_update_nested_300_deep_is_refused_and_the_stream_keeps_flowing(
    poison_server: ServerProcess, e2e_db: E2EDatabase
) -> None:
    """Schema validation / issue 13: 300 levels of nesting is validation_error naming the field;
    the resource is unchanged, the next update is delivered live, no traceback."""
    window = LogWindow(poison_server)
    alice, admin = e2e_db.user_ids["alice"], e2e_db.user_ids["admin"]
    status, created = _rest(poison_server, "POST", "/api/resources/", alice, {"data": {"n": 0}})
    assert status == 201, created
    rid = created["id"]
    watcher = await _login(poison_server, admin)
    ack = await call(watcher, {"event": "stream.subscribe", "data": {"stream": f"resource:{rid}"}})
    assert ack["event"] == "ack", ack

    attacker = await _login(poison_server, alice)
    frame = {"event": "resource.update", "id": "deep-1", "data": {"id": rid, "version": 1, "data": _nested(DEPTH)}}
    reply = await call(attacker, json.dumps(frame))  # orjson itself writes at most 255 levels
    assert (reply["event"], reply["ref"]) == ("error", "deep-1"), reply
    assert reply["data"]["code"] == "validation_error", reply
    [(field, reason)] = reply["data"]["fields"].items()
    assert field.startswith("data.a.a"), reply  # the path down to where the limit is crossed
    assert reason == "nested too deep"

    echo = await call(attacker, json.dumps({"event": "echo", "id": "deep-2", "data": _nested(DEPTH)}))
    assert (echo["event"], echo["data"]["code"]) == ("error", "validation_error"), echo

    ok = await call(
        attacker, {"event": "resource.update", "id": "ok-1", "data": {"id": rid, "version": 1, "data": {"n": 1}}}
    )
    assert (ok["event"], ok["data"]) == ("ack", {"id": rid, "version": 2}), ok
    push = await _next_push(watcher, f"resource:{rid}")
    assert (push["event"], push["offset"], push["data"]["data"]) == ("resource.updated", 1, {"n": 1})
    window.assert_no_traceback()


# --- U+0000 in a message text, in one batch with other users' publishes -------------------------


async def test_nul_in_message_text_is_refused_alone_while_concurrent_publishes_commit(
    poison_server: ServerProcess, e2e_db: E2EDatabase
) -> None:
    """Concurrent messages / issue 13 (PostgreSQL in CI): U+0000 in ``text`` (and in the publish
    ``id``, which is stored as the idempotency key) is refused with the field named, while other
    users' publishes sent at the same moment all succeed."""
    window = LogWindow(poison_server)
    room = f"room:{_uid('nul')}"
    users = [e2e_db.user_ids[name] for name in ("alice", "bob", "admin")]
    clients = [await _login(poison_server, users[i % 3]) for i in range(9)]
    attacker = await _login(poison_server, users[0])

    async def publish(ws: ClientConnection, ref: str, text: str) -> dict[str, Any]:
        return await call(ws, {"event": "message.send", "id": ref, "data": {"stream": room, "text": text}})

    replies = await asyncio.gather(
        publish(attacker, "nul-1", "before\x00after"),
        *(publish(ws, _uid("ok"), f"hello {i}") for i, ws in enumerate(clients)),
    )
    bad, good = replies[0], replies[1:]
    assert (bad["event"], bad["data"]["code"]) == ("error", "validation_error"), bad
    assert bad["data"]["fields"] == {"text": "contains U+0000"}, bad
    assert all(r["event"] == "ack" for r in good), good
    assert sorted(r["data"]["offset"] for r in good) == list(range(1, 10))

    bad_id = await publish(attacker, "nul\x00id", "fine text")
    assert (bad_id["event"], bad_id["data"]["code"]) == ("error", "invalid_envelope"), bad_id
    assert "U+0000" in bad_id["data"]["message"], bad_id
    rows = db_query(
        e2e_db.url,
        "SELECT count(*) FROM realtime_event e JOIN realtime_stream s ON s.id = e.stream_id WHERE s.name = %s",
        (room,),
    )
    assert rows == [(9,)]
    window.assert_no_traceback()


# --- a poison row already in the log ------------------------------------------------------------


def _insert_poison(url: str, stream: str, data_json: str) -> int:
    """Append an event the way an older server could have: no validation, straight into the log."""
    if url.startswith("sqlite:"):
        import sqlite3

        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            (stream_id, head) = conn.execute(
                "UPDATE realtime_stream SET head = head + 1 WHERE name = ? RETURNING id, head", (stream,)
            ).fetchone()
            conn.execute(
                'INSERT INTO realtime_event (stream_id, "offset", event, data, created_at)'
                " VALUES (?, ?, 'message.new', ?, datetime('now'))",
                (stream_id, head, data_json),
            )
            return int(head)
    import psycopg

    with psycopg.connect(url) as pg:
        row = pg.execute(
            "UPDATE realtime_stream SET head = head + 1 WHERE name = %s RETURNING id, head", (stream,)
        ).fetchone()
        assert row is not None
        stream_id, head = row
        pg.execute(
            'INSERT INTO realtime_event (stream_id, "offset", event, data, created_at)'
            " VALUES (%s, %s, 'message.new', %s::jsonb, now())",
            (stream_id, head, data_json),
        )
        return int(head)


async def test_poison_row_in_the_log_is_skipped_by_replay_history_and_gap_fill(
    poison_server: ServerProcess, e2e_db: E2EDatabase
) -> None:
    """Reconnect / issue 13: an unrenderable event already in the log (300 levels deep) shows up as
    a ``system.skipped`` push at its offset, in replay, ``stream.history`` and the live gap fill;
    subscribers get past it, nobody is closed 1011, and the server logs one ERROR naming it."""
    window = LogWindow(poison_server)
    room = f"room:{_uid('poison')}"
    alice = await _login(poison_server, e2e_db.user_ids["alice"])

    async def send(text: str) -> int:
        reply = await call(alice, {"event": "message.send", "id": _uid("m"), "data": {"stream": room, "text": text}})
        assert reply["event"] == "ack", reply
        return int(reply["data"]["offset"])

    assert await send("one") == 1
    live = await _login(poison_server, e2e_db.user_ids["bob"])
    ack = await call(live, {"event": "stream.subscribe", "data": {"stream": room}})
    assert ack["data"]["offset"] == 1, ack
    poison = json.dumps(_nested(DEPTH))
    assert _insert_poison(e2e_db.url, room, poison) == 2
    assert await send("three") == 3  # the hub sees 3 before 2: the gap fill reads 2 from the log

    skipped = await _next_push(live, room)
    assert (skipped["event"], skipped["offset"]) == ("system.skipped", 2), skipped
    three = await _next_push(live, room)
    assert (three["event"], three["offset"], three["data"]["text"]) == ("message.new", 3, "three")

    history = await call(alice, {"event": "stream.history", "data": {"stream": room, "since": 0}})
    assert history["event"] == "ack", history
    assert [(e["offset"], e["event"]) for e in history["data"]["events"]] == [
        (1, "message.new"),
        (2, "system.skipped"),
        (3, "message.new"),
    ]
    resumed = await _login(poison_server, e2e_db.user_ids["bob"])
    ack = await call(resumed, {"event": "stream.subscribe", "data": {"stream": room, "since": 0}})
    assert (ack["event"], ack["data"]["recovered"]) == ("ack", True), ack
    replayed = [await _next_push(resumed, room) for _ in range(3)]
    assert [(f["offset"], f["event"]) for f in replayed] == [
        (1, "message.new"),
        (2, "system.skipped"),
        (3, "message.new"),
    ]
    assert replayed[1]["data"] == {"reason": "unrenderable"}
    assert await send("four") == 4
    assert (await _next_push(resumed, room))["offset"] == 4
    assert (await _next_push(live, room))["offset"] == 4
    text = window.text()
    records = [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
    errors = [r for r in records if r.get("level") == "error" and r.get("stream") == room]
    assert errors, text[-3000:]
    assert all(r["offset"] == 2 for r in errors), errors
    window.assert_no_traceback()


# --- a lone surrogate through the REST API, on SQLite -------------------------------------------


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, int]]]:
    """A server on SQLite whatever the test command chose: the surrogate case is SQLite's."""
    scratch = tmp_path_factory.mktemp("poison-sqlite")
    url = f"sqlite:///{scratch / 'poison.sqlite3'}"
    env = base_env(url)
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v0"], cwd=REPO, env=env, check=True)
    out = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", SEED], cwd=REPO, env=env, check=True, capture_output=True, text=True
    ).stdout
    ids = json.loads(next(line for line in out.splitlines() if line.startswith("USERS="))[6:])
    proc = ServerProcess(env=env, log_path=Path(scratch / "server.log")).start()
    yield proc, ids
    proc.stop()


def test_lone_surrogate_through_rest_is_refused_on_sqlite(sqlite_server: tuple[ServerProcess, dict[str, int]]) -> None:
    """Injection attack / issue 13: ``"\\ud800"`` in a value or a key of a REST resource (JSON
    allows the escape; Python's json reads it) is a 400 naming the field, on create and update;
    nothing unreadable is stored and listing stays 200."""
    server, ids = sqlite_server
    window = LogWindow(server)
    alice = ids["alice"]
    status, body = _rest(server, "POST", "/api/resources/", alice, {"data": {"a": {"b": "x\ud800"}}})
    assert status == 400, body
    assert body == {"data": ["data.a.b: lone surrogate"]}, body
    status, body = _rest(server, "POST", "/api/resources/", alice, {"data": {"k\udc00": 1}})
    assert (status, body) == (400, {"data": ["data: lone surrogate in a key"]}), body
    status, created = _rest(server, "POST", "/api/resources/", alice, {"data": {"ok": True}})
    assert status == 201, created
    status, body = _rest(
        server, "PUT", f"/api/resources/{created['id']}/", alice, {"version": 1, "data": {"t": "\ud800"}}
    )
    assert (status, body) == (400, {"data": ["data.t: lone surrogate"]}), body
    status, body = _rest(server, "POST", "/api/resources/", alice, {"data": {"t": "a\x00b"}})
    assert (status, body) == (400, {"data": ["data.t: contains U+0000"]}), body
    status, body = _rest(server, "POST", "/api/resources/", alice, {"data": {"n": 10**30}})
    assert (status, body) == (400, {"data": ["data.n: number out of range"]}), body
    status, listing = _rest(server, "GET", "/api/resources/", alice)
    assert status == 200, listing
    assert [r["data"] for r in listing["results"]] == [{"ok": True}], listing
    window.assert_no_traceback()


def test_rest_deep_json_body_is_a_400_not_a_500(sqlite_server: tuple[ServerProcess, dict[str, int]]) -> None:
    """Invalid JSON / issue 13: a body nested deeper than Python's json reader recurses is a 400."""
    server, ids = sqlite_server
    window = LogWindow(server)
    body = '{"data": ' + "[" * 5000 + "]" * 5000 + "}"
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{server.http_url}/api/resources/", data=body.encode(), method="POST")  # noqa: S310
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {mint_token(ids['alice'], expires_in=600)}")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=scaled(10))  # noqa: S310
    with caught.value as response:  # closes its socket
        assert response.code == 400
        assert b"nested too deep" in response.read()
    window.assert_no_traceback()


# --- REST page size ---------------------------------------------------------------------------


def test_rest_resource_list_page_size_has_a_maximum(sqlite_server: tuple[ServerProcess, dict[str, int]]) -> None:
    """Issue 13 (REST page sizes): ``limit`` up to REALTIME_MAX_PAGE_SIZE (default 100) is
    honoured; above it the page is the maximum."""
    server, ids = sqlite_server
    url = server.env["DATABASE_URL"]
    have = db_query(url, "SELECT count(*) FROM realtime_resource")[0][0]
    for _ in range(102 - have):
        db_query(
            url,
            "INSERT INTO realtime_resource (data, version, created_at, updated_at) VALUES (%s, 1, %s, %s)",
            ("{}", "2026-01-01 00:00:00", "2026-01-01 00:00:00"),
        )
    status, page = _rest(server, "GET", "/api/resources/?limit=100", ids["alice"])
    assert (status, len(page["results"])) == (200, 100)
    status, page = _rest(server, "GET", "/api/resources/?limit=101", ids["alice"])
    assert (status, len(page["results"])) == (200, 100)
    assert "limit=100" in page["next"]

    # The maximum is a setting: at it and past it, and the default page never exceeds it.
    small = ServerProcess(env={**server.env, "REALTIME_MAX_PAGE_SIZE": "3"}, log_path=server.log_path).start()
    try:
        for query, expected in (("?limit=3", 3), ("?limit=4", 3), ("", 3), ("?limit=2", 2)):
            status, page = _rest(small, "GET", f"/api/resources/{query}", ids["alice"])
            assert (status, len(page["results"])) == (200, expected), query
    finally:
        small.stop()


# --- the sanitizer under the worst input at the rate limit ----------------------------------------


def worst_markup(size: int = 65_536) -> list[str]:
    """The costliest texts for the sanitizer: 64 KB of unclosed ``<div>`` nesting (the HTML tree
    builder's scope checks make it quadratic: 0.3 s per call), and the costliest text it accepts,
    nesting as deep as allowed at every level of escaping, so that every pass has work."""
    flat = ("<div>" * (size // 5))[:size]
    text, level = "", "<div>" * (MAX_MARKUP_TAGS - 1)
    while len(text) + len(level) <= size:
        text += level
        level = level.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return [flat, text + "x" * (size - len(text))]


async def test_worst_markup_at_the_rate_limit_keeps_other_clients_echo_p99_under_50ms(
    server_factory: Any, e2e_db: E2EDatabase
) -> None:
    """Injection attack / Latency / issue 13: one client publishes 64 KB of nested escaped markup
    at the rate limit; another client's echo round trips stay under 50 ms at the 99th percentile."""
    rate = 200  # the default REALTIME_RATE_LIMIT
    srv: ServerProcess = server_factory(REALTIME_RATE_LIMIT=str(rate))
    window = LogWindow(srv)
    room = f"room:{_uid('markup')}"
    attacker = await _login(srv, e2e_db.user_ids["alice"])
    victim = await _login(srv, e2e_db.user_ids["bob"])
    payloads = worst_markup()
    stop = asyncio.Event()

    async def attack() -> int:
        sent, started = 0, time.monotonic()
        while not stop.is_set():
            text = payloads[sent % len(payloads)]
            frame = {"event": "message.send", "id": _uid("w"), "data": {"stream": room, "text": text}}
            await attacker.send(orjson.dumps(frame).decode())
            sent += 1
            await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
        return sent

    async def drain() -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(attacker.recv(), 0.5)
            except TimeoutError:
                continue

    attack_task = asyncio.ensure_future(attack())
    drain_task = asyncio.ensure_future(drain())
    await asyncio.sleep(0.5)  # the attack is under way before the first echo
    rtts: list[float] = []
    for i in range(150):
        start = time.perf_counter()
        reply = await call(victim, {"event": "echo", "id": f"e{i}", "data": {"i": i}})
        rtts.append(time.perf_counter() - start)
        assert reply["event"] == "ack", reply
        await asyncio.sleep(0.01)
    stop.set()
    sent = await attack_task
    drain_task.cancel()
    rtts.sort()
    p99 = rtts[int(len(rtts) * 0.99) - 1]
    print(f"worst markup: {sent} sent, echo p50 {rtts[len(rtts) // 2] * 1000:.1f} ms p99 {p99 * 1000:.1f} ms")
    assert sent >= rate  # TCP back-pressure paces the attacker once the server is busy with it
    assert p99 < scaled(0.050), f"echo p99 {p99 * 1000:.1f} ms"
    window.assert_no_traceback()
