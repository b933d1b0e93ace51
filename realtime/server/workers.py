"""``manage.py serve --workers N``: one listening socket, N worker processes, one supervisor.

The parent binds the socket once, starts *spawned* children that inherit it and each run
the server (``realtime/server/run.py``) on it, sends each SIGTERM on shutdown and replaces
one that dies. A worker sets up Django first, registers under its own server id and closes
with 1012 ``service_restart``; the supervisor gates the ready line on every worker being
ready, remembers which slot a replacement fills and keeps exit statuses. It is
event-driven: it waits on the workers' process sentinels, their ready messages and a
signal wakeup fd (no polling of busy workers).

Spawn, not fork: each worker is a fresh interpreter that sets up Django, opens its own
database connections and its own uvloop; nothing of the parent's (connections, loop,
threads, prometheus values) is copied into it.

Worker ``k`` is server ``BASE/k``, where BASE is ``REALTIME_SERVER_ID`` or
``hostname:port``: it registers, heartbeats and drains on its own, and a replacement
takes over its slot's id, closing the sessions its predecessor left open. Metrics of
all workers are summed through ``PROMETHEUS_MULTIPROC_DIR`` (a temporary directory
unless the operator set one).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any, Protocol

logger = logging.getLogger("realtime.server")

SPAWN = multiprocessing.get_context("spawn")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
READY = b"ready"
# Beyond the workers' own graceful timeout (10 s) they still mark sessions closed and
# deregister; after this the supervisor kills what is left and reports a failure.
SHUTDOWN_TIMEOUT = 30.0
# A worker that dies before it is ready would most likely die again at once (bad
# configuration, database down): restarts back off, doubling up to this many seconds.
MAX_RESTART_DELAY = 30.0
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    index: int
    server_id: str


def worker_server_ids(base: str, count: int) -> list[str]:
    return [f"{base}/{k}" for k in range(1, count + 1)]


def worker_main(spec: WorkerSpec, sock: socket.socket, channel: Connection) -> None:
    """A worker process: Django, then the server on the inherited socket until told to stop."""
    early_signals: list[int] = []

    def remember(sig: int, frame: FrameType | None) -> None:
        early_signals.append(sig)

    # Until the server exists, a stop request is remembered rather than fatal: dying of
    # SIGTERM mid-setup would look like a crash to the supervisor.
    for sig in STOP_SIGNALS:
        signal.signal(sig, remember)
    # Before settings load, so every reader of the setting (welcome, logs, registry) agrees.
    os.environ["REALTIME_SERVER_ID"] = spec.server_id
    threading.Thread(target=_stop_when_supervisor_exits, args=(channel,), daemon=True).start()

    def report_ready() -> None:
        with contextlib.suppress(OSError):
            channel.send_bytes(READY)

    try:
        import django

        django.setup()
        # Models (so the server's run module too) are importable only after setup in a spawned interpreter.
        from realtime.server.run import serve_on

        serve_on(sock, None, on_ready=report_ready, early_signals=early_signals, stop_signals=STOP_SIGNALS)
    finally:
        # Python restores SIG_DFL for its handlers while it finalizes (which waits for the
        # database threads), so a late stop signal (a whole process group signalled, a
        # second Ctrl-C) would turn this exit, clean or not, into a death by signal.
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def _stop_when_supervisor_exits(channel: Connection) -> None:
    # The supervisor never writes to the channel: end of file means it is gone, and a
    # worker must not keep serving without it (nobody would stop or replace it).
    with contextlib.suppress(EOFError, OSError):
        while True:
            channel.recv_bytes()
    logger.warning("supervisor exited; stopping", extra={"server": os.environ.get("REALTIME_SERVER_ID")})
    os.kill(os.getpid(), signal.SIGTERM)


class WorkerProcess(Protocol):
    """What the supervisor uses of a worker's process (a spawned ``BaseProcess``; fakes in unit tests)."""

    @property
    def pid(self) -> int | None: ...

    @property
    def exitcode(self) -> int | None: ...

    @property
    def sentinel(self) -> int: ...

    def is_alive(self) -> bool: ...

    def join(self, timeout: float | None = None) -> None: ...

    def kill(self) -> None: ...


def spawn_worker(spec: WorkerSpec, sock: socket.socket, channel: Connection) -> BaseProcess:
    """Start worker ``spec`` in a fresh interpreter that inherits ``sock`` and ``channel``."""
    process = SPAWN.Process(
        target=worker_main, args=(spec, sock, channel), name=f"realtime-worker-{spec.index}", daemon=True
    )
    process.start()
    return process


@dataclass(eq=False, slots=True)
class Worker:
    spec: WorkerSpec
    process: WorkerProcess
    channel: Connection  # the supervisor's end
    ready: bool = False


@dataclass(slots=True)
class Supervisor:
    """Runs ``count`` workers on ``sock``; :meth:`run` returns None on a clean stop, else what failed."""

    sock: socket.socket
    port: int
    count: int
    ready_line: str
    workers: dict[int, Worker] = field(default_factory=dict)
    restart_at: dict[int, float] = field(default_factory=dict)
    restart_delay: dict[int, float] = field(default_factory=dict)
    announced: bool = False
    stopping: bool = False
    stop_deadline: float = 0.0
    failures: list[str] = field(default_factory=list)
    signals: list[int] = field(default_factory=list)
    metrics_dir: str | None = None
    own_metrics_dir: bool = False
    base: str = ""
    specs: list[WorkerSpec] = field(default_factory=list)
    # Injectable for the unit tests (a fake clock, fake processes); production uses these.
    clock: Callable[[], float] = time.monotonic
    spawn: Callable[[WorkerSpec, socket.socket, Connection], WorkerProcess] = spawn_worker

    def run(self) -> str | None:
        from realtime.conf import realtime_settings

        base = self.base = realtime_settings().server_id or f"{socket.gethostname()}:{self.port}"
        self.specs = [WorkerSpec(k, sid) for k, sid in enumerate(worker_server_ids(base, self.count), start=1)]
        self._prepare_metrics_dir()
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        previous_fd = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        try:
            logger.info("starting workers", extra={"server": base, "workers": self.count, "pid": os.getpid()})
            for spec in self.specs:
                self._start(spec)
            self._loop(wake_r)
        finally:
            # Normally no worker is left here; after an error in this loop, none may outlive us.
            for worker in self.workers.values():
                if worker.process.is_alive():
                    _signal(worker, signal.SIGTERM)
            for worker in self.workers.values():
                worker.process.join(SHUTDOWN_TIMEOUT)
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            wake_r.close()
            wake_w.close()
            self.sock.close()
            if self.own_metrics_dir and self.metrics_dir is not None:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
                os.environ.pop(METRICS_DIR_ENV, None)
        if self.failures:
            return "; ".join(self.failures)
        return None

    def _prepare_metrics_dir(self) -> None:
        # realtime/ops/metrics.py sums processes only through this directory; without it each
        # worker would answer /metrics with its own share, whichever one a scrape reached.
        self.metrics_dir = os.environ.get(METRICS_DIR_ENV)
        if not self.metrics_dir:
            self.metrics_dir = tempfile.mkdtemp(prefix="realtime-metrics-")
            self.own_metrics_dir = True
            os.environ[METRICS_DIR_ENV] = self.metrics_dir  # inherited by the spawned workers

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.signals.append(sig)

    def _start(self, spec: WorkerSpec) -> None:
        ours, theirs = SPAWN.Pipe()
        process = self.spawn(spec, self.sock, theirs)
        theirs.close()  # the worker holds its own copy; ours must be the only one left here
        self.workers[spec.index] = Worker(spec, process, ours)
        logger.info("worker started", extra={"server": spec.server_id, "pid": process.pid})

    def _loop(self, wake: socket.socket) -> None:
        while self.workers or (self.restart_at and not self.stopping):
            handlers: dict[Any, Callable[[], None]] = {wake: partial(_drain, wake)}  # sentinels, sockets, pipes
            for worker in self.workers.values():
                handlers[worker.process.sentinel] = partial(self._on_exit, worker)
                if not worker.ready:
                    handlers[worker.channel] = partial(self._on_ready, worker)
            for ready in wait(list(handlers), self._timeout()):
                handlers[ready]()
            self._handle_signals()
            self._restart_due()
            self._kill_overdue()

    def _kill_overdue(self) -> None:
        """Past the shutdown timeout, kill the workers still running and report each as a failure."""
        if self.stopping and self.workers and self.clock() >= self.stop_deadline:
            for worker in list(self.workers.values()):
                self.failures.append(f"worker {worker.spec.server_id} did not stop in {SHUTDOWN_TIMEOUT:g} s")
                logger.error("worker did not stop; killing it", extra={"server": worker.spec.server_id})
                worker.process.kill()
                worker.process.join()
                self._forget(worker)

    def _timeout(self) -> float | None:
        now = self.clock()
        if self.stopping:
            return max(0.0, self.stop_deadline - now)
        if self.restart_at:
            return max(0.0, min(self.restart_at.values()) - now)
        return None

    def _on_ready(self, worker: Worker) -> None:
        try:
            message = worker.channel.recv_bytes()
        except (EOFError, OSError):
            return  # it died before it was ready; its sentinel reports the exit
        if message != READY:
            return
        worker.ready = True
        self.restart_delay.pop(worker.spec.index, None)
        logger.info("worker ready", extra={"server": worker.spec.server_id, "pid": worker.process.pid})
        all_ready = len(self.workers) == self.count and all(w.ready for w in self.workers.values())
        if all_ready and not self.announced and not self.stopping:
            self.announced = True
            for stream in (sys.stdout, sys.stderr):
                stream.write(self.ready_line + "\n")
                stream.flush()
            logger.info("ready", extra={"server": self.base, "workers": self.count, "event": "listening"})

    def _on_exit(self, worker: Worker) -> None:
        worker.process.join()
        code = worker.process.exitcode
        self._forget(worker)
        spec = worker.spec
        if self.stopping:
            if code != 0:
                self.failures.append(f"worker {spec.server_id} exited with status {code}")
                logger.error("worker failed while stopping", extra={"server": spec.server_id, "exitcode": code})
            else:
                logger.info("worker stopped", extra={"server": spec.server_id})
            return
        if not self.announced:
            # The service never came up: report it rather than retry behind a launcher's back.
            self.failures.append(f"worker {spec.server_id} exited with status {code} before it was ready")
            logger.error("worker failed to start; stopping", extra={"server": spec.server_id, "exitcode": code})
            self._stop(signal.SIGTERM)
            return
        delay = 0.0
        if not worker.ready:
            delay = min(self.restart_delay.get(spec.index, 0.5) * 2, MAX_RESTART_DELAY)
            self.restart_delay[spec.index] = delay
        # Status 0 is a worker stopped on its own (SIGTERM to its pid): a one-worker restart.
        logger.log(
            logging.WARNING if code == 0 else logging.ERROR,
            "worker stopped; restarting it" if code == 0 else "worker exited unexpectedly; restarting it",
            extra={"server": spec.server_id, "pid": worker.process.pid, "exitcode": code, "restart_in": delay},
        )
        self.restart_at[spec.index] = self.clock() + delay

    def _forget(self, worker: Worker) -> None:
        self.workers.pop(worker.spec.index, None)
        worker.channel.close()
        if self.metrics_dir and worker.process.pid is not None:
            from prometheus_client import multiprocess

            # Its live gauges (open connections, broker state) must stop counting; its
            # counters stay, so host totals never go backwards.
            multiprocess.mark_process_dead(worker.process.pid, self.metrics_dir)  # type: ignore[no-untyped-call]

    def _restart_due(self) -> None:
        if self.stopping:
            self.restart_at.clear()
            return
        now = self.clock()
        for index, due in list(self.restart_at.items()):
            if due <= now:
                del self.restart_at[index]
                self._start(self.specs[index - 1])

    def _handle_signals(self) -> None:
        while self.signals:
            sig = self.signals.pop(0)
            if not self.stopping:
                logger.info("stopping workers", extra={"server": self.base, "signal": signal.Signals(sig).name})
                self._stop(signal.SIGTERM)
            elif sig == signal.SIGINT:
                # As with one process: a second Ctrl-C means "now" (the server's forced exit); a
                # repeated SIGTERM (a process manager signalling the whole group) changes nothing.
                logger.warning("stopping workers now", extra={"server": self.base})
                for worker in self.workers.values():
                    _signal(worker, signal.SIGINT)

    def _stop(self, sig: int) -> None:
        self.stopping = True
        self.stop_deadline = self.clock() + SHUTDOWN_TIMEOUT
        self.restart_at.clear()
        for worker in self.workers.values():
            _signal(worker, sig)


def _drain(wake: socket.socket) -> None:
    with contextlib.suppress(OSError):
        wake.recv(4096)


def _signal(worker: Worker, sig: int) -> None:
    if worker.process.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.process.pid, sig)
