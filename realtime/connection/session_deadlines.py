"""SessionDeadlines: a connection's idle and token-expiry deadlines (PROTOCOL.md sections 1 and 4).

Both live on the process's :class:`TimerWheel`, so an idle connection holds two small
wheel entries rather than two event-loop timers. Activity only updates ``_last_rx``: the
idle deadline re-arms itself when it fires early. The token deadline first pushes
``auth.expiring`` (30 s ahead, or at half the remaining lifetime for short-lived tokens, so
a client always has time to refresh), then closes with 4401 ``token_expired``;
``auth.refresh`` re-arms it through :meth:`extend_session`.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

from realtime.conf import RealtimeSettings
from realtime.loop.background import spawn
from realtime.loop.timer_wheel import TimerWheel, WheelTimer
from realtime.protocol import CloseReason, render_push

EXPIRY_WARNING_LEAD = 30.0


class SessionDeadlines:
    _loop: asyncio.AbstractEventLoop
    _wheel: TimerWheel
    _settings: RealtimeSettings
    _last_rx: float
    _idle_timer: WheelTimer | None = None
    _expiry_timer: WheelTimer | None = None
    _resume_timer: asyncio.TimerHandle | None = None
    _token_expires_at: datetime | None = None

    # Provided by the consumer.
    async def close_with(self, reason: CloseReason) -> None:
        raise NotImplementedError

    async def send_frame(self, text: str) -> None:
        raise NotImplementedError

    def arm_idle_deadline(self) -> None:
        self._idle_timer = self._wheel.call_at(self._last_rx + self._settings.idle_timeout, self._idle_fired)

    def _idle_fired(self) -> None:
        deadline = self._last_rx + self._settings.idle_timeout
        if self._loop.time() >= deadline:
            self._idle_timer = None
            spawn(self.close_with(CloseReason.IDLE_TIMEOUT))
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
        return (self._token_expires_at - datetime.now(UTC)).total_seconds()

    def _token_expiring(self) -> None:
        remaining = self._seconds_left()
        if remaining > 0:
            spawn(self.send_frame(render_push("auth.expiring", {"expires_in": math.ceil(remaining)})))
        self._expiry_timer = self._wheel.call_later(max(remaining, 0), self._token_expired)

    def _token_expired(self) -> None:
        # The wall clock and the loop's clock may disagree by a tick: wait out the remainder.
        remaining = self._seconds_left()
        if remaining > 0:
            self._expiry_timer = self._wheel.call_later(remaining, self._token_expired)
            return
        self._expiry_timer = None
        spawn(self.close_with(CloseReason.TOKEN_EXPIRED))

    def _cancel_timers(self) -> None:
        for timer in (self._idle_timer, self._expiry_timer, self._resume_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._expiry_timer = self._resume_timer = None
