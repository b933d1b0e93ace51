"""Bus over a fake channel layer (issue 14): memberships, refresh, flush, error handling; the
batching of sends (issue 19): one broker message per group per loop iteration, bounded."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from realtime.streams.bus import BATCH_TYPE, MAX_BATCH_BYTES, MAX_BATCH_MESSAGES, Bus
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


def unpacked(sent: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """Every message the broker carried, batches opened, in the order sent."""
    out: list[tuple[str, dict[str, Any]]] = []
    for group, message in sent:
        items = message["messages"] if message.get("type") == BATCH_TYPE else [message]
        out += [(group, item) for item in items]
    return out


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
    assert [m["i"] for _, m in unpacked(layer.sent)] == list(range(50))
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
        assert await bus.flush(1.0)
        bus.send("g", {"i": 2})
        assert await bus.flush(1.0)
    assert health == []
    assert [m["i"] for _, m in unpacked(layer.sent)] == [2]
    assert any("unexpected error sending" in r.getMessage() and r.exc_info for r in caplog.records)
    await bus.close()


class Unserializable:
    """What msgpack cannot encode: a bug in a message of our own."""


class PickyLayer(FakeLayer):
    """Refuses, as a serializer would, any broker message holding an :class:`Unserializable`."""

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        items = message["messages"] if message.get("type") == BATCH_TYPE else [message]
        if any(isinstance(value, Unserializable) for item in items for value in item.values()):
            raise TypeError("can not serialize 'Unserializable' object")
        await super().group_send(group, message)


async def test_sends_of_one_iteration_travel_as_one_broker_message_per_group() -> None:
    """Issue 19, batch the bus: 30 messages to two groups, sent in one loop iteration, cost two
    broker messages (one per group), each carrying its group's messages in the order sent."""
    layer = FakeLayer()
    bus, _ = _bus(layer)
    await bus.join("a")
    for i in range(30):
        bus.send("a" if i % 3 else "b", {"type": "fanout.event", "i": i})
    assert await bus.flush(1.0)
    assert [group for group, _ in layer.sent] == ["b", "a"]
    assert all(message["type"] == BATCH_TYPE for _, message in layer.sent)
    for group in "ab":
        expected = [i for i in range(30) if (group == "a") == bool(i % 3)]
        assert [m["i"] for g, m in unpacked(layer.sent) if g == group] == expected
    await bus.close()


async def test_a_lone_message_travels_as_itself() -> None:
    """Issue 19: a message alone in its iteration is sent as it is (no batch envelope), as
    realtime/publishing.py sends from outside the server."""
    layer = FakeLayer()
    bus, _ = _bus(layer)
    await bus.join("g")
    bus.send("g", {"type": "fanout.event", "i": 1})
    assert await bus.flush(1.0)
    assert layer.sent == [("g", {"type": "fanout.event", "i": 1})]
    await bus.close()


async def test_messages_sent_while_a_send_is_in_flight_follow_in_order() -> None:
    """Ordering: messages queued while the broker takes a batch go in the next one, after it."""
    layer = FakeLayer()
    bus, _ = _bus(layer)
    await bus.join("g")
    for i in range(200):
        bus.send("g", {"i": i})
        if i % 7 == 0:
            await asyncio.sleep(0)  # let the sender take what is queued and start its round trip
    assert await bus.flush(1.0)
    assert 1 < len(layer.sent) < 200
    assert [m["i"] for _, m in unpacked(layer.sent)] == list(range(200))
    await bus.close()


async def test_a_batch_is_bounded_in_messages_and_bytes() -> None:
    """Limits: a burst larger than one batch may hold is split, in order, into batches of at most
    MAX_BATCH_MESSAGES messages and about MAX_BATCH_BYTES bytes; a message larger than that
    travels alone."""
    layer = FakeLayer()
    bus, _ = _bus(layer)
    await bus.join("g")
    count = 2 * MAX_BATCH_MESSAGES + 5
    for i in range(count):
        bus.send("g", {"type": "fanout.event", "i": i, "frame": "x"})
    assert await bus.flush(1.0)
    assert [len(m["messages"]) for _, m in layer.sent] == [MAX_BATCH_MESSAGES, MAX_BATCH_MESSAGES, 5]
    layer.sent.clear()
    frame = "y" * (MAX_BATCH_BYTES // 8)
    for i in range(20):
        bus.send("g", {"type": "fanout.event", "i": i, "frame": frame})
    bus.send("g", {"type": "fanout.event", "i": 20, "frame": "z" * (2 * MAX_BATCH_BYTES)})
    assert await bus.flush(1.0)
    sizes = [len(m["messages"]) if m.get("type") == BATCH_TYPE else 1 for _, m in layer.sent]
    assert sizes == [7, 7, 6, 1]
    assert [m["i"] for _, m in unpacked(layer.sent)] == list(range(21))
    await bus.close()


async def test_a_bad_message_in_a_batch_costs_only_itself(caplog: pytest.LogCaptureFixture) -> None:
    """Partial message (of our own): a batch the layer cannot send because of one bad message is
    sent again message by message: the bad one is logged and dropped, the others go, in order."""
    layer = PickyLayer()
    bus, health = _bus(layer)
    await bus.join("g")
    with caplog.at_level(logging.ERROR, logger="realtime.bus"):
        bus.send("g", {"i": 0})
        bus.send("g", {"i": 1, "bad": Unserializable()})
        bus.send("g", {"i": 2})
        assert await bus.flush(1.0)
    assert health == []
    assert [m["i"] for _, m in unpacked(layer.sent)] == [0, 2]
    assert any("unexpected error sending" in r.getMessage() and r.exc_info for r in caplog.records)
    await bus.close()


async def test_a_broker_error_drops_the_queued_batches_and_recovers() -> None:
    """Broker failure: a send failing mid-burst marks the bus down once and drops every queued
    message (their events are in the log); nothing is sent while down."""
    layer = FakeLayer()
    bus, health = _bus(layer)
    await bus.join("a")
    layer.fail_send = RedisConnectionError("gone")
    for i in range(10):
        bus.send("a" if i % 2 else "b", {"i": i})
    await bus.flush(1.0)
    assert health == [False]
    assert layer.sent == []
    bus.send("a", {"i": 99})
    await asyncio.sleep(0.01)
    assert layer.sent == []
    await bus.close()


async def test_a_received_batch_is_handed_over_message_by_message() -> None:
    """Issue 19, receiving side: a batch from another process is unpacked and every message is
    handed to the handler in order; a plain message (realtime/publishing.py sends those) is
    handed over as it is; a handler failing on one message does not cost the others."""
    layer = FakeLayer()
    got: list[int] = []

    def handler(message: dict[str, Any]) -> None:
        if message["i"] == 2:
            raise KeyError("stream")
        got.append(message["i"])

    bus = Bus(layer, handler, lambda healthy: None)
    await bus.join("g")
    layer.inbox.put_nowait({"type": BATCH_TYPE, "messages": [{"i": i} for i in range(5)]})
    layer.inbox.put_nowait({"type": "fanout.event", "i": 5})
    for _ in range(10):
        await asyncio.sleep(0)
    assert got == [0, 1, 3, 4, 5]
    await bus.close()
