"""CoalescingTransport and WriteFlusher (realtime/server/wire.py) against a reference model.

A fake transport records every ``write`` (each one a system call in production) and applies
backpressure to its protocol as a real one does: ``pause_writing`` past its high-water mark,
``resume_writing`` once the client has read it down below the low one. Covered: the bytes
that leave are the bytes written, in order, per connection; everything written during one loop
iteration leaves in one write, or sooner once more than 64 KiB is buffered (exactly as a
plain reference computes); the flush past 64 KiB lets backpressure pause a sender within the
iteration, so the buffer stays bounded; close flushes, abort drops.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.server.wire import COALESCE_LIMIT, CoalescingTransport, Gate, WriteFlusher
from tests.unit.delivery.fakes import VirtualTimeLoop, run

FAST = settings(max_examples=150, deadline=None, database=None)
HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024


class FakeTransport(asyncio.Transport):
    """Records writes; pauses its protocol (a :class:`Gate`) past the high-water mark."""

    def __init__(self, gate: Gate | None = None) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.buffered = 0
        self.peak = 0
        self.gate = gate
        self.closing = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closing, "a write after close"
        self.writes.append(bytes(data))
        self.buffered += len(data)
        self.peak = max(self.peak, self.buffered)
        if self.gate is not None and self.buffered > HIGH_WATER and self.gate.is_set():
            self.gate.clear()  # the protocol's pause_writing

    def client_reads(self, size: int) -> None:
        self.buffered = max(0, self.buffered - size)
        if self.gate is not None and self.buffered <= LOW_WATER and not self.gate.is_set():
            self.gate.set()  # the protocol's resume_writing

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def get_write_buffer_size(self) -> int:
        return self.buffered


@dataclass
class Reference:
    """The coalescing rule, plainly: buffer per connection, out past the limit or at iteration end."""

    buffers: dict[int, list[bytes]] = field(default_factory=dict)
    writes: dict[int, list[bytes]] = field(default_factory=dict)

    def write(self, conn: int, data: bytes) -> None:
        buffer = self.buffers.setdefault(conn, [])
        buffer.append(data)
        if sum(map(len, buffer)) > COALESCE_LIMIT:
            self.flush(conn)

    def flush(self, conn: int) -> None:
        buffer = self.buffers.pop(conn, [])
        if buffer:
            self.writes.setdefault(conn, []).append(b"".join(buffer))

    def end_of_iteration(self) -> None:
        for conn in list(self.buffers):
            self.flush(conn)


chunk_sizes = st.sampled_from([1, 10, 100, 1_000, 20_000, 40_000, 70_000])
iterations = st.lists(
    st.lists(st.tuples(st.integers(0, 2), chunk_sizes), max_size=12),
    min_size=1,
    max_size=8,
)


@FAST
@given(iterations)
def test_writes_match_the_coalescing_reference(plan: list[list[tuple[int, int]]]) -> None:
    """Performance (one system call per connection per iteration) / Ordering: for writes to three
    connections over several loop iterations, every transport write is exactly what the reference
    predicts: one per connection per iteration, or an early one as soon as more than 64 KiB is
    buffered; the bytes out equal the bytes in, in order."""

    async def main(loop: VirtualTimeLoop) -> None:
        flusher = WriteFlusher(loop)
        transports = [FakeTransport() for _ in range(3)]
        conns = [CoalescingTransport(t, flusher) for t in transports]
        reference = Reference()
        sent: dict[int, list[bytes]] = {}
        counter = 0
        for iteration in plan:
            for conn, size in iteration:
                counter += 1
                data = (b"%d:" % counter) + b"x" * size
                sent.setdefault(conn, []).append(data)
                conns[conn].write(data)
                reference.write(conn, data)
                # Past the limit the write went out at once, within this iteration.
                assert transports[conn].writes == reference.writes.get(conn, [])
            await loop.idle()
            reference.end_of_iteration()
            for conn, transport in enumerate(transports):
                assert transport.writes == reference.writes.get(conn, [])
                assert b"".join(transport.writes) == b"".join(sent.get(conn, []))

    run(main)


@FAST
@given(
    st.lists(st.sampled_from([100, 5_000, 30_000, 60_000]), min_size=1, max_size=60),
    st.sampled_from([1_000, 16_000, 100_000]),
)
def test_backpressure_pauses_the_sender_and_bounds_the_buffer(chunks: list[int], read_rate: int) -> None:
    """Backpressure: Slow consumer -> a sender that waits on the protocol's flow-control gate before
    each write is paused within the iteration the buffer passes the high-water mark (the coalescer
    flushes past 64 KiB instead of holding it to the end of the iteration), resumed once the
    client reads it down; the transport's buffer never holds more than high water plus the
    coalescing limit plus one chunk; every byte arrives once, in order."""

    async def main(loop: VirtualTimeLoop) -> None:
        gate = Gate()
        transport = FakeTransport(gate)
        conn = CoalescingTransport(transport, WriteFlusher(loop))
        expected = b"".join(b"%d:" % i + b"y" * size for i, size in enumerate(chunks))

        async def sender() -> None:
            for i, size in enumerate(chunks):
                await gate.wait()
                conn.write(b"%d:" % i + b"y" * size)

        async def client() -> None:
            received = 0
            while received < len(expected):
                await asyncio.sleep(0.001)
                before = transport.buffered
                transport.client_reads(read_rate)
                received += before - transport.buffered

        await asyncio.gather(sender(), client())
        assert b"".join(transport.writes) == expected
        assert transport.peak <= HIGH_WATER + COALESCE_LIMIT + max(chunks) + 16
        assert transport.buffered == 0
        assert gate.is_set()

    run(main)


def test_close_flushes_and_abort_drops() -> None:
    """Disconnect: a close sends what is buffered first; an abort drops it; a closing transport is
    not written to (the flusher skips it)."""

    async def main(loop: VirtualTimeLoop) -> None:
        flusher = WriteFlusher(loop)
        closed, aborted, gone = FakeTransport(), FakeTransport(), FakeTransport()
        a, b, c = (CoalescingTransport(t, flusher) for t in (closed, aborted, gone))
        for conn in (a, b, c):
            conn.write(b"bye")
        a.close()
        b.abort()
        gone.closing = True
        await loop.idle()
        assert closed.writes == [b"bye"]
        assert closed.closing
        assert aborted.writes == []
        assert aborted.aborted
        assert gone.writes == []
        assert c.is_closing()
        assert c.get_write_buffer_size() == 0  # other attributes pass through to the transport

    run(main)
