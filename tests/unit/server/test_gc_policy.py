"""Issue 19, first bullet: the server's garbage-collector policy (``realtime/server/gc_policy.py``).

After start-up everything loaded is frozen out of the collector's reach and the automatic
full collection is left to a schedule that collects what is young and freezes it again;
``REALTIME_GC_FREEZE=0`` keeps CPython's defaults; ``REALTIME_GC_TRACE`` installs the
callback that records every collection, and nothing is installed without it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from realtime.conf import RealtimeSettings, SettingsError
from realtime.server.gc_policy import (
    FREEZE_AT,
    FREEZE_ENV,
    RECLAIM_MIN_RELEASED,
    THRESHOLDS,
    TRACE_ENV,
    CountedSet,
    GcPolicy,
    GcTrace,
)


@pytest.fixture(autouse=True)
def _restore_collector() -> Iterator[None]:
    """The policy changes this process's collector: put it back as it was."""
    threshold, callbacks = gc.get_threshold(), list(gc.callbacks)
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    gc.callbacks[:] = callbacks


def _trace_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class Holder:
    """A container the collector tracks."""

    def __init__(self) -> None:
        self.me: Holder | None = None


def _tracked(obj: object) -> bool:
    """In one of the three generations the collector walks (frozen objects are in none)."""
    return any(o is obj for o in gc.get_objects())


def test_startup_freezes_what_is_loaded_and_leaves_full_collections_to_the_schedule(tmp_path: Path) -> None:
    """Issue 19: ``gc.collect(); gc.freeze()`` after start-up; thresholds set; both in the trace."""
    loaded = Holder()
    assert _tracked(loaded)
    policy = GcPolicy(True, GcTrace(str(tmp_path / "gc.jsonl")).install())
    policy.apply()
    assert not _tracked(loaded)  # frozen: no collection walks it again
    assert gc.get_freeze_count() > 1000
    assert gc.get_threshold() == THRESHOLDS
    policy.stop()
    lines = _trace_lines(tmp_path / "gc.jsonl")
    applied = next(line for line in lines if line.get("event") == "policy")
    assert applied["freeze"] is True
    assert applied["frozen"] > 1000
    assert applied["threshold"] == list(THRESHOLDS)
    assert any(line.get("gen") == 2 and line["why"] == "startup" for line in lines)
    assert lines[-1]["event"] == "stopped"


def test_schedule_collects_young_cycles_and_freezes_survivors_once_they_pile_up(tmp_path: Path) -> None:
    """Issue 19: "gc.freeze() ... at intervals": each tick collects what is young (a garbage
    cycle goes); a few survivors stay where the next tick walks them, FREEZE_AT of them are
    frozen."""
    trace = GcTrace(str(tmp_path / "gc.jsonl")).install()
    policy = GcPolicy(True, trace, interval=0.02)
    policy.apply()
    few = Holder()
    cycle = Holder()
    cycle.me = cycle
    gone = weakref.ref(cycle)
    del cycle
    loop = asyncio.new_event_loop()
    try:
        policy.start(loop)
        loop.run_until_complete(asyncio.sleep(0.1))
        assert gone() is None
        assert _tracked(few)  # under FREEZE_AT: not frozen
        pile = [Holder() for _ in range(FREEZE_AT)]
        loop.run_until_complete(asyncio.sleep(0.1))
        assert not _tracked(pile[0])
        assert not _tracked(few)
        policy.census()
        policy.stop()
    finally:
        loop.close()
    assert policy.ticks >= 4
    assert policy.freezes >= 1
    scheduled = [line for line in _trace_lines(tmp_path / "gc.jsonl") if line.get("why") == "schedule"]
    assert scheduled
    assert all(line["gen"] == 2 for line in scheduled)
    assert sum(line["collected"] for line in scheduled) >= 1  # the cycle
    census = next(line for line in _trace_lines(tmp_path / "gc.jsonl") if line.get("event") == "census")
    assert census["frozen"] > 1000
    assert census["tracked"] < FREEZE_AT


def test_released_connections_reclaim_frozen_cycles_once_they_outnumber_open_ones(tmp_path: Path) -> None:
    """A closed connection's cycles were frozen with it: once twice as many application tasks
    ended as are running (and at least RECLAIM_MIN_RELEASED), one tick unfreezes and
    collects everything, then freezes again."""
    trace = GcTrace(str(tmp_path / "gc.jsonl")).install()
    policy = GcPolicy(True, trace, interval=3600)
    policy.apply()
    tasks: CountedSet[object] = CountedSet(set())
    policy.tasks = tasks  # type: ignore[assignment]  # plain objects stand in for tasks
    old = Holder()
    old.me = old  # a long-lived connection's state: a cycle, frozen while it is open
    gone = weakref.ref(old)
    loop = asyncio.new_event_loop()
    try:
        policy.start(loop)
        gc.freeze()  # as a tick does once FREEZE_AT objects survived
        del old
        policy.tick()
        assert gone() is not None  # frozen garbage: no scheduled collection reaches it
        kept = [object() for _ in range(10)]
        for task in kept:
            tasks.add(task)
        for _ in range(RECLAIM_MIN_RELEASED):
            task = object()
            tasks.add(task)
            tasks.discard(task)
        tasks.discard(object())  # not in the set: not counted
        assert tasks.released == RECLAIM_MIN_RELEASED
        assert len(tasks) == len(kept)
        assert policy.reclaim_due()
        policy.tick()
        assert gone() is None
        assert policy.reclaims == 1
        assert not policy.reclaim_due()
        assert gc.get_freeze_count() > 1000  # frozen again
        policy.stop()
    finally:
        loop.close()
    assert any(line.get("why") == "reclaim" for line in _trace_lines(tmp_path / "gc.jsonl"))


def test_freeze_off_keeps_cpythons_collector() -> None:
    """``REALTIME_GC_FREEZE=0``: nothing frozen, thresholds untouched, no ticks (the load test's baseline)."""
    assert RealtimeSettings.from_env({FREEZE_ENV: "0"}).gc_freeze is False
    assert RealtimeSettings.from_env({}).gc_freeze is True
    before = gc.get_threshold()
    policy = GcPolicy.from_settings(RealtimeSettings.from_env({FREEZE_ENV: "0"}))
    policy.apply()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
    loop = asyncio.new_event_loop()
    try:
        policy.start(loop)
        assert policy.handle is None
    finally:
        loop.close()


def test_freeze_setting_rejects_other_values() -> None:
    with pytest.raises(SettingsError, match=FREEZE_ENV):
        RealtimeSettings.from_env({FREEZE_ENV: "yes"})


def test_trace_is_installed_only_when_asked(tmp_path: Path) -> None:
    """The gc callback exists only with ``REALTIME_GC_TRACE`` set."""
    callbacks = len(gc.callbacks)
    assert GcPolicy.from_settings(RealtimeSettings.from_env({})).trace is None
    assert len(gc.callbacks) == callbacks
    trace = GcPolicy.from_settings(RealtimeSettings.from_env({TRACE_ENV: str(tmp_path / "gc.jsonl")})).trace
    assert trace is not None
    assert trace in gc.callbacks
    gc.collect(0)
    trace.close()
    assert trace not in gc.callbacks
    lines = _trace_lines(tmp_path / "gc.jsonl")
    assert lines
    assert all(line["ms"] >= 0 and line["why"] == "automatic" for line in lines)
    assert any(line["gen"] == 0 for line in lines)


def test_ticks_slow_down_while_no_application_task_starts_and_come_back_when_one_does() -> None:
    """Issue 19, second bullet: at 10,000 connections echoing, the 0.1 s tick's full collection
    of what is young was 19 % of the server's samples (the messages in flight live ~0.4 s
    there, so every tick walks them again). While no application task (connection or
    request) starts, the next tick comes ``quiet_interval`` later; a task starting brings it
    back to ``interval`` from then, so a ramp that begins in a quiet period is still frozen
    in small steps."""
    policy = GcPolicy(True, interval=0.01, quiet_interval=3600)
    policy.apply()
    state = SimpleNamespace(tasks=set())
    loop = asyncio.new_event_loop()
    try:
        policy.start(loop, state)  # type: ignore[arg-type]  # only its task set is used
        tasks = state.tasks
        assert isinstance(tasks, CountedSet)
        loop.run_until_complete(asyncio.sleep(0.1))
        assert policy.ticks == 1  # nothing started: the next tick is an hour away
        assert policy.handle is not None
        assert policy.handle.when() - loop.time() > 3000
        tasks.add(object())
        loop.run_until_complete(asyncio.sleep(0.1))
        # one tick 0.01 s after the task started (busy: a task started), one more 0.01 s
        # later (nothing started since): quiet again
        assert policy.ticks == 3
        assert policy.handle is not None
        assert policy.handle.when() - loop.time() > 3000
        tasks.add(object())
        tasks.add(object())
        loop.run_until_complete(asyncio.sleep(0.1))
        assert policy.ticks == 5
        policy.stop()
    finally:
        loop.close()
