"""The server's garbage-collector policy: no full pass over long-lived objects (issue 19).

CPython's cyclic collector runs a full collection whenever the objects that survived the
younger generations grow by a quarter, and a full collection walks every tracked object:
while 10,000 connections open (about 70 tracked objects each) it stalled the event loop
for up to 0.4 s (docs/performance.md, "Pauses while connections pour in").

The policy, applied by ``manage.py serve`` (and each ``--workers`` process) before it
serves:

- at start-up, one full collection and then ``gc.freeze()``: modules, Django, settings,
  URL patterns and the application move to the permanent generation, which no collection
  walks again;
- every :data:`FREEZE_INTERVAL` seconds while application tasks start (connections,
  requests), every :data:`QUIET_INTERVAL` seconds while none does, a full collection of what is not
  frozen (only the objects that survived since the last freeze, so it stays short) and,
  when at least :data:`FREEZE_AT` objects survived it, ``gc.freeze()`` again: connection
  state piling up while connections pour in is never traversed again. A server whose
  population is steady rarely freezes, so the cyclic garbage of requests in flight at a
  tick is seldom frozen with them. Objects freed by reference counting leave the
  permanent generation as usual;
- a closed connection's state is held in reference cycles (transport and protocol,
  consumer and its deadlines, ...), which no collection reaches once frozen. So the policy
  counts the application tasks that ended (one per WebSocket connection, one per HTTP
  request; :class:`CountedSet` over the server's task set) and, once they outnumber the
  running ones :data:`RECLAIM_RATIO` times over (and at least
  :data:`RECLAIM_MIN_RELEASED`), a tick unfreezes everything and runs one full collection
  before freezing again: garbage stays bounded by the live connections' own size, and a
  server that only gains connections never pays that pass;
- the automatic full collection is left to that schedule (:data:`THRESHOLDS`).

Why two intervals: while connections pour in, a tick every 0.1 s keeps each walk short; in a
steady population the young objects are mostly messages in flight, which at 10,000
connections live ~0.4 s, so a 0.1 s tick walked the same ones again and again (19 % of the
server's samples in the scaling benchmark). The first task to start in a quiet period brings
the next tick back to :data:`FREEZE_INTERVAL` from then.

``REALTIME_GC_FREEZE=0`` turns the policy off (CPython's defaults; the baseline of the
load test ``loadtests/ramp.py``). ``REALTIME_GC_TRACE=PATH`` appends one JSON line per
collection to PATH (generation, milliseconds, objects collected, why it ran) and a line
when the policy is applied and when the server stops; without it no callback is installed.
With the trace on, SIGUSR1 appends a census: objects frozen and objects the collector
still walks (the load test's count of tracked objects per connection).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import signal
import time
from collections.abc import Callable
from typing import IO, Any, TypeVar

from realtime.conf import RealtimeSettings
from realtime.server.state import ServerState

T = TypeVar("T")

FREEZE_ENV = "REALTIME_GC_FREEZE"
TRACE_ENV = "REALTIME_GC_TRACE"
# Seconds between scheduled collect-and-freeze ticks. While connections pour in, each tick
# walks what survived since the previous one; the interval bounds that walk.
FREEZE_INTERVAL = 0.1
# Seconds between ticks while no application task started since the previous tick.
QUIET_INTERVAL = 1.0
# A tick freezes the survivors of its collection when there are at least this many, so a
# tick never walks more than about this many objects that an earlier tick walked (~1 ms).
FREEZE_AT = 2000
# Generation 0 and 1 as CPython's defaults; the automatic full collection effectively off
# (the scheduled tick runs it and resets the counter every FREEZE_INTERVAL).
THRESHOLDS = (700, 10, 1_000_000)
# A reclaiming full collection (everything unfrozen) runs once the application tasks that
# ended since the previous one are at least RECLAIM_RATIO times the running ones and at
# least RECLAIM_MIN_RELEASED.
RECLAIM_RATIO = 2
RECLAIM_MIN_RELEASED = 1000
# Seconds between flushes of the trace file while serving.
TRACE_FLUSH_INTERVAL = 1.0
# With the trace on, this signal appends a census of tracked objects to it.
CENSUS_SIGNAL = signal.SIGUSR1
CENSUS_TYPES = 40  # the census names this many of the most common types still walked


class GcTrace:
    """A ``gc.callbacks`` hook writing one JSON line per collection to a file."""

    def __init__(self, path: str) -> None:
        self.file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.started = 0.0
        self.reason = "automatic"
        self.installed = False

    def install(self) -> GcTrace:
        gc.callbacks.append(self)
        self.installed = True
        return self

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        ms = (time.perf_counter() - self.started) * 1000
        self.file.write(
            f'{{"t":{time.time():.4f},"gen":{info["generation"]},"ms":{ms:.3f},'
            f'"collected":{info["collected"]},"why":"{self.reason}"}}\n'
        )

    def event(self, name: str, **fields: Any) -> None:
        self.file.write(json.dumps({"t": round(time.time(), 4), "event": name, **fields}) + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.installed:
            gc.callbacks.remove(self)
            self.installed = False
        self.file.close()


class CountedSet(set[T]):
    """A set that counts the members it took and released (the server's running application
    tasks), and calls ``on_add`` (once, then forgets it) when one is added."""

    __slots__ = ("added", "on_add", "released")

    def __init__(self, items: set[T]) -> None:
        super().__init__(items)
        self.added = 0
        self.released = 0
        self.on_add: Callable[[], None] | None = None

    def add(self, item: T) -> None:
        super().add(item)
        self.added += 1
        if self.on_add is not None:
            on_add, self.on_add = self.on_add, None
            on_add()

    def discard(self, item: object) -> None:
        if item in self:
            self.released += 1
        super().discard(item)


class GcPolicy:
    """Freeze after start-up, then collect-and-freeze on a schedule while serving."""

    def __init__(
        self,
        enabled: bool,
        trace: GcTrace | None = None,
        interval: float = FREEZE_INTERVAL,
        quiet_interval: float = QUIET_INTERVAL,
        thresholds: tuple[int, int, int] = THRESHOLDS,
    ) -> None:
        self.enabled = enabled
        self.trace = trace
        self.interval = interval
        self.quiet_interval = quiet_interval
        self.thresholds = thresholds
        self.handle: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.flushed = 0.0
        self.ticks = 0
        self.tasks: CountedSet[asyncio.Task[None]] | None = None
        self.released_at = 0  # tasks ended when the last reclaim ran
        self.added_at = 0  # tasks started when the previous tick ran
        self.reclaims = 0
        self.freezes = 0

    @classmethod
    def from_settings(cls, settings: RealtimeSettings) -> GcPolicy:
        """``REALTIME_GC_FREEZE`` and ``REALTIME_GC_TRACE``, read with the other settings (realtime/conf.py)."""
        return cls(settings.gc_freeze, GcTrace(settings.gc_trace).install() if settings.gc_trace else None)

    def apply(self) -> None:
        """At start-up, before serving: collect, freeze what is loaded, set the thresholds."""
        if self.enabled:
            self.collect("startup")
            gc.freeze()
            gc.set_threshold(*self.thresholds)
        if self.trace is not None:
            self.trace.event(
                "policy",
                freeze=self.enabled,
                frozen=gc.get_freeze_count(),
                threshold=list(gc.get_threshold()),
                interval=self.interval if self.enabled else None,
            )

    def collect(self, reason: str) -> None:
        if self.trace is not None:
            self.trace.reason = reason
        gc.collect()
        if self.trace is not None:
            self.trace.reason = "automatic"

    def start(self, loop: asyncio.AbstractEventLoop, state: ServerState | None = None) -> None:
        """Schedule the collect-and-freeze ticks on the serving loop (the policy on only);
        ``state``'s ending tasks are counted from here on (call before accepting)."""
        self.loop = loop
        if self.enabled:
            if state is not None:
                state.tasks = self.tasks = CountedSet(state.tasks)
            self.handle = loop.call_later(self.interval, self.tick)
        if self.trace is not None:
            loop.add_signal_handler(CENSUS_SIGNAL, self.census)

    def census(self) -> None:
        """Objects frozen, objects still walked, and the most common types of the latter."""
        if self.trace is not None:
            walked = gc.get_objects()
            types = collections.Counter(type(obj).__qualname__ for obj in walked).most_common(CENSUS_TYPES)
            self.trace.event("census", frozen=gc.get_freeze_count(), tracked=len(walked), types=dict(types))

    def reclaim_due(self) -> bool:
        tasks = self.tasks
        if tasks is None:
            return False
        released = tasks.released - self.released_at
        return released >= max(RECLAIM_MIN_RELEASED, RECLAIM_RATIO * len(tasks))

    def tick(self) -> None:
        if self.reclaim_due():
            assert self.tasks is not None
            self.released_at = self.tasks.released
            self.reclaims += 1
            gc.unfreeze()
            self.collect("reclaim")
            gc.freeze()
        else:
            self.collect("schedule")
            if len(gc.get_objects()) >= FREEZE_AT:
                gc.freeze()
                self.freezes += 1
        self.ticks += 1
        assert self.loop is not None
        now = self.loop.time()
        if self.trace is not None and now - self.flushed >= TRACE_FLUSH_INTERVAL:
            self.flushed = now
            self.trace.file.flush()
        tasks = self.tasks
        if tasks is None or tasks.added != self.added_at:
            self.handle = self.loop.call_later(self.interval, self.tick)
        else:
            self.handle = self.loop.call_later(self.quiet_interval, self.tick)
            tasks.on_add = self.wake
        if tasks is not None:
            self.added_at = tasks.added

    def wake(self) -> None:
        """A task started during a quiet period: the next tick comes ``interval`` from now."""
        if self.handle is not None and self.loop is not None:
            self.handle.cancel()
            self.handle = self.loop.call_later(self.interval, self.tick)

    def stop(self) -> None:
        """Cancel the ticks; the trace records the final state and is closed."""
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        if self.tasks is not None:
            self.tasks.on_add = None
        if self.trace is not None:
            if self.loop is not None:
                self.loop.remove_signal_handler(CENSUS_SIGNAL)
            self.trace.event(
                "stopped",
                frozen=gc.get_freeze_count(),
                ticks=self.ticks,
                reclaims=self.reclaims,
                freezes=self.freezes,
                count=list(gc.get_count()),
                stats=gc.get_stats(),
            )
            self.trace.close()
            self.trace = None
