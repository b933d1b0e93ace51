"""Bus over a fake channel layer (issue 14): memberships, refresh, flush, error handling."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from realtime.streams.bus import Bus
from tests.unit.delivery.fakes import VirtualTimeLoop, run


class FakeLayer:
    """Group memberships as the broker sees them; each operation yields to the loop first, as
    a network round trip does, so concurrent operations interleave."""

    def __init__(self) -> None:
        self.members: dict[str, set[str]] = {}
        self.adds: list[str] = []
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.fail_send: BaseException | None = None
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def new_channel(self, prefix: str = "specific") -> str:
        return f"{prefix}x!1"

    async def group_add(self, group: str, channel: str) -> None:
        await asyncio.sleep(0.001)
        self.adds.append(group)
        self.members.setdefault(group, set()).add(channel)

    async def group_discard(self, group: str, channel: str) -> None:
        await asyncio.sleep(0)  # a shorter trip: a racing leave lands after the join
        self.members.get(group, set()).discard(channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        if self.fail_send is not None:
            error, self.fail_send = self.fail_send, None
            raise error
        self.sent.append((group, message))

    async def receive(self, channel: str) -> dict[str, Any]:
        return await self.inbox.get()


def _bus(layer: FakeLayer, refresh: float | None = None) -> tuple[Bus, list[bool]]:
    health: list[bool] = []
    return Bus(layer, lambda message: None, health.append, refresh_interval=refresh), health


def test_a_leave_then_join_keeps_the_membership() -> None:
    """Concurrency: Race conditions -> a re-subscribe's leave and join of one group are applied in
    order: the member stays in the group. (On virtual time: every round trip in flight has landed
    once 50 ms have passed; tests/unit/delivery/test_bus_model.py randomizes this.)"""

    async def main(loop: VirtualTimeLoop) -> None:
        layer = FakeLayer()
        bus, _ = _bus(layer)
        await bus.join("g")
        for _ in range(5):
            bus.leave("g")
            await bus.join("g")
        await loop.advance(0.05)
        assert layer.members["g"] == {"hub.x!1"}
        bus.leave("g")
        await loop.advance(0.05)
        assert layer.members["g"] == set()
        await bus.close()

    run(main)


def test_memberships_are_refreshed_before_the_group_expiry() -> None:
    """Broker failure (a week of uptime): every joined group is joined again each refresh interval."""

    async def main(loop: VirtualTimeLoop) -> None:
        layer = FakeLayer()
        bus, _ = _bus(layer, refresh=0.02)
        await bus.join("a")
        await bus.join("b")
        await loop.advance(0.065)  # three refresh intervals (virtual time)
        assert layer.adds.count("a") >= 3
        assert layer.adds.count("b") >= 3
        await bus.close()

    run(main)


async def test_flush_waits_for_queued_sends() -> None:
    """Server restart: a flush at shutdown hands every queued message to the broker."""
    layer = FakeLayer()
    bus, _ = _bus(layer)
    await bus.join("g")
    for i in range(50):
        bus.send("g", {"i": i})
    assert await bus.flush(1.0)
    assert [m["i"] for _, m in layer.sent] == list(range(50))
    await bus.close()


async def test_a_broker_error_marks_the_bus_down(caplog: pytest.LogCaptureFixture) -> None:
    """Broker failure: a Redis connection error on send reports the bus unhealthy."""
    layer = FakeLayer()
    bus, health = _bus(layer)
    await bus.join("g")
    layer.fail_send = RedisConnectionError("gone")
    bus.send("g", {"i": 1})
    await bus.flush(1.0)
    assert health == [False]
    await bus.close()


async def test_a_bug_is_logged_and_does_not_stop_the_sender(caplog: pytest.LogCaptureFixture) -> None:
    """Partial message (of our own): an unexpected error sending one message is logged with its
    traceback; it is not a broker outage, and the next messages still go."""
    layer = FakeLayer()
    bus, health = _bus(layer)
    await bus.join("g")
    layer.fail_send = TypeError("cannot serialize")
    with caplog.at_level(logging.ERROR, logger="realtime.bus"):
        bus.send("g", {"i": 1})
        bus.send("g", {"i": 2})
        assert await bus.flush(1.0)
    assert health == []
    assert [m["i"] for _, m in layer.sent] == [2]
    assert any("unexpected error sending" in r.getMessage() and r.exc_info for r in caplog.records)
    await bus.close()
