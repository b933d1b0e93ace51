"""Bus (realtime/streams/bus.py) over a fake channel layer with group expiry, on virtual time.

The fake layer behaves as the core Redis layer does for memberships: each operation takes a
round trip (a random latency, so concurrent operations overtake each other), and a member is
forgotten ``group_expiry`` seconds after it was last added. Covered: whatever the interleaving
of joins and leaves, the broker ends with exactly the groups the process still follows (joins
and leaves of one group are applied in the order asked); a followed group never expires, however
long the process runs, because the bus re-joins every quarter of the expiry; a left group is
not brought back by a refresh; after a broker outage every followed group is joined again.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from redis.exceptions import ConnectionError as RedisConnectionError

from realtime.streams.bus import Bus
from tests.unit.delivery.fakes import VirtualTimeLoop, run

FAST = settings(max_examples=100, deadline=None, database=None)
CHANNEL = "hub.fake!1"


class ExpiringLayer:
    """Memberships with expiry, as the broker keeps them; every call is a round trip of random length."""

    def __init__(self, loop: VirtualTimeLoop, expiry: float, seed: int, max_latency: float = 0.05) -> None:
        self.loop = loop
        self.group_expiry = expiry
        self.added: dict[str, dict[str, float]] = {}  # group -> channel -> when last added
        self.rng = random.Random(seed)
        self.max_latency = max_latency
        self.down = False
        self.adds = 0

    async def _trip(self) -> None:
        await asyncio.sleep(self.rng.uniform(0.0, self.max_latency))
        if self.down:
            raise RedisConnectionError("broker unavailable")

    def members(self, group: str) -> set[str]:
        now = self.loop.time()
        return {c for c, at in self.added.get(group, {}).items() if now - at < self.group_expiry}

    def followed(self) -> set[str]:
        return {group for group in self.added if self.members(group)}

    async def new_channel(self, prefix: str = "specific") -> str:
        await self._trip()
        return CHANNEL

    async def group_add(self, group: str, channel: str) -> None:
        await self._trip()
        self.adds += 1
        self.added.setdefault(group, {})[channel] = self.loop.time()

    async def group_discard(self, group: str, channel: str) -> None:
        await self._trip()
        self.added.get(group, {}).pop(channel, None)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self._trip()

    async def receive(self, channel: str) -> dict[str, Any]:
        await self.loop.create_future()  # nothing is ever sent to us here
        raise AssertionError("unreachable")


operations = st.lists(
    st.one_of(
        st.tuples(st.just("join"), st.sampled_from("abc")),
        st.tuples(st.just("leave"), st.sampled_from("abc")),
        st.tuples(st.just("advance"), st.sampled_from([0.0, 0.001, 0.01, 0.03, 0.1, 1.0])),
    ),
    max_size=40,
)


@FAST
@given(operations, st.integers(0, 2**32 - 1))
def test_memberships_match_the_groups_followed(ops: list[tuple[str, Any]], seed: int) -> None:
    """Concurrency: Race conditions (subscribe/unsubscribe churn) -> under any interleaving of
    joins and leaves with random broker latencies, once quiet the broker holds exactly the groups
    the process still follows; a re-subscribe's join never loses to the earlier leave."""

    async def main(loop: VirtualTimeLoop) -> None:
        layer = ExpiringLayer(loop, expiry=4.0, seed=seed)
        health: list[bool] = []
        bus = Bus(layer, lambda message: None, health.append, refresh_interval=1.0)
        followed: set[str] = set()
        joins: list[asyncio.Task[None]] = []
        for kind, value in ops:
            if kind == "join":
                followed.add(value)
                joins.append(loop.create_task(bus.join(value)))
                await asyncio.sleep(0)  # the join is asked for when its task starts
            elif kind == "leave":
                followed.discard(value)
                bus.leave(value)
            else:
                await loop.advance(value)
            assert bus.groups == followed
        await loop.advance(0.5)  # every round trip in flight lands
        assert layer.followed() == followed
        await loop.advance(10.0)  # a refresh never revives a left group; followed ones never expire
        assert layer.followed() == followed
        assert health == []
        assert all(join.done() for join in joins)
        await bus.close()

    run(main)


def test_followed_groups_never_expire_and_left_ones_stay_left() -> None:
    """Broker failure (a week of uptime): with group_expiry 4 s and a re-join each quarter of it,
    at every moment of 10 minutes every followed group is a live member; a group left halfway is
    gone at once and not brought back by a refresh; the refresh costs one add per group per second."""

    async def main(loop: VirtualTimeLoop) -> None:
        layer = ExpiringLayer(loop, expiry=4.0, seed=7)
        bus = Bus(layer, lambda message: None, lambda healthy: None, refresh_interval=1.0)
        groups = [f"g{i}" for i in range(10)]
        for group in groups:
            await bus.join(group)
        start = loop.time()
        for tick in range(6000):
            await loop.advance(0.1)
            alive = layer.followed()
            assert alive == set(groups), f"at {loop.time() - start:.1f} s"
            if tick == 3000:
                for group in groups[5:]:
                    bus.leave(group)
                await loop.advance(0.1)
                groups = groups[:5]
        assert 5 * 550 <= layer.adds <= 10 * 610
        await bus.close()

    run(main)


def test_after_a_broker_outage_every_group_is_joined_again() -> None:
    """Broker failure: a send failing marks the bus down (reported once); while down, joins and
    leaves only change what the process follows; when the broker answers again the bus reports
    itself up and the broker holds exactly the followed groups, although it forgot them all."""

    async def main(loop: VirtualTimeLoop) -> None:
        layer = ExpiringLayer(loop, expiry=4.0, seed=3)
        health: list[bool] = []
        bus = Bus(layer, lambda message: None, health.append, refresh_interval=1.0)
        for group in "abc":
            await bus.join(group)
        layer.down = True
        bus.send("a", {"type": "x"})
        await loop.advance(0.1)
        assert health == [False]
        layer.added.clear()  # a restarted broker has forgotten every group
        bus.leave("b")
        await bus.join("d")
        await loop.advance(20.0)
        assert health == [False]  # still down: the recovery keeps probing, with backoff
        layer.down = False
        await loop.advance(6.0)  # at most the longest recovery delay
        assert health == [False, True]
        assert layer.followed() == {"a", "c", "d"}
        await loop.advance(30.0)
        assert layer.followed() == {"a", "c", "d"}
        await bus.close()

    run(main)
