"""SessionDeadlines (realtime/connection/session_deadlines.py): a composed object with an owner.

The owner here is a small real implementation of ``DeadlineOwner``, standing in for the
consumer: it records what the deadlines asked of it. Time is virtual (one fake clock for
the loop and the wall clock), so the deadlines are exact and the tests never wait.
"""

from __future__ import annotations

import json
from datetime import timedelta

from realtime.connection.session_deadlines import SessionDeadlines
from realtime.loop.timer_wheel import TimerWheel
from realtime.protocol import CloseReason
from tests.unit.delivery.fakes import FakeClock, VirtualTimeLoop, run

TICK = 0.01


class Owner:
    def __init__(self, loop: VirtualTimeLoop) -> None:
        self.last_rx = loop.time()
        self.closed: list[CloseReason] = []
        self.frames: list[dict[str, object]] = []

    async def close_with(self, reason: CloseReason) -> None:
        self.closed.append(reason)

    async def send_frame(self, text: str) -> None:
        self.frames.append(json.loads(text))


def test_idle_deadline_closes_idle_timeout_after_silence_and_activity_postpones_it() -> None:
    """Session lifetime: idle_timeout closes a silent connection; a frame received moves the deadline."""
    clock = FakeClock()

    async def main(loop: VirtualTimeLoop) -> None:
        owner = Owner(loop)
        deadlines = SessionDeadlines(owner, loop, TimerWheel(loop, resolution=TICK), 0.08, wall_clock=clock.wall)
        deadlines.arm_idle_deadline()
        await loop.advance(0.05)
        owner.last_rx = loop.time()  # activity: only the owner's float changes
        await loop.advance(0.05)
        assert owner.closed == []  # 0.1 s after arming, but only 0.05 s after the last frame
        await loop.advance(0.1)
        assert owner.closed == [CloseReason.IDLE_TIMEOUT]

    run(main, clock)


def test_token_deadline_warns_with_auth_expiring_then_closes_token_expired() -> None:
    """Token expiry mid-session: auth.expiring first (half the lifetime of a short token), then 4401."""
    clock = FakeClock()

    async def main(loop: VirtualTimeLoop) -> None:
        owner = Owner(loop)
        deadlines = SessionDeadlines(owner, loop, TimerWheel(loop, resolution=TICK), 60, wall_clock=clock.wall)
        deadlines.extend_session(clock.wall() + timedelta(seconds=0.2))
        await loop.advance(0.15)
        assert [frame["event"] for frame in owner.frames] == ["auth.expiring"]
        assert owner.closed == []
        await loop.advance(0.15)
        assert owner.closed == [CloseReason.TOKEN_EXPIRED]

    run(main, clock)


def test_extend_session_moves_the_token_deadline_and_cancel_drops_both() -> None:
    """auth.refresh re-arms the expiry; a closing connection leaves no deadline behind."""
    clock = FakeClock()

    async def main(loop: VirtualTimeLoop) -> None:
        owner = Owner(loop)
        wheel = TimerWheel(loop, resolution=TICK)
        deadlines = SessionDeadlines(owner, loop, wheel, 0.05, wall_clock=clock.wall)
        deadlines.arm_idle_deadline()
        deadlines.extend_session(clock.wall() + timedelta(seconds=0.05))
        deadlines.extend_session(clock.wall() + timedelta(hours=1))
        owner.last_rx = loop.time() + 3600  # keep the idle deadline out of the way
        await loop.advance(0.12)
        assert owner.closed == []
        assert owner.frames == []
        deadlines.cancel()
        deadlines.cancel()
        assert len(wheel) == 0

    run(main, clock)
