"""Several server processes on one database and one Redis (issue 4; PROTOCOL.md section 8)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from tests.conftest import scaled
from tests.e2e.helpers import ServerProcess, call, connect, expect_close, http_json, obtain_tokens, recv_json
from tests.e2e.redis_server import RedisServer
from tests.waiting import async_wait_until


async def _client(server: ServerProcess, user: str = "alice") -> ClientConnection:
    ws = await connect(server, obtain_tokens(server, user)["access"], max_size=None)
    assert (await recv_json(ws))["event"] == "session.welcome"
    return ws


async def _subscribe(ws: ClientConnection, stream: str, since: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"stream": stream} if since is None else {"stream": stream, "since": since}
    reply = await call(ws, {"event": "stream.subscribe", "id": "s", "data": data})
    assert reply["event"] == "ack", reply
    ack: dict[str, Any] = reply["data"]
    return ack


async def _publish(ws: ClientConnection, stream: str, texts: list[str]) -> list[int]:
    for i, text in enumerate(texts):
        frame = {"event": "message.send", "id": f"{uuid.uuid4().hex[:8]}-{i}", "data": {"stream": stream, "text": text}}
        await ws.send(orjson.dumps(frame).decode())
    offsets: list[int] = []
    while len(offsets) < len(texts):
        reply = await recv_json(ws, timeout=30)
        if reply["event"] == "ack":
            offsets.append(reply["data"]["offset"])
        else:
            assert reply["event"] != "error", reply
    return offsets


async def _collect(
    ws: ClientConnection, count: int, timeout: float = 30, others: list[str] | None = None
) -> list[dict[str, Any]]:
    """The next ``count`` message.new pushes; other push events are appended to ``others``."""
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(scaled(timeout)):
        while len(frames) < count:
            frame = orjson.loads(await ws.recv())
            if frame.get("event") == "message.new":
                frames.append(frame)
            elif others is not None:
                others.append(frame["event"])
    return frames


async def test_publishers_on_two_servers_give_every_subscriber_one_order(server_factory, redis: RedisServer) -> None:
    """Risks: Message ordering across servers -> two publishers on different servers writing one
    stream give every subscriber, on either server, the same order with contiguous offsets."""
    a = server_factory(REDIS_URL=redis.url, REALTIME_RATE_LIMIT="0")
    b = server_factory(REDIS_URL=redis.url, REALTIME_RATE_LIMIT="0")
    stream = f"room:x{uuid.uuid4().hex[:10]}"
    subscribers = [await _client(a), await _client(b, "bob"), await _client(b)]
    for ws in subscribers:
        await _subscribe(ws, stream)
    pub_a, pub_b = await _client(a), await _client(b, "bob")
    results = await asyncio.gather(
        _publish(pub_a, stream, [f"a{i}" for i in range(150)]),
        _publish(pub_b, stream, [f"b{i}" for i in range(150)]),
    )
    assert sorted(results[0] + results[1]) == list(range(1, 301))
    orders = [[(f["offset"], f["data"]["text"]) for f in await _collect(ws, 300)] for ws in subscribers]
    assert [offset for offset, _ in orders[0]] == list(range(1, 301))
    assert orders[0] == orders[1] == orders[2]
    for ws in [*subscribers, pub_a, pub_b]:
        await ws.close()


async def test_multiple_clients_across_two_servers_receive_a_broadcast(server_factory, redis: RedisServer) -> None:
    """Concurrency: Multiple clients -> 100 clients spread over two servers all receive the broadcast,
    and a broadcast storm of 1,000 messages reaches all of them in order."""
    a = server_factory(REDIS_URL=redis.url, REALTIME_RATE_LIMIT="0")
    b = server_factory(REDIS_URL=redis.url, REALTIME_RATE_LIMIT="0")
    stream = f"room:many{uuid.uuid4().hex[:10]}"
    token_a = obtain_tokens(a, "alice")["access"]
    clients = await asyncio.gather(*(connect(a if i % 2 else b, token_a, max_size=None) for i in range(100)))
    for ws in clients:
        await recv_json(ws)
    await asyncio.gather(*(_subscribe(ws, stream) for ws in clients))
    publisher = await _client(a, "bob")  # alice holds REALTIME_MAX_CONNECTIONS_PER_USER (100) sessions
    await _publish(publisher, stream, ["hello everyone"])
    firsts = await asyncio.gather(*(_collect(ws, 1) for ws in clients))
    assert all(f[0]["offset"] == 1 and f[0]["data"]["text"] == "hello everyone" for f in firsts)

    await _publish(publisher, stream, [f"storm {i}" for i in range(1000)])
    storms = await asyncio.gather(*(_collect(ws, 1000, timeout=60) for ws in clients[:20]))
    for frames in storms:
        assert [f["offset"] for f in frames] == list(range(2, 1002))
    assert (await call(publisher, {"event": "echo", "id": "alive", "data": {}}))["ref"] == "alive"
    # The 80 clients that read nothing of the storm have stopped reading (websockets pauses at
    # its max_queue), so their close handshakes wait out the close timeout: drop them at once.
    for ws in clients[20:]:
        ws.transport.abort()
    await asyncio.gather(*(ws.close() for ws in [*clients[:20], publisher]))


async def test_an_idle_server_on_redis_does_not_report_the_broker_down(server_factory, redis: RedisServer) -> None:
    """Broker failure: a healthy but idle Redis is not an outage -> no system.degraded on a quiet
    connection for longer than redis-py's 5 s socket timeout (it used to flicker every 5 s)."""
    server = server_factory(REDIS_URL=redis.url)
    ws = await _client(server)
    await _subscribe(ws, f"room:quiet{uuid.uuid4().hex[:10]}")
    with pytest.raises(TimeoutError):  # nothing at all arrives: no degraded/recovered pair
        await recv_json(ws, timeout=7)
    assert http_json("GET", f"{server.http_url}/readyz")[0] == 200
    await ws.close()


async def _wait_for_event(
    ws: ClientConnection, event: str, messages: list[dict[str, Any]], timeout: float = 15
) -> dict[str, Any]:
    """Read until ``event``; message.new pushes read meanwhile are kept in ``messages``."""
    async with asyncio.timeout(scaled(timeout)):
        while True:
            frame = orjson.loads(await ws.recv())
            if frame.get("event") == event:
                return dict(frame)
            if frame.get("event") == "message.new":
                messages.append(frame)


@pytest.mark.parametrize("layer", ["pubsub", "core"])
async def test_broker_failure_degrades_and_recovers_without_loss(
    server_factory, redis: RedisServer, layer: str
) -> None:
    """Fault tolerance: Broker failure -> kill Redis mid-traffic: connections stay open, publishes are
    committed and acked, sessions get system.degraded, /readyz is 503 naming the broker; restart
    Redis: system.recovered, and every subscriber on every server has every event once, in order."""
    a = server_factory(REDIS_URL=redis.url, REALTIME_RATE_LIMIT="0")
    b = server_factory(REDIS_URL=redis.url, REALTIME_RATE_LIMIT="0")
    stream = f"room:outage{uuid.uuid4().hex[:10]}"
    sub_a, sub_b = await _client(a), await _client(b, "bob")
    await _subscribe(sub_a, stream)
    await _subscribe(sub_b, stream)
    pub = await _client(a)
    await _publish(pub, stream, [f"before {i}" for i in range(20)])
    seen_a = await _collect(sub_a, 20)
    seen_b = await _collect(sub_b, 20)

    redis.kill()
    await _publish(pub, stream, ["during 0"])  # the send that finds the broker gone
    await _wait_for_event(sub_b, "system.degraded", seen_b)
    status, _, body = http_json("GET", f"{b.http_url}/readyz")
    assert (status, body) == (503, {"database": "ok", "broker": "unavailable"})
    acked = await _publish(pub, stream, [f"during {i}" for i in range(1, 30)])
    assert acked == list(range(22, 51))

    redis.start()  # same port: the servers reconnect by themselves
    others_a: list[str] = []
    others_b: list[str] = []
    seen_a += await _collect(sub_a, 50 - len(seen_a), others=others_a)  # from the log while degraded
    seen_b += await _collect(sub_b, 50 - len(seen_b), others=others_b)
    if "system.recovered" not in others_b:
        await _wait_for_event(sub_b, "system.recovered", seen_b)
    await _publish(pub, stream, [f"after {i}" for i in range(20)])
    seen_a += await _collect(sub_a, 20, others=others_a)
    seen_b += await _collect(sub_b, 20, others=others_b)
    assert "system.degraded" in others_a
    for seen in (seen_a, seen_b):
        assert [f["offset"] for f in seen] == list(range(1, 71))
    # Readiness follows the broker back within seconds.
    await async_wait_until(lambda: http_json("GET", f"{b.http_url}/readyz")[0] == 200, timeout=10, interval=0.2)
    status, _, body = http_json("GET", f"{b.http_url}/readyz")
    assert (status, body) == (200, {"database": "ok", "broker": "ok"})
    for ws in (sub_a, sub_b, pub):
        await ws.close()


async def test_announce_and_kick_reach_every_server(server_factory, redis: RedisServer) -> None:
    """Security: Unauthorized action (operator side) -> a staff announcement reaches sessions on
    every server, and a kick closes the user's sessions on every server with 4403 kicked."""
    a = server_factory(REDIS_URL=redis.url)
    b = server_factory(REDIS_URL=redis.url)
    staff = await _client(a, "admin")
    bobs = [await _client(a, "bob"), await _client(b, "bob"), await _client(b, "bob")]
    alice = await _client(b)
    ack = await call(staff, {"event": "admin.announce", "id": "ann", "data": {"text": "maintenance at noon"}})
    assert ack["event"] == "ack", ack
    assert ack["data"]["delivered_to"] == 5
    for ws in [staff, *bobs, alice]:  # the sender included, after its ack
        frame = await _wait_for_event(ws, "system.announcement", [])
        assert frame["data"]["text"] == "maintenance at noon"
    ack = await call(staff, {"event": "admin.kick", "id": "kick", "data": {"username": "bob"}})
    assert ack["data"] == {"closed": 3}
    for ws in bobs:
        code, reason, _ = await expect_close(ws)
        assert (code, reason) == (4403, "kicked")
    assert (await call(alice, {"event": "echo", "id": "still", "data": {}}))["ref"] == "still"
    for ws in (staff, alice):
        await ws.close()
