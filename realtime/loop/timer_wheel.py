"""TimerWheel: the long-lived per-connection deadlines (idle, token expiry, keepalive ping).

Every connection has three timers that almost never fire early: an idle deadline pushed
forward by activity, a token-expiry deadline and the next keepalive ping. As event-loop
timer handles they cost ~600 bytes each (handle, libuv timer, context copy); at 10,000
connections that is 18 MB. The wheel groups deadlines into ticks of ``resolution``
seconds, with one loop timer per non-empty tick and a small slotted object per
deadline. A deadline never fires early (it is rounded up to its tick), at most one
tick late; callers that need exactness re-check the clock when they fire, as the
consumer's idle and expiry callbacks do.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from realtime.loop.local import LoopLocal

logger = logging.getLogger("realtime.deadlines")

RESOLUTION = 0.05


class WheelTimer:
    """A scheduled callback; ``cancel()`` like an asyncio ``TimerHandle``."""

    __slots__ = ("_tick", "_wheel", "callback")

    def __init__(self, wheel: TimerWheel, tick: int, callback: Callable[[], object]) -> None:
        self._wheel: TimerWheel | None = wheel
        self._tick = tick
        self.callback = callback

    def cancel(self) -> None:
        if self._wheel is not None:
            self._wheel._discard(self._tick, self)
            self._wheel = None

    def cancelled(self) -> bool:
        return self._wheel is None


class TimerWheel:
    def __init__(self, loop: asyncio.AbstractEventLoop, resolution: float = RESOLUTION) -> None:
        self._loop = loop
        self._resolution = resolution
        # tick -> (its deadlines, the loop timer that fires them). A tick whose deadlines are
        # all cancelled is dropped with its loop timer: a closed connection leaves nothing
        # behind until its (perhaps hour-long) idle deadline would have come.
        self._buckets: dict[int, tuple[set[WheelTimer], asyncio.TimerHandle]] = {}

    def call_at(self, when: float, callback: Callable[[], object]) -> WheelTimer:
        tick = math.ceil(when / self._resolution)
        bucket = self._buckets.get(tick)
        if bucket is None:
            handle = self._loop.call_at(tick * self._resolution, self._fire, tick)
            bucket = self._buckets[tick] = (set(), handle)
        timer = WheelTimer(self, tick, callback)
        bucket[0].add(timer)
        return timer

    def call_later(self, delay: float, callback: Callable[[], object]) -> WheelTimer:
        return self.call_at(self._loop.time() + delay, callback)

    def _discard(self, tick: int, timer: WheelTimer) -> None:
        bucket = self._buckets.get(tick)
        if bucket is None:
            return
        timers, handle = bucket
        timers.discard(timer)
        if not timers:
            del self._buckets[tick]
            handle.cancel()

    def _fire(self, tick: int) -> None:
        bucket = self._buckets.pop(tick, None)
        for timer in bucket[0] if bucket is not None else ():
            timer._wheel = None
            try:
                timer.callback()
            except Exception:  # one connection's failure must not skip the others' deadlines
                logger.exception("deadline callback failed")

    def __len__(self) -> int:
        return sum(len(timers) for timers, _ in self._buckets.values())

    @property
    def ticks(self) -> int:
        """Ticks with at least one deadline (each holds one event-loop timer)."""
        return len(self._buckets)


_wheels: LoopLocal[TimerWheel] = LoopLocal(TimerWheel)


def timer_wheel(loop: asyncio.AbstractEventLoop | None = None) -> TimerWheel:
    """The wheel of ``loop`` (default: the running loop)."""
    return _wheels.get(loop)
