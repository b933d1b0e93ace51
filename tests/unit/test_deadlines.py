"""TimerWheel (realtime/loop/timer_wheel.py): the per-connection deadlines' shared timer."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from realtime.loop.timer_wheel import TimerWheel


async def test_deadlines_fire_never_early_and_at_most_one_tick_late() -> None:
    """Session lifetime: idle and token deadlines fire after, and close to, the time asked for."""
    loop = asyncio.get_running_loop()
    wheel = TimerWheel(loop, resolution=0.02)
    fired: dict[str, float] = {}
    start = loop.time()

    def record(name: str) -> Callable[[], None]:
        return lambda: fired.__setitem__(name, loop.time())

    done = asyncio.Event()
    for name, delay in (("a", 0.05), ("b", 0.01), ("c", 0.1)):
        wheel.call_at(start + delay, record(name))
    wheel.call_at(start + 0.1, done.set)  # the last tick: by then every deadline has fired
    await asyncio.wait_for(done.wait(), 5)
    assert set(fired) == {"a", "b", "c"}
    for name, delay in (("a", 0.05), ("b", 0.01), ("c", 0.1)):
        assert start + delay <= fired[name] < start + delay + 0.02 + 0.03  # one tick, plus scheduling slack
    assert len(wheel) == 0


async def test_cancelled_deadlines_do_not_fire_and_others_in_their_tick_do() -> None:
    """Connection: Disconnect frees the connection's deadlines; other connections' still fire."""
    loop = asyncio.get_running_loop()
    wheel = TimerWheel(loop, resolution=0.02)
    fired: list[int] = []
    timers = [wheel.call_later(0.03, functools.partial(fired.append, i)) for i in range(5)]
    done = asyncio.Event()
    wheel.call_later(0.05, done.set)  # a later tick: the wheel fires ticks in order
    timers[1].cancel()
    timers[3].cancel()
    timers[3].cancel()  # twice is harmless
    assert timers[3].cancelled()
    assert len(wheel) == 4
    await asyncio.wait_for(done.wait(), 5)
    assert sorted(fired) == [0, 2, 4]
    assert timers[0].cancelled()  # a fired timer is spent


async def test_a_failing_callback_does_not_skip_the_rest_of_its_tick() -> None:
    """No input may crash the process: one connection's failing deadline leaves the others' running."""
    loop = asyncio.get_running_loop()
    wheel = TimerWheel(loop, resolution=0.02)
    fired: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    wheel.call_later(0.01, boom)
    done = asyncio.Event()
    wheel.call_later(0.01, lambda: fired.append("after"))
    wheel.call_later(0.01, done.set)
    await asyncio.wait_for(done.wait(), 5)
    assert fired == ["after"]


async def test_cancelled_deadlines_leave_no_tick_or_loop_timer_behind() -> None:
    """Memory growth: a closed connection's far-off deadlines are dropped with their tick at once."""
    loop = asyncio.get_running_loop()
    wheel = TimerWheel(loop, resolution=0.05)
    timers = [wheel.call_later(3600 + i, lambda: None) for i in range(100)]
    assert wheel.ticks == 100
    for timer in timers:
        timer.cancel()
    assert wheel.ticks == 0
    assert len(wheel) == 0
