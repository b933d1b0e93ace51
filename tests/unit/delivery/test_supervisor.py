"""Supervisor (realtime/server/workers.py) with fake worker processes and a fake clock.

The supervisor's decisions are driven here one event at a time, as its loop would after
``wait()`` returns: a worker reports ready, a worker exits (with a status, before or after it
was ready), a stop signal arrives, time passes. Worker processes are fakes (no interpreter is
spawned); their ready channels are the real pipes the supervisor creates. Covered: restart
backoff doubling up to ``MAX_RESTART_DELAY`` and its reset once a worker is ready, slot reuse
(a replacement keeps its slot's server id), a start-up failure stopping the service, and the
shutdown timeout killing what is left; plus a reference model over random event sequences.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.server.workers import (
    MAX_RESTART_DELAY,
    READY,
    SHUTDOWN_TIMEOUT,
    Supervisor,
    Worker,
    WorkerSpec,
    worker_server_ids,
)
from tests.unit.delivery.fakes import FakeClock

FAST = settings(max_examples=100, deadline=None, database=None)


class FakeProcess:
    """A worker process that does only what the test tells it; pid None, so nothing is signalled."""

    pid: int | None = None
    sentinel = -1

    def __init__(self, spec: WorkerSpec, channel: Connection) -> None:
        self.spec = spec
        # The supervisor closes its copy of the worker's end after spawning, as a real spawn does.
        self.channel = Connection(os.dup(channel.fileno()))
        self.exitcode: int | None = None
        self.killed = False

    def is_alive(self) -> bool:
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        assert timeout is not None or self.exitcode is not None, "join() of a live process would block forever"

    def kill(self) -> None:
        self.killed = True
        self.exitcode = -signal.SIGKILL

    def report_ready(self) -> None:
        self.channel.send_bytes(READY)

    def exit(self, code: int) -> None:
        self.exitcode = code
        self.channel.close()


@dataclass
class Harness:
    """A supervisor of ``count`` fake workers and the events its loop would dispatch."""

    supervisor: Supervisor
    clock: FakeClock
    spawned: list[FakeProcess] = field(default_factory=list)

    def worker(self, index: int) -> Worker:
        return self.supervisor.workers[index]

    def process(self, index: int) -> FakeProcess:
        process = self.worker(index).process
        assert isinstance(process, FakeProcess)
        return process

    def ready(self, index: int) -> None:
        self.process(index).report_ready()
        self.supervisor._on_ready(self.worker(index))
        self.step()

    def exit(self, index: int, code: int) -> None:
        worker = self.worker(index)
        self.process(index).exit(code)
        self.supervisor._on_exit(worker)
        self.step()

    def signal(self, sig: int) -> None:
        self.supervisor._on_signal(sig, None)
        self.step()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.step()

    def step(self) -> None:
        """What the loop does after every wakeup."""
        self.supervisor._handle_signals()
        self.supervisor._restart_due()
        self.supervisor._kill_overdue()


@pytest.fixture
def harness() -> Iterator[Harness]:
    with socket.socket() as sock:
        yield _harness(sock, 3)


def _harness(sock: socket.socket, count: int) -> Harness:
    clock = FakeClock()
    spawned: list[FakeProcess] = []

    def spawn(spec: WorkerSpec, _sock: socket.socket, channel: Connection) -> FakeProcess:
        process = FakeProcess(spec, channel)
        spawned.append(process)
        return process

    supervisor = Supervisor(sock, port=0, count=count, ready_line="READY", clock=clock.monotonic, spawn=spawn)
    supervisor.base = "host:0"
    supervisor.specs = [WorkerSpec(k, sid) for k, sid in enumerate(worker_server_ids("host:0", count), start=1)]
    for spec in supervisor.specs:
        supervisor._start(spec)
    return Harness(supervisor, clock, spawned)


def _announce(harness: Harness) -> None:
    for index in list(harness.supervisor.workers):
        harness.ready(index)
    assert harness.supervisor.announced


def test_restart_backoff_doubles_up_to_the_maximum_and_resets_when_ready(harness: Harness) -> None:
    """Server restart (workers): a worker that keeps dying before it is ready is restarted after
    1, 2, 4, 8, 16, then 30 s (MAX_RESTART_DELAY) and no sooner; once a replacement is ready the
    backoff starts over; a worker that dies after it was ready is replaced at once."""
    sup = harness.supervisor
    _announce(harness)
    harness.exit(2, 1)  # it was ready: replaced at once
    assert 2 in sup.workers
    delays = []
    for _ in range(7):
        harness.exit(2, 1)
        assert 2 not in sup.workers
        delay = sup.restart_at[2] - harness.clock.now
        delays.append(delay)
        assert sup._timeout() == delay  # the loop sleeps exactly until the restart is due
        harness.advance(delay - 0.01)
        assert 2 not in sup.workers, "restarted before its backoff"
        harness.advance(0.01)
        assert 2 in sup.workers
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, MAX_RESTART_DELAY, MAX_RESTART_DELAY]
    harness.ready(2)
    spawned = len(harness.spawned)
    harness.exit(2, 1)  # ready, then crashed: no backoff
    assert 2 in sup.workers
    assert len(harness.spawned) == spawned + 1
    harness.exit(2, 1)  # the replacement died before it was ready: the backoff starts over
    assert sup.restart_at[2] - harness.clock.now == 1.0
    assert sup.failures == []


def test_a_replacement_takes_over_its_slot(harness: Harness) -> None:
    """Server restart (workers): worker k's replacement is server BASE/k again, in slot k, with a
    fresh ready channel; the other slots are untouched."""
    sup = harness.supervisor
    _announce(harness)
    others = {k: sup.workers[k] for k in (1, 3)}
    harness.exit(2, 0)  # stopped on its own (SIGTERM to its pid): a one-worker restart
    harness.step()
    replacement = sup.workers[2]
    assert replacement.spec == WorkerSpec(2, "host:0/2")
    assert not replacement.ready
    assert harness.spawned[-1] is replacement.process
    assert len(harness.spawned) == 4
    assert {k: sup.workers[k] for k in (1, 3)} == others
    harness.ready(2)
    assert replacement.ready


def test_a_worker_that_fails_before_the_service_came_up_stops_it(harness: Harness) -> None:
    """Server start: a worker dying before the ready line is a failed start, reported (no retry
    behind a launcher's back); the others are stopped and nothing is restarted."""
    sup = harness.supervisor
    harness.ready(1)
    harness.exit(3, 2)
    assert sup.stopping
    assert sup.failures == ["worker host:0/3 exited with status 2 before it was ready"]
    assert sup.restart_at == {}
    harness.exit(1, 0)
    harness.exit(2, 0)
    assert sup.workers == {}
    assert not sup.announced
    assert len(harness.spawned) == 3


def test_shutdown_kills_what_is_left_after_the_timeout(harness: Harness) -> None:
    """Server restart (graceful shutdown): SIGTERM stops every worker; one that exits cleanly is
    no failure, one that exits non-zero is, and one still running SHUTDOWN_TIMEOUT later is killed
    and reported; a repeated SIGTERM changes nothing; no restart happens while stopping."""
    sup = harness.supervisor
    _announce(harness)
    harness.signal(signal.SIGTERM)
    assert sup.stopping
    assert sup._timeout() == SHUTDOWN_TIMEOUT
    harness.exit(1, 0)
    harness.exit(2, 1)
    harness.signal(signal.SIGTERM)
    assert sup.stop_deadline - harness.clock.now == pytest.approx(SHUTDOWN_TIMEOUT)
    harness.advance(SHUTDOWN_TIMEOUT - 0.5)
    assert 3 in sup.workers
    assert sup._timeout() == pytest.approx(0.5)
    harness.advance(0.5)
    assert sup.workers == {}
    assert harness.spawned[2].killed
    assert sup.failures == [
        "worker host:0/2 exited with status 1",
        f"worker host:0/3 did not stop in {SHUTDOWN_TIMEOUT:g} s",
    ]
    assert sup.restart_at == {}
    assert len(harness.spawned) == 3


events = st.lists(
    st.one_of(
        st.tuples(st.just("ready"), st.integers(1, 3)),
        st.tuples(st.just("crash"), st.integers(1, 3)),
        st.tuples(st.just("advance"), st.sampled_from([0.0, 0.5, 1.0, 3.0, 10.0, 31.0])),
    ),
    max_size=40,
)


@FAST
@given(events)
def test_supervisor_matches_a_restart_model(plan: list[tuple[str, float]]) -> None:
    """Server restart (workers), reference model: after the service came up, under any sequence
    of ready reports, crashes and time passing, each slot has at most one worker, always with its
    own server id; a slot's backoff is what the model says (double the last, from 1 s, at most
    MAX_RESTART_DELAY, forgotten once ready); a slot is restarted exactly when its backoff ends;
    the loop's timeout is the earliest restart; nothing fails."""
    with socket.socket() as sock:
        harness = _harness(sock, 3)
        sup = harness.supervisor
        _announce(harness)
        backoff: dict[int, float] = {}  # slot -> the last delay while it keeps failing before ready
        due: dict[int, float] = {}  # slot -> when the model restarts it
        for kind, value in plan:
            index = int(value)
            if kind == "ready" and index in sup.workers and not sup.workers[index].ready:
                harness.ready(index)
                backoff.pop(index, None)
            elif kind == "crash" and index in sup.workers:
                was_ready = sup.workers[index].ready
                harness.exit(index, 1)
                delay = 0.0
                if not was_ready:
                    delay = backoff[index] = min(backoff.get(index, 0.5) * 2, MAX_RESTART_DELAY)
                due[index] = harness.clock.now + delay
                if delay == 0.0:
                    harness.step()
            elif kind == "advance":
                harness.advance(value)
            for slot, when in list(due.items()):
                if when <= harness.clock.now:
                    del due[slot]
            assert set(sup.restart_at) == set(due)
            assert sup.restart_at == pytest.approx(due)
            assert set(sup.workers) | set(due) == {1, 2, 3}
            assert not set(sup.workers) & set(due)
            for slot, worker in sup.workers.items():
                assert worker.spec == WorkerSpec(slot, f"host:0/{slot}")
            assert {k: v for k, v in sup.restart_delay.items() if v} == backoff
            expected_timeout = max(0.0, min(due.values()) - harness.clock.now) if due else None
            assert sup._timeout() == expected_timeout
        assert sup.failures == []
        assert sum(p.is_alive() for p in harness.spawned) == len(sup.workers)
