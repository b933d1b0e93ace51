"""Outbox (realtime/connection/frame_outbox.py) against a reference model, on virtual time.

A fake transport decides when frames leave: ``send_now`` succeeds only while its buffer has
room, and ``send`` blocks until the client "reads". Random sequences of pushes, replies,
replay waits, reads and buffer changes are applied; after every step the loop is let run
until idle and the outbox must agree with the model: what left is exactly what was accepted,
in the order it was handed over (direct writes never overtake queued ones), the queue never
passes its bounds, an overflow calls ``on_overflow`` once and stops everything, and a replay
waiting for room wakes exactly when half the queue is free (never missed, never early).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.connection.frame_outbox import Outbox
from realtime.loop.flow_control import SendQueue
from tests.unit.delivery.fakes import VirtualTimeLoop, run

FAST = settings(max_examples=200, deadline=None, database=None)


@dataclass
class FakeTransport:
    """The server's side of one connection: a buffer with room or not, and a client that reads."""

    writable: bool = True  # send_now succeeds only while the transport's buffer has room
    credits: int = 0  # frames the blocked ``send`` may still let through
    out: list[str] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    failing: bool = False

    def send_now(self, frame: str) -> bool:
        if not self.writable:
            return False
        self.out.append(frame)
        return True

    async def send(self, frame: str) -> None:
        while not self.credits:
            if self.failing:
                raise ConnectionResetError("the peer is gone")
            self.wakeup.clear()
            await self.wakeup.wait()
        self.credits -= 1
        self.out.append(frame)

    def read(self, frames: int) -> None:
        self.credits += frames
        self.wakeup.set()

    def fail(self) -> None:
        self.failing = True
        self.wakeup.set()


operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(1, 30)),
        st.tuples(st.just("reply"), st.integers(1, 30)),
        st.tuples(st.just("wait_for_room"), st.integers(1, 30)),
        st.tuples(st.just("read"), st.integers(1, 5)),
        st.tuples(st.just("writable"), st.booleans()),
    ),
    max_size=50,
)


@FAST
@given(
    st.integers(min_value=1, max_value=8),
    st.integers(min_value=10, max_value=120),
    st.booleans(),
    operations,
)
def test_outbox_matches_a_reference_model(
    max_frames: int, max_bytes: int, direct: bool, ops: list[tuple[str, int]]
) -> None:
    """Backpressure / Ordering (outbox): frames leave once each, in hand-over order, whether written
    directly (send_now, awaited reply) or queued; the queue stays within its frame and byte bounds;
    the first push past them calls on_overflow exactly once, closes the outbox and drops the rest;
    wait_for_room wakes when the frames fit in half the queue (by frames and bytes), never before,
    never missed, and with False once closed."""

    async def main(loop: VirtualTimeLoop) -> None:
        transport = FakeTransport()
        overflows: list[int] = []
        outbox = Outbox(
            transport.send,
            SendQueue(max_frames, max_bytes),
            lambda: overflows.append(len(transport.out)),
            send_now=transport.send_now if direct else None,
        )
        replies: list[asyncio.Task[None]] = []
        accepted: list[str] = []  # the model: every frame the outbox took, in hand-over order
        overflowed = False
        waiters: list[tuple[int, int, asyncio.Task[tuple[bool, bool, bool]]]] = []

        async def wait(frames: int, size: int) -> tuple[bool, bool, bool]:
            ok = await outbox.wait_for_room(frames, size)
            return ok, outbox.has_room(frames, size), outbox.closed

        for number, (kind, value) in enumerate(ops):
            frame = f"{number:03d}" + "x" * (int(value) if kind in ("push", "reply") else 0)
            was_closed, overflow_calls = outbox.closed, len(overflows)
            took: bool | None = None
            if kind == "push":
                took = outbox.push(frame)
            elif kind == "reply":
                replies.append(loop.create_task(outbox.reply(frame)))  # handed over when its task starts
            elif kind == "wait_for_room":
                waiters.append((1, int(value), loop.create_task(wait(1, int(value)))))
            elif kind == "read":
                transport.read(int(value))
            else:
                transport.writable = bool(value)
            await loop.idle()
            if kind in ("push", "reply"):
                if len(overflows) > overflow_calls:
                    overflowed = True  # refused while open: the queue was full
                elif not was_closed:
                    accepted.append(frame)
                if took is not None:
                    assert took == (frame in accepted)

            queue = outbox.queue
            assert transport.out == accepted[: len(transport.out)], "a frame left out of order, twice or unasked"
            assert queue.length <= max_frames
            assert queue.length <= 1 or queue.bytes <= max_bytes
            assert overflows == ([overflows[0]] if overflowed else []), "on_overflow is called exactly once"
            if overflowed:
                assert outbox.closed
                assert queue.length == 0
            else:
                assert not outbox.closed
                # Everything accepted is either out, in flight (at most one), or queued.
                assert len(accepted) - len(transport.out) - queue.length in (0, 1)
            for frames, size, task in waiters:
                if task.done():
                    ok, room, closed = task.result()
                    assert ok == (not closed)
                    assert room or closed, "a replay woke before half the queue was free"
                else:
                    assert not outbox.closed, "closing must release every waiting replay"
                    assert not outbox.has_room(frames, size), "a replay missed its wakeup"
        # The client reads everything: whatever was accepted leaves, in order, unless closed.
        transport.writable = True
        transport.read(len(ops) + 1)
        await loop.idle()
        if not outbox.closed:
            assert transport.out == accepted
            assert all(task.done() and task.result()[0] for _, _, task in waiters)
        outbox.close()
        await loop.idle()
        assert all(task.done() for _, _, task in waiters)
        transport.fail()
        await loop.idle()

    run(main)


def test_a_direct_reply_waits_behind_queued_pushes() -> None:
    """Ordering (outbox): while pushes wait for a slow client, a reply does not take the direct
    path past them; it queues behind, and all leave in hand-over order."""

    async def main(loop: VirtualTimeLoop) -> None:
        transport = FakeTransport(writable=False)
        outbox = Outbox(transport.send, SendQueue(10, 1000), lambda: None, send_now=transport.send_now)
        assert outbox.push("p1")
        assert outbox.push("p2")
        transport.writable = True  # the buffer has room again: send_now would succeed now
        reply = loop.create_task(outbox.reply("r1"))
        await loop.idle()
        assert reply.done()
        assert transport.out == []
        transport.read(3)
        await loop.idle()
        assert transport.out == ["p1", "p2", "r1"]
        assert outbox.push("p3")  # idle again: the direct path
        assert transport.out == ["p1", "p2", "r1", "p3"]

    run(main)


def test_overflow_calls_on_overflow_once_and_a_lost_peer_closes_quietly() -> None:
    """Backpressure: Slow consumer -> the first push past the bound closes the outbox and calls
    on_overflow once (1013 slow_consumer); later pushes return False without calling it again;
    a send failing with a connection error closes without on_overflow."""

    async def main(loop: VirtualTimeLoop) -> None:
        transport = FakeTransport()
        calls: list[str] = []
        outbox = Outbox(transport.send, SendQueue(2, 1000), lambda: calls.append("1013"))
        assert outbox.push("a")  # in flight once the writer runs
        await loop.idle()
        assert outbox.push("b")
        assert outbox.push("c")
        assert not outbox.push("d")
        assert not outbox.push("e")
        assert calls == ["1013"]
        assert outbox.closed
        lost = FakeTransport()
        gone = Outbox(lost.send, SendQueue(4, 1000), lambda: calls.append("again"))
        assert gone.push("x")
        await loop.idle()
        lost.fail()
        await loop.idle()
        assert gone.closed
        assert calls == ["1013"]

    run(main)
