"""TimerWheel (realtime/loop/timer_wheel.py) against a sorted-list reference, on virtual time.

Random sequences of add / cancel / advance (and callbacks that add or cancel timers while
their tick fires) are applied to a wheel and to a plain list of (deadline, id); after every
step the wheel must agree: a deadline fires never early and at most one tick late, in tick
order, exactly once, cancelled ones never; the wheel holds exactly the live deadlines, one
event-loop timer per non-empty tick, and nothing once every deadline is spent.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.loop.timer_wheel import TimerWheel, WheelTimer
from tests.unit.delivery.fakes import VirtualTimeLoop, run

FAST = settings(max_examples=150, deadline=None, database=None)
EPSILON = 1e-9

resolutions = st.sampled_from([0.05, 0.02, 0.1, 1.0])
delays = st.floats(min_value=0.0, max_value=3.0, allow_nan=False)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), delays),
        st.tuples(st.just("add_nested"), delays),  # its callback adds another deadline
        st.tuples(st.just("cancel"), st.integers(min_value=0, max_value=40)),
        st.tuples(st.just("cancel_from_callback"), st.integers(min_value=0, max_value=40)),
        st.tuples(st.just("advance"), st.floats(min_value=0.0, max_value=1.5, allow_nan=False)),
        st.tuples(st.just("fail"), delays),  # its callback raises
    ),
    max_size=60,
)


@dataclass
class Model:
    """The reference: every deadline ever set, which are live, and when each fired."""

    resolution: float
    deadlines: dict[int, float] = field(default_factory=dict)
    live: set[int] = field(default_factory=set)
    fired: dict[int, float] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)


def _check(model: Model, wheel: TimerWheel, loop: VirtualTimeLoop, timers: dict[int, WheelTimer]) -> None:
    now = loop.time()
    res = model.resolution
    for ident, fired_at in model.fired.items():
        deadline = model.deadlines[ident]
        assert fired_at >= deadline - EPSILON, f"{ident} fired early"
        assert fired_at <= deadline + res + EPSILON, f"{ident} fired more than one tick late"
    for ident in model.live:
        assert ident not in model.fired
        assert model.deadlines[ident] + res > now - EPSILON, f"{ident} is overdue by more than a tick"
        assert not timers[ident].cancelled()
    # In deadline order, give or take the tick: a later tick never fires before an earlier one.
    fired_deadlines = [model.deadlines[i] for i in model.order]
    for earlier, later in itertools.pairwise(fired_deadlines):
        assert later > earlier - res - EPSILON
    assert len(wheel) == len(model.live)
    assert wheel.ticks <= len(model.live)
    assert loop.live_timers() == wheel.ticks  # one loop timer per non-empty tick, none left behind


@FAST
@given(resolutions, operations)
def test_wheel_matches_a_sorted_list_reference(resolution: float, ops: list[tuple[str, float]]) -> None:
    """Session lifetime / Disconnect (deadlines): under any add/cancel/advance sequence the wheel
    fires exactly the live deadlines, never early, at most one tick late, in tick order, each once;
    a cancelled deadline never fires; a failing callback does not skip the others of its tick; a
    callback may add or cancel deadlines; no loop timer outlives its tick's last deadline."""

    async def main(loop: VirtualTimeLoop) -> None:
        wheel = TimerWheel(loop, resolution=resolution)
        model = Model(resolution)
        timers: dict[int, WheelTimer] = {}

        def add(delay: float, nested: float | None = None, cancel: int | None = None, fail: bool = False) -> None:
            ident = len(model.deadlines)
            model.deadlines[ident] = loop.time() + delay
            model.live.add(ident)

            def fire() -> None:
                assert ident in model.live, f"{ident} fired but was cancelled or spent"
                model.live.discard(ident)
                model.fired[ident] = loop.time()
                model.order.append(ident)
                if nested is not None:
                    add(nested)
                if cancel is not None and cancel in model.live:
                    timers[cancel].cancel()
                    model.live.discard(cancel)
                if fail:
                    raise RuntimeError("a connection's deadline failed")

            timers[ident] = wheel.call_at(model.deadlines[ident], fire)

        for kind, value in ops:
            if kind == "add":
                add(value)
            elif kind == "add_nested":
                add(value, nested=value / 2)
            elif kind == "fail":
                add(value, fail=True)
            elif kind == "cancel_from_callback":
                add(0.0, cancel=int(value))
            elif kind == "cancel":
                ident = int(value)
                if ident in timers:
                    timers[ident].cancel()
                    timers[ident].cancel()  # twice is harmless
                    model.live.discard(ident)
                    assert timers[ident].cancelled()
            else:
                await loop.advance(value)
            await loop.idle()
            _check(model, wheel, loop, timers)
        # Everything left fires within the longest delay (a nested one adds half of it) plus a tick.
        await loop.advance(4.5 + 2 * resolution)
        _check(model, wheel, loop, timers)
        assert not model.live
        assert len(wheel) == 0
        assert loop.live_timers() == 0

    run(main)


def test_a_thousand_connections_share_a_few_loop_timers() -> None:
    """Performance (memory per connection): 1,000 idle deadlines within one second cost at most
    one loop timer per tick (20 at 50 ms), and cancelling them all leaves none."""

    async def main(loop: VirtualTimeLoop) -> None:
        wheel = TimerWheel(loop, resolution=0.05)
        timers = [wheel.call_later(0.001 * i, lambda: None) for i in range(1000)]
        assert loop.live_timers() == wheel.ticks <= 21
        for timer in timers:
            timer.cancel()
        assert loop.live_timers() == 0
        assert len(wheel) == 0

    run(main)


def test_an_hour_long_deadline_fires_after_an_hour_of_virtual_time() -> None:
    """Session lifetime: an idle deadline an hour away fires at the hour, within one tick, and a
    rearm from its callback (the consumer's "fired early, wait out the rest") works."""

    async def main(loop: VirtualTimeLoop) -> None:
        wheel = TimerWheel(loop)
        start = loop.time()
        fired: list[float] = []

        def rearm() -> None:
            fired.append(loop.time())
            if len(fired) == 1:
                wheel.call_at(start + 3600.0 + 10.0, rearm)

        wheel.call_at(start + 3600.0, rearm)
        await loop.advance(3599.9)
        assert fired == []
        await loop.advance(20.0)
        assert len(fired) == 2
        assert 3600.0 <= fired[0] - start <= 3600.05 + EPSILON
        assert 3610.0 <= fired[1] - start <= 3610.05 + EPSILON
        assert asyncio.get_running_loop() is loop

    run(main)
