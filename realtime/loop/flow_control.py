"""Flow control (PROTOCOL.md section 9): the bounded send queue and the rate limiter. Pure: no I/O."""

from __future__ import annotations

from collections import deque
from enum import Enum


class SendQueue:
    """Frames waiting for one connection's transport, bounded by count and by bytes.

    ``put`` refuses (returns False) when either bound would be passed: the caller then
    closes the connection with 1013 ``slow_consumer`` and the client resumes from its
    offsets, so nothing is lost. A broadcast puts the same ``str`` object in many
    queues; only its length is counted per queue.
    """

    __slots__ = ("_frames", "bytes", "high_water", "length", "max_bytes", "max_frames")

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        # Most connections never queue anything: the deque exists only while frames wait.
        self._frames: deque[str] | None = None
        self.length = 0  # a plain attribute: the fan-out's direct-send check reads it per frame
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.bytes = 0
        self.high_water = 0

    def put(self, frame: str) -> bool:
        size = len(frame)
        if self.length >= self.max_frames or (self.length and self.bytes + size > self.max_bytes):
            return False
        if self._frames is None:
            self._frames = deque()
        self._frames.append(frame)
        self.length += 1
        self.bytes += size
        if self.length > self.high_water:
            self.high_water = self.length
        return True

    def pop(self) -> str:
        if self._frames is None:
            raise IndexError("pop from an empty SendQueue")
        frame = self._frames.popleft()
        self.length -= 1
        self.bytes -= len(frame)
        if not self.length:
            self._frames = None
        return frame

    def clear(self) -> None:
        self._frames = None
        self.length = 0
        self.bytes = 0

    def has_room(self, frames: int) -> bool:
        """Whether ``frames`` more frames fit below the frame bound (used to pace replays)."""
        return self.length + frames <= self.max_frames

    def __len__(self) -> int:
        return self.length

    def __bool__(self) -> bool:
        return self.length > 0


class RateVerdict(Enum):
    ACCEPT = "accept"
    ACCEPT_AND_PAUSE = "accept_and_pause"  # process it, and tell the client to pause
    REJECT = "reject"  # past the burst: answer rate_limited, do not process
    CLOSE = "close"  # kept flooding after the pause: close 4429


class RateLimiter:
    """A token bucket per connection: ``rate`` messages/s sustained, bursts of ``2 * rate``.

    The client is asked to pause (``flow.pause``) when it has used half of its burst, so a
    client that honours the pause never runs dry and never sees ``rate_limited``. Past
    the burst, messages are refused; ``rate`` refusals while paused (at least 10) mean the
    client ignores the pause and the connection is closed. Time is passed in, so the
    limiter is pure and testable without a clock.
    """

    __slots__ = ("_last", "capacity", "flood_limit", "paused", "rate", "refused", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = 2.0 * rate
        self.tokens = self.capacity
        self.flood_limit = max(10, int(rate))
        self.paused = False
        self.refused = 0
        self._last = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
        self._last = now

    def take(self, now: float) -> RateVerdict:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            if not self.paused and self.tokens < self.capacity / 2:
                self.paused = True
                return RateVerdict.ACCEPT_AND_PAUSE
            return RateVerdict.ACCEPT
        self.refused += 1
        return RateVerdict.CLOSE if self.refused >= self.flood_limit else RateVerdict.REJECT

    def resume_delay(self, now: float) -> float:
        """Seconds until the bucket is back to three quarters full, when the pause may end."""
        self._refill(now)
        return max(0.0, (0.75 * self.capacity - self.tokens) / self.rate)

    def try_resume(self, now: float) -> bool:
        if self.resume_delay(now) > 0.0:
            return False
        self.paused = False
        self.refused = 0
        return True
