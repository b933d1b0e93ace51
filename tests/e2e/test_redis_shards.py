"""Issue 19: several Redis servers in REDIS_URL, streams sharded across them, each shard failing alone.

Fault tolerance: Broker failure (one of two); Concurrency: Multiple clients (across servers).
Servers A and B list the same two Redis servers. Each test kills one of them mid-traffic:
the streams of the other shard keep their live delivery over the bus (no degraded frame,
every event handed over with its publish time), the killed shard's streams get
``system.degraded``, publishes to them are acked, and after the restart ``system.recovered``
follows and every subscriber on both servers holds every event once, in order. Presence and
signals, and ``realtime.publish`` from a process that is not a server, work on either shard.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from realtime.streams.bus_shards import shard_of_stream
from tests.conftest import scaled
from tests.e2e.conftest import E2EDatabase
from tests.e2e.delivery_helpers import client, collect, delivered_with_publish_time, publish, subscribe, until
from tests.e2e.helpers import PYTHON, REPO, ServerProcess, base_env, http_json
from tests.e2e.redis_server import RedisServer, free_port
from tests.e2e.test_presence import ask, next_push
from tests.e2e.test_presence import session as presence_session
from tests.e2e.test_presence import subscribe as presence_subscribe

Cluster = tuple[ServerProcess, ServerProcess, list[RedisServer]]


@pytest.fixture(scope="module")
def cluster(e2e_db: E2EDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("shards")
    brokers = [RedisServer(port=free_port(), workdir=workdir).start() for _ in range(2)]
    env = base_env(e2e_db.url, REDIS_URL=",".join(b.url for b in brokers), REALTIME_RATE_LIMIT="0")
    servers: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            servers.append(ServerProcess(env=env, log_path=workdir / f"{name}.log").start())
        yield servers[0], servers[1], brokers
    finally:
        for server in servers:
            server.stop()
        for broker in brokers:
            broker.kill()


def _room_on(shard: int) -> str:
    while True:
        stream = f"room:s{uuid.uuid4().hex[:12]}"
        if shard_of_stream(stream, 2) == shard:
            return stream


async def _until_event(ws: ClientConnection, event: str, frames: list[dict[str, Any]], others: list[str]) -> None:
    """Read until ``event`` arrives; stream events read meanwhile go to ``frames``."""
    async with asyncio.timeout(scaled(30)):
        while event not in others:
            frame = orjson.loads(await ws.recv())
            if "offset" in frame and "ref" not in frame:
                frames.append(frame)
            else:
                others.append(frame["event"])


async def _collect(ws: ClientConnection, count: int, others: list[str], timeout: float = 30) -> list[dict[str, Any]]:
    extra: list[dict[str, Any]] = []
    frames = await collect(ws, count, timeout, others=extra)
    others += [f["event"] for f in extra]
    return frames


@pytest.mark.parametrize("killed", [0, 1])
async def test_one_redis_lost_degrades_only_its_own_streams(cluster: Cluster, e2e_db: E2EDatabase, killed: int) -> None:
    a, b, brokers = cluster
    dead, live = _room_on(killed), _room_on(1 - killed)
    dead_b, dead_a, live_b = await client(b, e2e_db), await client(a, e2e_db, "bob"), await client(b, e2e_db, "bob")
    await subscribe(dead_b, dead)
    await subscribe(dead_a, dead)
    await subscribe(live_b, live)
    pub = await client(a, e2e_db)
    got: dict[str, list[dict[str, Any]]] = {"dead_b": [], "dead_a": [], "live_b": []}
    others: dict[str, list[str]] = {"dead_b": [], "dead_a": [], "live_b": []}
    assert await publish(pub, dead, [f"before {i}" for i in range(5)]) == [1, 2, 3, 4, 5]
    assert await publish(pub, live, [f"before {i}" for i in range(5)]) == [1, 2, 3, 4, 5]
    for name, ws in (("dead_b", dead_b), ("dead_a", dead_a), ("live_b", live_b)):
        got[name] += await _collect(ws, 5, others[name])

    brokers[killed].kill()
    assert await publish(pub, dead, ["during 0"]) == [6]
    await _until_event(dead_b, "system.degraded", got["dead_b"], others["dead_b"])
    await _until_event(dead_a, "system.degraded", got["dead_a"], others["dead_a"])
    assert await publish(pub, dead, [f"during {i}" for i in range(1, 20)]) == list(range(7, 26))

    # The other shard's stream stays live on the bus while the first is down.
    before = delivered_with_publish_time(b, e2e_db)
    assert await publish(pub, live, [f"during {i}" for i in range(10)]) == list(range(6, 16))
    got["live_b"] += await _collect(live_b, 10, others["live_b"])
    await until(lambda: delivered_with_publish_time(b, e2e_db) - before >= 10, 5)
    assert delivered_with_publish_time(b, e2e_db) - before == 10

    brokers[killed].start()  # same port: the servers reconnect by themselves
    for name, ws in (("dead_b", dead_b), ("dead_a", dead_a)):
        got[name] += await _collect(ws, 25 - len(got[name]), others[name])  # from the log
        await _until_event(ws, "system.recovered", got[name], others[name])
    assert await publish(pub, dead, [f"after {i}" for i in range(5)]) == list(range(26, 31))
    assert await publish(pub, live, [f"after {i}" for i in range(5)]) == list(range(16, 21))
    for name, ws in (("dead_b", dead_b), ("dead_a", dead_a), ("live_b", live_b)):
        got[name] += await _collect(ws, 5, others[name])

    for name in ("dead_b", "dead_a"):
        assert [f["offset"] for f in got[name]] == list(range(1, 31)), name
        assert others[name].count("system.degraded") == 1, others[name]
        assert others[name].count("system.recovered") == 1, others[name]
    assert [f["offset"] for f in got["live_b"]] == list(range(1, 21))
    assert [f["data"]["text"] for f in got["live_b"]][5:15] == [f"during {i}" for i in range(10)]
    assert "system.degraded" not in others["live_b"]
    assert "system.recovered" not in others["live_b"]
    # Readiness follows the first Redis (the cache, control and presence live there).
    await until(lambda: http_json("GET", f"{b.http_url}/readyz")[0] == 200, 10)
    for ws in (dead_b, dead_a, live_b, pub):
        await ws.close()


@pytest.mark.parametrize("shard", [0, 1])
async def test_presence_and_signals_cross_servers_on_either_shard(cluster: Cluster, shard: int) -> None:
    """Presence entries are stored in the first Redis; a stream's deltas and signals travel on
    its own shard: a join and a signal on A reach B for a stream of each shard."""
    a, b, _ = cluster
    stream = _room_on(shard)
    bob = await presence_session(b, "bob")
    await presence_subscribe(bob, stream)
    alice = await presence_session(a, "alice")
    state = await presence_subscribe(alice, stream)
    assert {u["username"] for u in state["users"]} <= {"alice", "bob"}
    joined = await next_push(bob, "presence.join")
    assert [u["username"] for u in joined["data"]["users"]] == ["alice"]
    assert (await ask(alice, "stream.signal", {"stream": stream, "data": {"typing": True}}))["event"] == "ack"
    assert (await next_push(bob, "stream.signal"))["data"]["from"]["username"] == "alice"
    await alice.close()
    left = await next_push(bob, "presence.leave")
    assert [u["username"] for u in left["data"]["users"]] == ["alice"]
    await bob.close()


PUBLISH_FROM_SHELL = "import realtime; realtime.publish({stream!r}, 'score.changed', {{'n': 1}}); print('RESULT=ok')"


@pytest.mark.parametrize("shard", [0, 1])
async def test_a_publish_from_outside_the_servers_goes_to_the_streams_shard(
    cluster: Cluster, e2e_db: E2EDatabase, shard: int
) -> None:
    """``realtime.publish`` in ``manage.py shell`` (not a server) with the same REDIS_URL list
    sends the event to the stream's shard: subscribers on both servers get it over the bus."""
    a, b, brokers = cluster
    stream = _room_on(shard)
    subscribers = [await client(server, e2e_db) for server in (a, b)]
    for ws in subscribers:
        await subscribe(ws, stream)
    before = [delivered_with_publish_time(server, e2e_db) for server in (a, b)]
    done = await asyncio.to_thread(
        subprocess.run,
        [PYTHON, "manage.py", "shell", "-c", PUBLISH_FROM_SHELL.format(stream=stream)],
        cwd=REPO,
        env=base_env(e2e_db.url, REDIS_URL=",".join(r.url for r in brokers)),
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    assert "RESULT=ok" in done.stdout, done.stderr
    for ws in subscribers:
        [frame] = await collect(ws, 1, 5)
        assert (frame["event"], frame["offset"]) == ("score.changed", 1)
    await until(lambda: [delivered_with_publish_time(s, e2e_db) for s in (a, b)] == [before[0] + 1, before[1] + 1], 5)
    for ws in subscribers:
        await ws.close()
