"""SessionDeadlines: a connection's idle and token-expiry deadlines (PROTOCOL.md sections 1 and 4).

The consumer owns one (``self.deadlines``) and is its :class:`DeadlineOwner`. Both deadlines
live on the process's :class:`TimerWheel`, so an idle connection holds two small wheel
entries rather than two event-loop timers. Activity only updates the owner's ``last_rx``:
the idle deadline reads it when it fires and re-arms itself if it fired early. The token
deadline first pushes ``auth.expiring`` (30 s ahead, or at half the remaining lifetime for
short-lived tokens, so a client always has time to refresh), then closes with 4401
``token_expired``; ``auth.refresh`` re-arms it through :meth:`SessionDeadlines.extend_session`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from realtime.loop.background import spawn
from realtime.loop.timer_wheel import TimerWheel, WheelTimer
from realtime.protocol import CloseReason, render_push

EXPIRY_WARNING_LEAD = 30.0


def utc_now() -> datetime:
    return datetime.now(UTC)


class DeadlineOwner(Protocol):
    """What the deadlines need from their connection."""

    @property
    def last_rx(self) -> float:
        """The loop time of the last frame received."""

    async def close_with(self, reason: CloseReason) -> None: ...

    async def send_frame(self, text: str) -> None: ...


class SessionDeadlines:
    __slots__ = (
        "_expiry_timer",
        "_idle_timeout",
        "_idle_timer",
        "_loop",
        "_owner",
        "_token_expires_at",
        "_wall_clock",
        "_wheel",
    )

    def __init__(
        self,
        owner: DeadlineOwner,
        loop: asyncio.AbstractEventLoop,
        wheel: TimerWheel,
        idle_timeout: float,
        wall_clock: Callable[[], datetime] = utc_now,  # tokens expire by the wall clock; tests pass a fake
    ) -> None:
        self._owner = owner
        self._wall_clock = wall_clock
        self._loop = loop
        self._wheel = wheel
        self._idle_timeout = idle_timeout
        self._idle_timer: WheelTimer | None = None
        self._expiry_timer: WheelTimer | None = None
        self._token_expires_at: datetime | None = None

    def arm_idle_deadline(self) -> None:
        self._idle_timer = self._wheel.call_at(self._owner.last_rx + self._idle_timeout, self._idle_fired)

    def _idle_fired(self) -> None:
        deadline = self._owner.last_rx + self._idle_timeout
        if self._loop.time() >= deadline:
            self._idle_timer = None
            spawn(self._owner.close_with(CloseReason.IDLE_TIMEOUT))
        else:
            self._idle_timer = self._wheel.call_at(deadline, self._idle_fired)

    def extend_session(self, expires_at: datetime) -> None:
        """(Re)arm the token deadline: ``auth.expiring`` first, then close 4401 ``token_expired``."""
        self._token_expires_at = expires_at
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        remaining = self._seconds_left()
        lead = min(EXPIRY_WARNING_LEAD, remaining / 2)
        self._expiry_timer = self._wheel.call_later(remaining - lead, self._token_expiring)

    def _seconds_left(self) -> float:
        assert self._token_expires_at is not None
        return (self._token_expires_at - self._wall_clock()).total_seconds()

    def _token_expiring(self) -> None:
        remaining = self._seconds_left()
        if remaining > 0:
            spawn(self._owner.send_frame(render_push("auth.expiring", {"expires_in": math.ceil(remaining)})))
        self._expiry_timer = self._wheel.call_later(max(remaining, 0), self._token_expired)

    def _token_expired(self) -> None:
        # The wall clock and the loop's clock may disagree by a tick: wait out the remainder.
        remaining = self._seconds_left()
        if remaining > 0:
            self._expiry_timer = self._wheel.call_later(remaining, self._token_expired)
            return
        self._expiry_timer = None
        spawn(self._owner.close_with(CloseReason.TOKEN_EXPIRED))

    def cancel(self) -> None:
        """Drop both deadlines (the connection is closing); harmless twice."""
        for timer in (self._idle_timer, self._expiry_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._expiry_timer = None
