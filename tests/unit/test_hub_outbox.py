"""Outbox room for replays (issue 14): any number of waiters, room counted in frames and bytes."""

from __future__ import annotations

import asyncio

from realtime.connection.frame_outbox import Outbox
from realtime.loop.flow_control import SendQueue


class Transport:
    """A send that blocks until the test lets frames through (a client that does not read)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.gate = asyncio.Event()

    async def send(self, frame: str) -> None:
        await self.gate.wait()
        self.sent.append(frame)


def _outbox(frames: int = 10, size: int = 10_000) -> tuple[Outbox, Transport, list[str]]:
    transport = Transport()
    overflowed: list[str] = []
    outbox = Outbox(transport.send, SendQueue(frames, size), lambda: overflowed.append("1013"))
    return outbox, transport, overflowed


async def test_two_replays_waiting_for_room_both_wake() -> None:
    """Reconnect: two replays on one connection wait for room at once; when the client reads,
    both go on (one waiter slot left the first waiting forever)."""
    outbox, transport, overflowed = _outbox(frames=10)
    for i in range(6):
        assert outbox.push(f"frame {i}")  # one in flight, half the queue waiting: replays must wait
    await asyncio.sleep(0)
    first = asyncio.ensure_future(outbox.wait_for_room(1))
    second = asyncio.ensure_future(outbox.wait_for_room(1))
    await asyncio.sleep(0)
    assert not first.done()
    assert not second.done()
    transport.gate.set()
    async with asyncio.timeout(1):
        assert await first
        assert await second
    assert overflowed == []


async def test_room_counts_bytes_and_keeps_half_the_queue_free() -> None:
    """Backpressure: Slow consumer -> a replay frame waits until it fits in half the byte bound
    (other pushes and replies keep the other half); a frame larger than that waits for an
    empty queue, which always takes it."""
    outbox, transport, overflowed = _outbox(frames=100, size=10_000)
    assert outbox.push("in flight")
    await asyncio.sleep(0)
    assert outbox.push("x" * 3_000)
    assert outbox.has_room(1, 1_000)
    assert not outbox.has_room(1, 3_000)
    huge = asyncio.ensure_future(outbox.wait_for_room(1, 50_000))
    await asyncio.sleep(0)
    assert not huge.done()
    transport.gate.set()
    async with asyncio.timeout(1):
        assert await huge
    assert outbox.push("y" * 50_000)
    assert overflowed == []


async def test_closing_releases_every_waiter() -> None:
    """Disconnect: a closed connection's waiting replays end (False) instead of hanging."""
    outbox, _, _ = _outbox(frames=4)
    for i in range(3):
        outbox.push(f"frame {i}")
    waiters = [asyncio.ensure_future(outbox.wait_for_room(1)) for _ in range(3)]
    await asyncio.sleep(0)
    outbox.close()
    async with asyncio.timeout(1):
        assert [await w for w in waiters] == [False, False, False]
