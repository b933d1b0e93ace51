"""Issue 19, batch the bus: a burst published on one server crosses the broker in a few
messages, not one per event, and still reaches the other server's subscribers in order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.e2e.conftest import E2EDatabase, ServerFactory
from tests.e2e.delivery_helpers import client, collect, publish, redis_client, room, subscribe
from tests.e2e.redis_server import RedisServer

PUBLISHERS = 10
EACH = 30
BURST = PUBLISHERS * EACH
# A Redis command each layer's group_send runs once per broker message (and a receive never).
SEND_COMMAND = {"core": "cmdstat_zrange", "pubsub": "cmdstat_publish"}


def _calls(redis: RedisServer, command: str) -> int:
    stats: dict[str, Any] = redis_client(redis).info("commandstats")
    return int(stats.get(command, {}).get("calls", 0))


@pytest.mark.parametrize("layer", ["core", "pubsub"])
async def test_a_burst_crosses_the_broker_in_batches(
    server_factory: ServerFactory, redis: RedisServer, e2e_db: E2EDatabase, layer: str
) -> None:
    """Performance / Message ordering across servers: 10 publishers on A, 30 pipelined publishes
    each, reach B's subscriber complete and in offset order, and cost the broker at most a
    third as many messages as events (one per event before the bus batched its sends): the
    group commit hands A's hub several events per loop iteration, and they travel together."""
    env = {"REDIS_URL": redis.url, "REALTIME_REDIS_LAYER": layer, "REALTIME_RATE_LIMIT": "0"}
    a, b = server_factory(**env), server_factory(**env)
    stream = room()
    sub_b = await client(b, e2e_db)
    await subscribe(sub_b, stream)
    publishers = [await client(a, e2e_db, "bob") for _ in range(PUBLISHERS)]
    texts = [[f"burst {p}.{i}" for i in range(EACH)] for p in range(PUBLISHERS)]
    before = _calls(redis, SEND_COMMAND[layer])
    acked = await asyncio.gather(*(publish(ws, stream, mine) for ws, mine in zip(publishers, texts, strict=True)))
    frames = await collect(sub_b, BURST, 10)
    sends = _calls(redis, SEND_COMMAND[layer]) - before
    assert sorted(offset for offsets in acked for offset in offsets) == list(range(1, BURST + 1))
    assert [f["offset"] for f in frames] == list(range(1, BURST + 1))
    assert sorted(f["data"]["text"] for f in frames) == sorted(text for mine in texts for text in mine)
    assert 1 <= sends <= BURST // 3, f"{sends} broker messages for {BURST} events"
