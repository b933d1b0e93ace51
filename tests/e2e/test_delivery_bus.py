"""Issue 14, nothing lost ever: what the broker forgets or drops still reaches every server.

Fault tolerance: Broker failure; Concurrency: Multiple clients (across servers). Each test
is a fault seen on ``main``: the broker's group memberships expiring, a stalled server's
channel overflowing, an event committed without a bus send (a crash, an idempotent retry),
a hub exiting with sends queued, and a re-subscribe racing its own broker leave.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from tests.conftest import scaled
from tests.e2e.conftest import E2EDatabase
from tests.e2e.delivery_helpers import (
    age_group,
    client,
    collect,
    commit_without_broadcast,
    group_key,
    group_scores,
    msg_id,
    publish,
    redis_client,
    room,
    stream_group,
    subscribe,
    until,
)
from tests.e2e.helpers import ServerProcess, base_env, call, db_query, expect_close
from tests.e2e.redis_server import RedisServer, free_port

FAST = {"REALTIME_RATE_LIMIT": "0"}
Pair = tuple[ServerProcess, ServerProcess, RedisServer]


@pytest.fixture(scope="module")
def pair(e2e_db: E2EDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Servers A and B on one private Redis (core layer, a short group expiry), shared by the
    tests that leave them as they found them: starting servers is most of these tests' time."""
    workdir = tmp_path_factory.mktemp("pair")
    broker = RedisServer(port=free_port(), workdir=workdir).start()
    env = base_env(e2e_db.url, REDIS_URL=broker.url, REALTIME_REDIS_LAYER="core", REALTIME_GROUP_EXPIRY="8", **FAST)
    servers: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            servers.append(ServerProcess(env=env, log_path=workdir / f"{name}.log").start())
        yield servers[0], servers[1], broker
    finally:
        for server in servers:
            server.stop()
        broker.kill()


async def _wait_for(ws: ClientConnection, event: str, timeout: float = 5) -> dict[str, Any]:
    async with asyncio.timeout(scaled(timeout)):
        while True:
            frame = orjson.loads(await ws.recv())
            if frame.get("event") == event:
                return dict(frame)


async def test_group_memberships_outlive_the_broker_group_expiry(pair: Pair, e2e_db: E2EDatabase) -> None:
    """Broker failure (a week of uptime): channels-redis drops a group member `group_expiry` after
    it joined. Age every membership in Redis to 25 h: the servers refresh their memberships, and
    fan-out, announcements and kicks still cross servers (core layer; the pub/sub layer keeps no
    group state with an expiry)."""
    a, b, redis = pair
    stream = room()
    sub_b = await client(b, e2e_db, "alice")
    await subscribe(sub_b, stream)
    bob_b = await client(b, e2e_db, "bob")
    staff_a = await client(a, e2e_db, "admin")
    pub_a = await client(a, e2e_db, "alice")
    r = redis_client(redis)
    keys = [group_key("realtime.control"), group_key(stream_group(stream))]
    await until(lambda: r.zcard(keys[0]) == 2 and r.zcard(keys[1]) == 1, 10)

    for key in keys:
        age_group(r, key, time.time() - 25 * 3600)

    def refreshed() -> bool:
        scores = [score for key in keys for score in group_scores(r, key)]
        return len(scores) == 3 and min(scores) > time.time() - 60

    await until(refreshed, 6)  # one refresh interval (a quarter of the expiry) and some
    [offset] = await publish(pub_a, stream, ["after a day"])
    [frame] = await collect(sub_b, 1, 5)
    assert (frame["offset"], frame["data"]["text"]) == (offset, "after a day")
    ack = await call(staff_a, {"event": "admin.announce", "id": msg_id(), "data": {"text": "still here"}})
    assert ack["event"] == "ack", ack
    assert (await _wait_for(bob_b, "system.announcement"))["data"]["text"] == "still here"
    await _wait_for(staff_a, "system.announcement")  # the sender's own, after its ack
    ack = await call(staff_a, {"event": "admin.kick", "id": msg_id(), "data": {"username": "bob"}})
    assert ack["event"] == "ack", ack
    code, reason, _ = await expect_close(bob_b)
    assert (code, reason) == (4403, "kicked")


async def test_a_stalled_server_gets_the_events_its_channel_dropped(pair: Pair, e2e_db: E2EDatabase) -> None:
    """Broker failure: server B is stopped (SIGSTOP) while 150 events are published on A, past
    B's channel capacity (100), so the broker drops the rest. After SIGCONT, B's subscriber
    receives every event, the last within 2 s, with no later publish."""
    a, b, _ = pair
    stream = room()
    sub_b = await client(b, e2e_db)
    await subscribe(sub_b, stream)
    pub_a = await client(a, e2e_db, "bob")
    await publish(pub_a, stream, ["warm-up"])
    assert [f["offset"] for f in await collect(sub_b, 1, 5)] == [1]
    assert b.proc is not None
    b.proc.send_signal(signal.SIGSTOP)
    try:
        acked = await publish(pub_a, stream, [f"while stopped {i}" for i in range(150)])
    finally:
        b.proc.send_signal(signal.SIGCONT)
    resumed = time.monotonic()
    assert acked == list(range(2, 152))
    frames = await collect(sub_b, 150, 2.5)
    elapsed = time.monotonic() - resumed
    assert [f["offset"] for f in frames] == list(range(2, 152))
    assert elapsed <= scaled(2.0), f"the last event came {elapsed:.2f}s after the stall ended"


async def test_an_event_committed_without_a_bus_send_reaches_every_subscriber(pair: Pair, e2e_db: E2EDatabase) -> None:
    """Retry logic / Broker failure: a publisher crashes between commit and bus send (the event
    is committed by another process that never sends it), then its client retries with the same
    id and is answered from the idempotency table, which fans nothing out. Subscribers on both
    servers still receive the event within 2 s."""
    a, b, _ = pair
    stream = room()
    sub_a, sub_b = await client(a, e2e_db, "bob"), await client(b, e2e_db, "bob")
    await subscribe(sub_a, stream)
    await subscribe(sub_b, stream)
    ident = msg_id("crash")
    alice = e2e_db.user_ids["alice"]
    data = {"id": ident, "sender": {"id": alice, "username": "alice"}, "text": "committed, never sent"}
    commit_without_broadcast(
        e2e_db.url, stream, "message.new", {**data, "ts": "2026-01-01T00:00:00.000Z"}, alice, ident
    )
    retry = await client(a, e2e_db, "alice")
    started = time.monotonic()
    assert await publish(retry, stream, ["committed, never sent"], ids=[ident]) == [1]
    for ws in (sub_a, sub_b):
        [frame] = await collect(ws, 1, 2.0)
        assert (frame["offset"], frame["data"]["text"]) == (1, "committed, never sent")
    assert time.monotonic() - started <= scaled(2.0)


async def test_sigterm_flushes_the_bus(server_factory, redis: RedisServer, e2e_db: E2EDatabase) -> None:
    """Server restart: SIGTERM on A while a burst of publishes is in flight: every event A
    committed before it exited reaches B's subscriber."""
    env = {"REDIS_URL": redis.url, **FAST}
    a, b = server_factory(**env), server_factory(**env)
    stream = room()
    sub_b = await client(b, e2e_db)
    await subscribe(sub_b, stream)
    pub_a = await client(a, e2e_db, "bob")
    for i in range(300):
        frame = {"event": "message.send", "id": msg_id(), "data": {"stream": stream, "text": f"burst {i}"}}
        await pub_a.send(orjson.dumps(frame).decode())
    await _wait_for(pub_a, "ack")  # the burst is being committed
    assert a.proc is not None
    a.proc.send_signal(signal.SIGTERM)
    assert a.proc.wait(timeout=scaled(20)) == 0
    [(head,)] = db_query(e2e_db.url, "SELECT head FROM realtime_stream WHERE name = %s", (stream,))
    assert head >= 1
    frames = await collect(sub_b, head, 5)
    assert [f["offset"] for f in frames] == list(range(1, head + 1))


@pytest.mark.parametrize("layer", ["core", "pubsub"])
async def test_a_resubscribe_keeps_the_broker_membership(
    request: pytest.FixtureRequest, e2e_db: E2EDatabase, layer: str
) -> None:
    """Concurrency: Race conditions -> re-subscribing replaces the earlier subscription; the broker
    leave of the earlier one must not land after the join of the new one (B would silently stop
    getting A's events through the broker)."""
    if layer == "core":
        a, b, redis = request.getfixturevalue("pair")
    else:
        redis = request.getfixturevalue("redis")
        factory = request.getfixturevalue("server_factory")
        env = {"REDIS_URL": redis.url, "REALTIME_REDIS_LAYER": layer, **FAST}
        a, b = factory(**env), factory(**env)
    stream = room()
    sub_b = await client(b, e2e_db)
    for _ in range(8):
        await subscribe(sub_b, stream)
    r = redis_client(redis)
    await asyncio.sleep(scaled(0.3))  # let a late leave land, if one is coming
    if layer == "core":
        assert r.zcard(group_key(stream_group(stream))) == 1
    else:  # the pub/sub layer subscribes the process to one Redis channel per group
        [(_, subscribers)] = r.pubsub_numsub(f"asgi__group__{stream_group(stream)}")
        assert subscribers == 1
    pub_a = await client(a, e2e_db, "bob")
    await publish(pub_a, stream, ["through the broker"])
    started = time.monotonic()
    [frame] = await collect(sub_b, 1, 3)
    assert frame["data"]["text"] == "through the broker"
    # Through the broker, not the 1 s head tracking that covers a lost broker message.
    assert time.monotonic() - started < scaled(0.8)
