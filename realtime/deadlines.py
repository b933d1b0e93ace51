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
import weakref
from collections.abc import Callable

logger = logging.getLogger("realtime.deadlines")

RESOLUTION = 0.05


class WheelTimer:
    """A scheduled callback; ``cancel()`` like an asyncio ``TimerHandle``."""

    __slots__ = ("_bucket", "callback")

    def __init__(self, bucket: set[WheelTimer], callback: Callable[[], object]) -> None:
        self._bucket: set[WheelTimer] | None = bucket
        self.callback = callback

    def cancel(self) -> None:
        if self._bucket is not None:
            self._bucket.discard(self)
            self._bucket = None

    def cancelled(self) -> bool:
        return self._bucket is None


class TimerWheel:
    def __init__(self, loop: asyncio.AbstractEventLoop, resolution: float = RESOLUTION) -> None:
        self._loop = loop
        self._resolution = resolution
        self._buckets: dict[int, set[WheelTimer]] = {}

    def call_at(self, when: float, callback: Callable[[], object]) -> WheelTimer:
        tick = math.ceil(when / self._resolution)
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = set()
            self._loop.call_at(tick * self._resolution, self._fire, tick)
        timer = WheelTimer(bucket, callback)
        bucket.add(timer)
        return timer

    def call_later(self, delay: float, callback: Callable[[], object]) -> WheelTimer:
        return self.call_at(self._loop.time() + delay, callback)

    def _fire(self, tick: int) -> None:
        for timer in self._buckets.pop(tick, ()):
            timer._bucket = None
            try:
                timer.callback()
            except Exception:  # one connection's failure must not skip the others' deadlines
                logger.exception("deadline callback failed")

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())


_wheels: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TimerWheel] = weakref.WeakKeyDictionary()


def timer_wheel(loop: asyncio.AbstractEventLoop | None = None) -> TimerWheel:
    """The wheel of ``loop`` (default: the running loop)."""
    loop = loop or asyncio.get_running_loop()
    wheel = _wheels.get(loop)
    if wheel is None:
        wheel = _wheels[loop] = TimerWheel(loop)
    return wheel
