"""Issue 13: what one client can make the server hold is bounded (PROTOCOL.md section 11).

Each test is an attack seen on ``main``: a history of huge events, a ``seq`` client with big
replies, subscriptions and connections past their limits, subscribing to a resource that does
not exist, and a peer that sends big messages but never reads.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from tests.conftest import scaled
from tests.e2e.conftest import E2EDatabase
from tests.e2e.helpers import (
    PASSWORD,
    ServerProcess,
    call,
    connect,
    db_query,
    expect_close,
    http_json,
    manage,
    mint_token,
    raw_upgrade,
    recv_json,
)

MiB = 1024 * 1024


def proc_status_kb(server: ServerProcess, field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (the peak so far) of the server process, in KiB."""
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field}")


def no_traceback(server: ServerProcess) -> None:
    log = server.log_text()
    assert "Traceback" not in log, log[-4000:]


@pytest.fixture(scope="module")
def fresh_users(e2e_db: E2EDatabase) -> dict[str, int]:
    """Users no other test connects as: per-user session counts start at zero."""
    names = [f"lim{uuid.uuid4().hex[:8]}" for _ in range(3)]
    code = (
        "import json; from accounts.models import User; "
        f"print('USERS=' + json.dumps({{n: User.objects.create_user(username=n, password={PASSWORD!r}).pk "
        f"for n in {names!r}}}))"
    )
    out = manage(e2e_db.url, "shell", "-c", code, check=True).stdout
    users: dict[str, int] = json.loads(next(line for line in out.splitlines() if line.startswith("USERS="))[6:])
    return users


async def welcome(server: ServerProcess, user_id: int, **kwargs: Any) -> Any:
    ws = await connect(server, mint_token(user_id, expires_in=600), **kwargs)
    first = await recv_json(ws)
    assert first["event"] == "session.welcome", first
    return ws


def seed_events(database_url: str, stream: str, texts: list[str]) -> None:
    """Write a stream's events straight into the log, as if published (publishing a thousand
    64 KB texts through the server takes minutes on a busy machine; reading them is the attack)."""
    now = "2026-01-01 00:00:00"
    rows = [
        (offset, "message.new", json.dumps({"id": None, "sender": {"id": 1, "username": "x"}, "text": t, "ts": now}))
        for offset, t in enumerate(texts, start=1)
    ]
    stream_sql = (
        "INSERT INTO realtime_stream (name, epoch, head, pruned_through, created_at) VALUES (%s, %s, %s, 0, %s)"
    )
    event_sql = (
        'INSERT INTO realtime_event (stream_id, "offset", event, data, created_at) '
        "VALUES ((SELECT id FROM realtime_stream WHERE name = %s), %s, %s, {data}, %s)"
    )
    if database_url.startswith("sqlite:"):
        import sqlite3

        with sqlite3.connect(database_url.removeprefix("sqlite:///").split("?")[0], timeout=30) as lite:
            lite.execute(stream_sql.replace("%s", "?"), (stream, "e" * 16, len(texts), now))
            lite.executemany(
                event_sql.format(data="?").replace("%s", "?"), [(stream, o, e, d, now) for o, e, d in rows]
            )
        return
    import psycopg

    with psycopg.connect(database_url) as conn, conn.cursor() as cursor:
        cursor.execute(stream_sql, (stream, "e" * 16, len(texts), now))
        cursor.executemany(event_sql.format(data="%s::jsonb"), [(stream, o, e, d, now) for o, e, d in rows])


async def echo_rtts(ws: Any, stop: asyncio.Event) -> list[float]:
    rtts: list[float] = []
    while not stop.is_set():
        started = time.perf_counter()
        reply = await call(ws, {"event": "echo", "id": "b", "data": {"n": len(rtts)}}, timeout=60)
        assert reply["event"] == "ack", reply
        rtts.append(time.perf_counter() - started)
        await asyncio.sleep(0.01)
    return rtts


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def test_history_of_huge_control_character_events_is_paged_within_the_byte_budget(
    server_factory, e2e_db: E2EDatabase
) -> None:
    """Issue 13 attack: 1,000 events of 64 KB control characters (each ~370 KB once JSON-escaped)
    and one `stream.history` with limit 1000. On main this rendered a ~370 MB frame on the event
    loop (and cached it). Now each page stops at REALTIME_MAX_REPLY_BYTES with more:true, the
    client pages on with `since`, the server's peak RSS grows little, and another client's echo
    stays fast."""
    srv = server_factory(REALTIME_RATE_LIMIT="0")
    budget = 1_048_576  # REALTIME_MAX_REPLY_BYTES defaults to REALTIME_MAX_MESSAGE_BYTES
    stream = f"room:ctl{uuid.uuid4().hex[:10]}"
    text = "".join(chr(1 + i % 31) for i in range(65_536))
    seed_events(e2e_db.url, stream, [text] * 1000)
    user = e2e_db.user_ids["alice"]
    attacker = await welcome(srv, user, max_size=8 * MiB)
    bystander = await welcome(srv, user)
    await call(bystander, {"event": "echo", "data": {}})
    peak_before = proc_status_kb(srv, "VmHWM")
    rss_before = proc_status_kb(srv, "VmRSS")

    stop = asyncio.Event()
    watcher = asyncio.create_task(echo_rtts(bystander, stop))
    since, offsets, sizes = 0, [], []
    try:
        for page in range(8):
            await attacker.send(
                orjson.dumps(
                    {
                        "event": "stream.history",
                        "id": f"h{page}",
                        "data": {"stream": stream, "since": since, "limit": 1000},
                    }
                ).decode()
            )
            raw = await asyncio.wait_for(attacker.recv(), scaled(60))
            sizes.append(len(raw.encode() if isinstance(raw, str) else raw))
            reply = orjson.loads(raw)
            assert reply["event"] == "ack", str(reply)[:300]
            events = reply["data"]["events"]
            assert (bool(events), reply["data"]["more"]) == (True, True)
            offsets += [event["offset"] for event in events]
            assert events[0]["data"]["text"] == text
            since = events[-1]["offset"]
    except ConnectionClosed as exc:
        peak = (proc_status_kb(srv, "VmHWM") - peak_before) / 1024
        pytest.fail(f"the history reply did not fit in 8 MiB (server peak RSS +{peak:.0f} MB): {exc}")
    finally:
        stop.set()
    rtts = await watcher
    peak_growth = (proc_status_kb(srv, "VmHWM") - peak_before) / 1024
    rss_growth = (proc_status_kb(srv, "VmRSS") - rss_before) / 1024
    print(
        f"history pages of {len(offsets) // 8} events, largest {max(sizes)} bytes; peak RSS +{peak_growth:.1f} MB, "
        f"RSS +{rss_growth:.1f} MB; bystander echo p99 {p99(rtts) * 1000:.1f} ms over {len(rtts)}"
    )
    assert max(sizes) <= budget
    assert offsets == list(range(1, len(offsets) + 1))
    assert peak_growth < 50, f"peak RSS grew {peak_growth:.1f} MB"
    assert p99(rtts) < scaled(0.25)

    last = await call(attacker, {"event": "stream.history", "data": {"stream": stream, "since": 999}})
    assert ([e["offset"] for e in last["data"]["events"]], last["data"]["more"]) == ([1000], False)
    no_traceback(srv)


async def test_history_more_flag_and_limit(server, e2e_db: E2EDatabase) -> None:
    """Section 4: `more` is true exactly when events after the last returned one exist."""
    stream = f"room:more{uuid.uuid4().hex[:10]}"
    seed_events(e2e_db.url, stream, [f"t{i}" for i in range(5)])
    ws = await welcome(server, e2e_db.user_ids["bob"])

    async def history(since: int, limit: int) -> tuple[list[int], bool]:
        reply = await call(ws, {"event": "stream.history", "data": {"stream": stream, "since": since, "limit": limit}})
        return [e["offset"] for e in reply["data"]["events"]], reply["data"]["more"]

    assert await history(0, 5) == ([1, 2, 3, 4, 5], False)
    assert await history(0, 4) == ([1, 2, 3, 4], True)
    assert await history(4, 4) == ([5], False)
    assert await history(5, 4) == ([], False)


async def test_retransmission_cache_of_a_seq_client_is_bounded_in_bytes(server_factory, e2e_db: E2EDatabase) -> None:
    """Issue 13 attack: a client using `seq` sends 100 echoes of ~900 KB; on main the last 100
    replies were all kept for retransmission (~90 MB per connection). Now the cache is bounded by
    REALTIME_MAX_REPLY_BYTES: the newest reply is still retransmitted as sent, an evicted one gets
    `limit_exceeded` (data.limit names the setting, processed: true) and is not processed again."""
    srv = server_factory(REALTIME_RATE_LIMIT="0")
    ws = await welcome(srv, e2e_db.user_ids["alice"], max_size=4 * MiB)
    await call(ws, {"event": "echo", "seq": 0, "data": {}})
    rss_before = proc_status_kb(srv, "VmRSS")
    blob = "y" * 900_000
    window = 8
    for seq in range(1, 101):
        await ws.send(
            orjson.dumps({"event": "echo", "id": f"e{seq}", "seq": seq, "data": {"b": blob, "n": seq}}).decode()
        )
        if seq > window:
            reply = await recv_json(ws, timeout=30)
            assert reply["event"] == "ack", str(reply)[:200]
    for _ in range(window):
        assert (await recv_json(ws, timeout=30))["event"] == "ack"
    rss_growth = (proc_status_kb(srv, "VmRSS") - rss_before) / 1024
    print(f"100 seq echoes of 900 KB: server RSS +{rss_growth:.1f} MB")

    newest = await call(ws, {"event": "echo", "id": "e100", "seq": 100, "data": {"b": "again"}}, timeout=30)
    assert (newest["event"], newest["ref"], newest["seq"], newest["data"]["n"]) == ("ack", "e100", 100, 100)
    evicted = await call(ws, {"event": "echo", "id": "e5", "seq": 5, "data": {}})
    assert (evicted["event"], evicted["seq"]) == ("error", 5), evicted
    data = evicted["data"]
    assert (data["code"], data["limit"], data["processed"]) == ("limit_exceeded", "REALTIME_MAX_REPLY_BYTES", True)
    nxt = await call(ws, {"event": "echo", "id": "e101", "seq": 101, "data": {"ok": 1}})
    assert (nxt["event"], nxt["data"]) == ("ack", {"ok": 1})
    assert rss_growth < 30, f"server RSS grew {rss_growth:.1f} MB"


async def test_subscriptions_at_limit_and_limit_plus_one(server_factory, e2e_db: E2EDatabase) -> None:
    """Section 11 REALTIME_MAX_SUBSCRIPTIONS: at the limit subscribing works; one more is
    `limit_exceeded` naming the limit; re-subscribing a followed stream and subscribing after an
    unsubscribe still work."""
    srv = server_factory(REALTIME_MAX_SUBSCRIPTIONS="3")
    ws = await welcome(srv, e2e_db.user_ids["bob"])
    base = f"room:sub{uuid.uuid4().hex[:8]}"

    async def subscribe(n: int) -> dict[str, Any]:
        return await call(ws, {"event": "stream.subscribe", "id": f"s{n}", "data": {"stream": f"{base}-{n}"}})

    for n in range(3):
        assert (await subscribe(n))["event"] == "ack"
    over = await subscribe(3)
    assert (over["event"], over["ref"]) == ("error", "s3"), over
    assert (over["data"]["code"], over["data"]["limit"]) == ("limit_exceeded", "REALTIME_MAX_SUBSCRIPTIONS")
    assert (await subscribe(2))["event"] == "ack"  # a re-subscribe replaces, it does not add
    await call(ws, {"event": "stream.unsubscribe", "data": {"stream": f"{base}-0"}})
    assert (await subscribe(3))["event"] == "ack"


async def test_connections_per_user_at_limit_and_limit_plus_one_across_two_servers(
    server_factory, e2e_db: E2EDatabase, fresh_users: dict[str, int]
) -> None:
    """Section 11 REALTIME_MAX_CONNECTIONS_PER_USER, counted across servers sharing a database:
    at the limit the handshake succeeds; one more closes 4429 `too_many_connections`; another
    user is unaffected; once a session ends the user may connect again."""
    a = server_factory(REALTIME_MAX_CONNECTIONS_PER_USER="2")
    b = server_factory(REALTIME_MAX_CONNECTIONS_PER_USER="2")
    first_user, other_user = list(fresh_users.values())[:2]
    one = await welcome(a, first_user)
    await welcome(b, first_user)
    refused = await connect(a, mint_token(first_user, expires_in=600))
    assert (await expect_close(refused))[:2] == (4429, "too_many_connections")
    refused_b = await connect(b, mint_token(first_user, expires_in=600))
    assert (await expect_close(refused_b))[:2] == (4429, "too_many_connections")
    await welcome(b, other_user)

    await one.close()
    deadline = time.monotonic() + scaled(10)
    sql = "SELECT COUNT(*) FROM realtime_connectionsession WHERE user_id = %s AND disconnected_at IS NULL"
    while db_query(e2e_db.url, sql, (first_user,))[0][0] != 1:
        assert time.monotonic() < deadline, "the closed session's row was not closed"
        await asyncio.sleep(0.05)
    await welcome(a, first_user)
    assert "too_many_connections" in a.log_text()
    no_traceback(a)
    no_traceback(b)


async def test_subscribe_to_a_resource_that_does_not_exist_creates_nothing(server, e2e_db: E2EDatabase) -> None:
    """Section 11: `resource:ID` of an unknown resource is `not_found`, and no Stream row is made
    (on main every such subscribe created a stream: unbounded rows from one client)."""
    ws = await welcome(server, e2e_db.user_ids["alice"])
    missing = 900_000_000 + int(uuid.uuid4().int % 99_999_999)
    reply = await call(ws, {"event": "stream.subscribe", "id": "r", "data": {"stream": f"resource:{missing}"}})
    assert (reply["event"], reply["data"]["code"]) == ("error", "not_found"), reply
    rows = db_query(e2e_db.url, "SELECT COUNT(*) FROM realtime_stream WHERE name = %s", (f"resource:{missing}",))
    assert rows[0][0] == 0
    history = await call(ws, {"event": "stream.history", "data": {"stream": f"resource:{missing}", "since": 0}})
    assert history["event"] == "ack", history
    assert db_query(e2e_db.url, "SELECT COUNT(*) FROM realtime_stream WHERE name = %s", (f"resource:{missing}",)) == [
        (0,)
    ]

    token = mint_token(e2e_db.user_ids["alice"], expires_in=600)
    status, _, body = http_json(
        "POST", f"{server.http_url}/api/resources/", {"data": {"a": 1}}, {"Authorization": f"Bearer {token}"}
    )
    assert status == 201, body
    ok = await call(ws, {"event": "stream.subscribe", "data": {"stream": f"resource:{body['id']}"}})
    assert ok["event"] == "ack", ok


def _masked_text(payload: bytes) -> bytes:
    return Frame(Opcode.TEXT, payload).serialize(mask=True)


async def test_a_peer_that_never_reads_while_sending_big_echoes_keeps_server_memory_bounded(
    server_factory, e2e_db: E2EDatabase
) -> None:
    """Issue 13 attack: a raw client sends 1 MB echoes as fast as the server takes them and never
    reads a byte. Replies must be bounded like every other frame: the server stops reading from
    that peer (TCP backpressure) instead of buffering replies; its peak RSS grows little and
    another client's echo is unaffected."""
    srv = server_factory()
    user = e2e_db.user_ids["alice"]
    bystander = await welcome(srv, user)
    sock = raw_upgrade(srv.port, mint_token(user, expires_in=600))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    frame = _masked_text(orjson.dumps({"event": "echo", "data": {"b": "z" * 1_000_000}}))
    peak_before = proc_status_kb(srv, "VmHWM")
    loop = asyncio.get_running_loop()
    sent_frames = 0
    stop = asyncio.Event()
    watcher = asyncio.create_task(echo_rtts(bystander, stop))
    deadline = time.monotonic() + scaled(4)
    try:
        while time.monotonic() < deadline:
            try:
                await asyncio.wait_for(loop.sock_sendall(sock, frame), 1.0)
            except TimeoutError:
                break  # the server stopped reading: backpressure reached the sender
            sent_frames += 1
    finally:
        stop.set()
    rtts = await watcher
    peak_growth = (proc_status_kb(srv, "VmHWM") - peak_before) / 1024
    print(
        f"non-reader sent {sent_frames} MB of echoes; peak RSS +{peak_growth:.1f} MB; "
        f"bystander p99 {p99(rtts) * 1000:.1f} ms"
    )
    sock.close()
    assert peak_growth < 50, f"peak RSS grew {peak_growth:.1f} MB"
    assert p99(rtts) < scaled(0.25)
    assert (await call(bystander, {"event": "echo", "data": {"still": 1}}))["data"] == {"still": 1}
    no_traceback(srv)
