"""A fake clock and an event loop that runs on it, for the delivery core's deterministic tests.

:class:`VirtualTimeLoop` is a real ``asyncio.SelectorEventLoop`` (every callback, task and
future behaves as in production) whose ``time()`` reads a :class:`FakeClock`. Its selector
never sleeps: when nothing is ready and the next timer is ``t`` seconds away, it moves the
clock forward by ``t`` instead of waiting. So time passes only when every callback due at
the current instant has run, timers fire in ``call_at`` order, and a test of a 30-second
deadline takes microseconds. ``await loop.idle()`` returns once everything runnable at the
current instant has run, without moving the clock: the "run until quiet" step of a model test.

A loop with nothing scheduled and nothing to wake it would wait forever; this one raises
:class:`Deadlock` instead, so a test whose future is never resolved fails at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import selectors
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, TypeVarTuple

from realtime.streams.event_log import CommittedEvent, StreamInfo

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# The fake wall clock's origin; the monotonic clock starts away from zero to catch code that
# confuses "no deadline" with "time zero".
WALL_ORIGIN = datetime(2030, 1, 1, tzinfo=UTC)
MONOTONIC_ORIGIN = 1000.0
# Real seconds the selector waits on real file descriptors before deciding nothing will come.
DEADLOCK_AFTER = 0.5


class Deadlock(RuntimeError):
    """Nothing is scheduled and nothing can wake the loop: the awaited thing never happens."""


class FakeClock:
    """A monotonic clock and a wall clock that move only when told to (both by the same amount)."""

    def __init__(self, start: float = MONOTONIC_ORIGIN) -> None:
        self.start = start
        self.now = start

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return WALL_ORIGIN + timedelta(seconds=self.now - self.start)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self.now += seconds


class WarpSelector(selectors.SelectSelector):
    """A selector that, instead of sleeping until the next timer, moves the clock to it."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.idle_waiters: list[asyncio.Future[None]] = []

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout == 0:
            return super().select(0)  # callbacks are ready: not idle
        if self.idle_waiters:
            waiters, self.idle_waiters = self.idle_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            return super().select(0)
        if timeout is not None:
            self.clock.advance(timeout)
            return super().select(0)
        events = super().select(DEADLOCK_AFTER)  # only another thread could wake us now
        if not events:
            raise Deadlock("nothing is scheduled: the loop would wait forever")
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock is a :class:`FakeClock` that jumps to the next timer when idle.

    It also counts its live timer handles (``live_timers``), so a test can check that a
    component leaves no loop timer behind.
    """

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.warp = WarpSelector(self.clock)
        self.pending_timers: dict[int, asyncio.TimerHandle] = {}
        self.timer_ids = 0
        super().__init__(self.warp)

    def time(self) -> float:
        return self.clock.now

    def call_at(
        self,
        when: float,
        callback: Callable[[*Ts], object],
        *args: *Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        self.timer_ids += 1
        ident = self.timer_ids
        handle = super().call_at(when, self._run_timer, ident, callback, args, context=context)
        self.pending_timers[ident] = handle
        return handle

    def _run_timer(self, ident: int, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        del self.pending_timers[ident]
        callback(*args)

    def live_timers(self) -> int:
        """Timer handles neither cancelled nor run yet."""
        self.pending_timers = {i: h for i, h in self.pending_timers.items() if not h.cancelled()}
        return len(self.pending_timers)

    async def idle(self) -> None:
        """Return once every callback runnable at the current instant has run (the clock stays)."""
        waiter = self.create_future()
        self.warp.idle_waiters.append(waiter)
        await waiter

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass, running every timer due meanwhile, then settle."""
        await asyncio.sleep(seconds)
        await self.idle()


def run(main: Callable[[VirtualTimeLoop], Coroutine[Any, Any, T]], clock: FakeClock | None = None) -> T:
    """Run ``main(loop)`` to completion on a fresh :class:`VirtualTimeLoop`, then close the loop."""
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(clock)) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, VirtualTimeLoop)
        return runner.run(main(loop))


async def settled(loop: VirtualTimeLoop, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` and then let the loop settle at the instant it finished."""
    result = await awaitable
    await loop.idle()
    return result


class MemoryLog:
    """The event log in memory, with the hub's ``LogReader`` interface; each read is a round trip
    of a random (seeded) virtual duration, so reads interleave with bus messages and ticks."""

    def __init__(self, seed: int = 0, max_latency: float = 0.0) -> None:
        self.events: dict[str, dict[int, CommittedEvent]] = {}
        self.heads_: dict[str, int] = {}
        self.deleted: dict[str, set[int]] = {}
        self.rng = random.Random(seed)
        self.max_latency = max_latency
        self.reads = 0

    async def _trip(self) -> None:
        if self.max_latency:
            await asyncio.sleep(self.rng.uniform(0.0, self.max_latency))

    def commit(self, stream: str, text: str = "x") -> CommittedEvent:
        offset = self.heads_.get(stream, 0) + 1
        self.heads_[stream] = offset
        event = CommittedEvent(stream, offset, "message.new", {"text": text})
        self.events.setdefault(stream, {})[offset] = event
        return event

    def delete(self, stream: str, offset: int) -> None:
        """An operator deletes a committed event (a hole the hub must step over)."""
        if self.events.get(stream, {}).pop(offset, None) is not None:
            self.deleted.setdefault(stream, set()).add(offset)

    def head(self, stream: str) -> int:
        return self.heads_.get(stream, 0)

    async def read_since(self, stream: str, since: int, limit: int) -> list[CommittedEvent]:
        self.reads += 1
        await self._trip()
        log = self.events.get(stream, {})
        return [log[o] for o in sorted(log) if o > since][:limit]

    async def stream_info(self, stream: str) -> StreamInfo:
        await self._trip()
        return StreamInfo(stream, "epoch1", self.head(stream), 0)

    async def heads(self, names: list[str]) -> dict[str, int]:
        await self._trip()
        return {name: self.heads_[name] for name in names if name in self.heads_}
