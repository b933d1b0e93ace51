"""SessionDeadlines (realtime/connection/session_deadlines.py) against a reference, on virtual time.

One fake clock drives both the loop (idle deadline) and the wall clock (token expiry), so a
session of hours runs in milliseconds. Random sequences of client activity, token refreshes
and time passing are applied; after every step the connection must be open exactly while the
reference says so: closed ``idle_timeout`` after the last frame or at the token's expiry
(never before, at most one wheel tick after), warned with ``auth.expiring`` before expiry
(with the lead PROTOCOL.md section 4 gives: 30 s, or half a short token's lifetime).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.connection.session_deadlines import EXPIRY_WARNING_LEAD, SessionDeadlines
from realtime.loop.timer_wheel import TimerWheel
from realtime.protocol import CloseReason
from tests.unit.delivery.fakes import FakeClock, VirtualTimeLoop, run

FAST = settings(max_examples=150, deadline=None, database=None)
TICK = 0.05
IDLE = 60.0
EPSILON = 1e-6


@dataclass
class Owner:
    """The consumer's side: records closes and pushes with the loop time they happened at."""

    loop: VirtualTimeLoop
    last_rx: float
    deadlines: SessionDeadlines | None = None
    closed: list[tuple[CloseReason, float]] = field(default_factory=list)
    warnings: list[tuple[int, float]] = field(default_factory=list)

    async def close_with(self, reason: CloseReason) -> None:
        self.closed.append((reason, self.loop.time()))
        assert self.deadlines is not None
        self.deadlines.cancel()

    async def send_frame(self, text: str) -> None:
        push = json.loads(text)
        assert push["event"] == "auth.expiring"
        self.warnings.append((push["data"]["expires_in"], self.loop.time()))


steps = st.lists(
    st.one_of(
        st.tuples(st.just("activity"), st.just(0.0)),
        st.tuples(st.just("refresh"), st.sampled_from([1.0, 10.0, 45.0, 61.0, 600.0])),
        st.tuples(st.just("advance"), st.sampled_from([0.01, 1.0, 10.0, 29.0, 45.0, 59.99])),
    ),
    max_size=30,
)


@FAST
@given(st.sampled_from([5.0, 40.0, 3600.0]), steps)
def test_deadlines_match_a_reference(lifetime: float, plan: list[tuple[str, float]]) -> None:
    """Session lifetime / Token expiry mid-session: a connection is closed idle_timeout
    IDLE s after its last frame, or 4401 token_expired at its token's expiry, whichever
    comes first, never early and at most one tick late; auth.refresh moves the expiry; before
    expiry the client is warned once per token with auth.expiring (lead: 30 s or half the
    lifetime) carrying the seconds left; after a close nothing else fires and the wheel is empty."""
    clock = FakeClock()

    async def main(loop: VirtualTimeLoop) -> None:
        wheel = TimerWheel(loop, resolution=TICK)
        owner = Owner(loop, loop.time())
        deadlines = owner.deadlines = SessionDeadlines(owner, loop, wheel, IDLE, wall_clock=clock.wall)
        deadlines.arm_idle_deadline()
        expires: datetime = clock.wall() + timedelta(seconds=lifetime)
        deadlines.extend_session(expires)
        warn_at = loop.time() + lifetime - min(EXPIRY_WARNING_LEAD, lifetime / 2)

        def seconds_to(when: datetime) -> float:
            return (when - clock.wall()).total_seconds()

        for kind, value in plan:
            if owner.closed:
                break
            if kind == "activity":
                owner.last_rx = loop.time()
            elif kind == "refresh":
                expires = clock.wall() + timedelta(seconds=value)
                warn_at = loop.time() + value - min(EXPIRY_WARNING_LEAD, value / 2)
                owner.warnings.clear()
                deadlines.extend_session(expires)
            else:
                await loop.advance(value)
            await loop.idle()
            idle_due = owner.last_rx + IDLE
            token_due = loop.time() + seconds_to(expires)
            if owner.closed:
                (reason, at), *more = owner.closed
                assert more == []
                due = idle_due if reason is CloseReason.IDLE_TIMEOUT else token_due
                assert due - EPSILON <= at <= due + TICK + EPSILON, f"{reason} at {at - due:+.3f} s"
                assert at <= min(idle_due, token_due) + TICK + EPSILON  # the first one due wins
                assert len(wheel) == 0
            else:
                now = loop.time()
                assert now < idle_due + TICK + EPSILON, "idle deadline missed"
                assert now < token_due + TICK + EPSILON, "token deadline missed"
            for expires_in, at in owner.warnings:
                assert warn_at - EPSILON <= at <= warn_at + TICK + EPSILON
                assert abs(expires_in - (token_due - at)) < 1  # whole seconds, rounded up
            assert len(owner.warnings) <= 1

    run(main, clock)


def test_a_long_session_is_kept_open_by_activity_and_refreshes() -> None:
    """Session lifetime: a client that sends a frame every 50 s and refreshes its 15-minute token
    every 10 minutes stays connected for 8 hours (virtual), warned never; then, silent, it is
    closed idle_timeout after its last frame."""
    clock = FakeClock()

    async def main(loop: VirtualTimeLoop) -> None:
        wheel = TimerWheel(loop, resolution=TICK)
        owner = Owner(loop, loop.time())
        deadlines = owner.deadlines = SessionDeadlines(owner, loop, wheel, IDLE, wall_clock=clock.wall)
        deadlines.arm_idle_deadline()
        deadlines.extend_session(clock.wall() + timedelta(minutes=15))
        for second in range(0, 8 * 3600, 50):
            await loop.advance(50.0)
            owner.last_rx = loop.time()
            if second % 600 < 50:
                deadlines.extend_session(clock.wall() + timedelta(minutes=15))
        assert owner.closed == []
        assert owner.warnings == []
        last = owner.last_rx
        await loop.advance(IDLE + 1.0)
        assert [reason for reason, _ in owner.closed] == [CloseReason.IDLE_TIMEOUT]
        assert last + IDLE <= owner.closed[0][1] <= last + IDLE + TICK
        assert loop.live_timers() == 0

    run(main, clock)
