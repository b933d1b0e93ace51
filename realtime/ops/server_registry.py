"""Which server processes are alive; the sessions of dead ones are closed by the others.

Each server beats (``last_heartbeat``) four times per ``REALTIME_SERVER_HEARTBEAT_INTERVAL``
from a thread and database connection of its own, so a database thread stuck behind a
lock, or a busy event loop's database queue, never makes a live server look dead. A
server silent for 1.5 intervals is dead, by the database's clock (so hosts' clocks may
differ); every server checks at each beat and closes a dead server's open sessions
(1006 ``server_lost``): after ``kill -9`` they are closed within two intervals. A close is
fenced on the last heartbeat it judged: a server that beats in between keeps its sessions.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import Error as DatabaseError
from django.db import close_old_connections, connection, transaction
from django.db.models import Count
from django.db.models.functions import Now
from django.utils import timezone

from realtime.conf import realtime_settings
from realtime.models import ConnectionSession, ServerInstance

logger = logging.getLogger("realtime.server")

# A server silent for this many heartbeat intervals is dead; its open sessions leaked. It
# beats BEATS_PER_INTERVAL times per interval, so a live one is late by a whole interval
# before it is judged dead; the others check as often as they beat: a dead one's sessions
# are closed within 1.5 + 1/4 intervals of its last beat.
STALE_AFTER_BEATS = 1.5
BEATS_PER_INTERVAL = 4
LEAKED_CLOSE_CODE = 1006
LEAKED_CLOSE_REASON = "server_lost"

_clock_offset: timedelta | None = None  # the database's clock minus this process's


def _measure_clock() -> timedelta:
    """How far the database's clock is ahead of ours (PostgreSQL; SQLite is local: zero)."""
    global _clock_offset
    offset = timedelta(0)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement_timestamp()")
            offset = cursor.fetchone()[0] - timezone.now()
    _clock_offset = offset
    return offset


def database_now() -> datetime:
    """Now by the database's clock, which every server's heartbeat is written with."""
    offset = _clock_offset if _clock_offset is not None else _measure_clock()
    return timezone.now() + offset


def _beat_time() -> Any:
    # The database's own clock where it has one that keeps microseconds (SQLite's Now() keeps
    # milliseconds as text, which a fenced close could not compare back).
    return Now() if connection.vendor == "postgresql" else timezone.now()


def server_register(server_id: str) -> int:
    """Record this process as ``server_id``; close sessions a previous process of that id left open."""
    now = timezone.now()
    ServerInstance.objects.update_or_create(
        server_id=server_id,
        defaults={
            "pid": os.getpid(),
            "started_at": now,
            "last_heartbeat": _beat_time(),
            "heartbeat_interval": realtime_settings().server_heartbeat_interval,
            "stopped_at": None,
        },
    )
    return _close_sessions(ConnectionSession.objects.filter(server_id=server_id, disconnected_at__isnull=True))


@dataclass(frozen=True, slots=True)
class LoadSample:
    open_connections: int
    messages_in: int
    messages_out: int
    in_rate: float
    out_rate: float


def server_heartbeat(server_id: str, load: LoadSample | None = None) -> bool:
    """Beat; False when this server had been presumed dead (its row marked stopped by another)."""
    fields: dict[str, object] = {"last_heartbeat": _beat_time()}
    if load is not None:
        fields.update(
            open_connections=load.open_connections,
            messages_in_total=load.messages_in,
            messages_out_total=load.messages_out,
            messages_in_rate=load.in_rate,
            messages_out_rate=load.out_rate,
        )
    if ServerInstance.objects.filter(server_id=server_id, stopped_at__isnull=True).update(**fields):
        return True
    ServerInstance.objects.filter(server_id=server_id).update(stopped_at=None, **fields)
    return False


def server_stopped(server_id: str) -> None:
    ServerInstance.objects.filter(server_id=server_id).update(stopped_at=timezone.now())


def _close_sessions(sessions: object) -> int:
    assert hasattr(sessions, "update")
    count: int = sessions.update(
        disconnected_at=timezone.now(), close_code=LEAKED_CLOSE_CODE, close_reason=LEAKED_CLOSE_REASON
    )
    return count


@dataclass(frozen=True, slots=True)
class AuditReport:
    open_by_server: dict[str, int]
    dead_servers: list[str]
    leaked: int  # open sessions on dead or unknown servers
    closed: int  # of those, how many were marked closed now


def _running() -> tuple[dict[str, datetime], dict[str, datetime]]:
    """(alive, silent) running servers, each with its last heartbeat."""
    now = database_now()
    running = ServerInstance.objects.filter(stopped_at__isnull=True).values_list(
        "server_id", "last_heartbeat", "heartbeat_interval"
    )
    alive: dict[str, datetime] = {}
    silent: dict[str, datetime] = {}
    for server, last, interval in running:
        fresh = now - last <= timedelta(seconds=interval * STALE_AFTER_BEATS)
        (alive if fresh else silent)[server] = last
    return alive, silent


def servers_by_liveness() -> tuple[set[str], set[str]]:
    """(alive, silent): running servers that heartbeat on time, and those that stopped beating."""
    alive, silent = _running()
    return set(alive), set(silent)


def _close_dead(server: str, last_seen: datetime | None) -> int:
    """Close ``server``'s open sessions, if it is still as dead as it was judged: silent since
    ``last_seen`` (it is marked stopped in the same transaction), or, for ``None``, not running."""
    with transaction.atomic():
        if last_seen is not None:
            fenced = ServerInstance.objects.filter(server_id=server, last_heartbeat=last_seen, stopped_at__isnull=True)
            if not fenced.update(stopped_at=timezone.now()):
                return 0  # it beat meanwhile: alive
        elif ServerInstance.objects.filter(server_id=server, stopped_at__isnull=True).exists():
            return 0  # registered meanwhile
        return _close_sessions(ConnectionSession.objects.filter(server_id=server, disconnected_at__isnull=True))


def reap_dead_servers(me: str) -> dict[str, int]:
    """Close the open sessions of every silent server but ``me``: ``{server: sessions closed}``."""
    _, silent = _running()
    silent.pop(me, None)
    closed = {server: _close_dead(server, last) for server, last in silent.items()}
    return {server: count for server, count in closed.items() if count}


def connections_audit(*, fix: bool) -> AuditReport:
    alive, silent = _running()
    open_sessions = ConnectionSession.objects.filter(disconnected_at__isnull=True)
    counts = dict(open_sessions.values_list("server_id").annotate(n=Count("id")).values_list("server_id", "n"))
    dead = sorted(set(silent) | (set(counts) - set(alive)))
    leaked = open_sessions.exclude(server_id__in=alive).count()
    closed = 0
    if fix:
        for server in dead:
            closed += _close_dead(server, silent.get(server))
    return AuditReport(open_by_server=counts, dead_servers=dead, leaked=leaked, closed=closed)


def _counter_total(metric: object) -> int:
    collect = getattr(metric, "collect")  # noqa: B009 - prometheus_client's public collect()
    return int(sum(s.value for family in collect() for s in family.samples if s.name.endswith("_total")))


def _beat_and_reap(server_id: str, load: LoadSample) -> tuple[bool, dict[str, int]]:
    """One tick on the registry's own thread: beat, resync the clock, close dead servers' sessions."""
    close_old_connections()  # a connection broken by a database restart is replaced, not reused
    alive = server_heartbeat(server_id, load)
    _measure_clock()
    return alive, reap_dead_servers(server_id)


async def heartbeat_forever(server_id: str, open_connections: Callable[[], int]) -> None:
    """Beat steadily with this process's load; ``open_connections`` counts its connections."""
    from realtime.ops import metrics

    # Its own thread, so its own database connection: nothing queued on the shared database
    # thread (connects, acks, a publish waiting on a lock) delays a heartbeat.
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="registry")
    loop = asyncio.get_running_loop()
    tick = realtime_settings().server_heartbeat_interval / BEATS_PER_INTERVAL
    last_in = last_out = 0
    last_at = next_at = loop.time()
    failing = False
    try:
        while True:
            next_at = max(next_at + tick, loop.time())  # a steady cadence; no burst after a stall
            await asyncio.sleep(next_at - loop.time())
            now = loop.time()
            metrics.fold_tallies()
            messages_in, messages_out = _counter_total(metrics.MESSAGES_IN), _counter_total(metrics.MESSAGES_OUT)
            elapsed = max(now - last_at, 1e-6)
            load = LoadSample(
                open_connections=open_connections(),
                messages_in=messages_in,
                messages_out=messages_out,
                in_rate=(messages_in - last_in) / elapsed,
                out_rate=(messages_out - last_out) / elapsed,
            )
            last_in, last_out, last_at = messages_in, messages_out, now
            try:
                registered, reaped = await loop.run_in_executor(executor, _beat_and_reap, server_id, load)
            except DatabaseError as exc:
                # A database hiccup must not stop the server; others will think it dead if it lasts.
                # The error's text, not a traceback: an outage is an operational state, not a bug.
                if not failing:
                    logger.warning(
                        "server heartbeat failed",
                        extra={"event": "heartbeat_failed", "error": f"{type(exc).__name__}: {exc}".strip()},
                    )
                failing = True
                continue
            if failing:
                logger.info("server heartbeat restored", extra={"event": "heartbeat_restored"})
                failing = False
            if not registered:
                logger.error(
                    "this server had been presumed dead: its sessions may have been closed in the registry",
                    extra={"event": "presumed_dead", "server": server_id},
                )
            for server, count in reaped.items():
                logger.warning(
                    "closed sessions of a dead server",
                    extra={"event": "server_lost", "dead_server": server, "sessions": count},
                )
    finally:
        executor.shutdown(wait=False)
