"""Which server processes are alive, for audits of sessions left open by a crashed server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from datetime import timedelta

from channels.db import database_sync_to_async
from django.db.models import Count
from django.utils import timezone

from realtime.conf import realtime_settings
from realtime.models import ConnectionSession, ServerInstance

logger = logging.getLogger("realtime.server")

# A server silent for this many heartbeat intervals is presumed dead; its open sessions leaked.
STALE_AFTER_BEATS = 3
LEAKED_CLOSE_CODE = 1006
LEAKED_CLOSE_REASON = "server_lost"


def server_register(server_id: str) -> int:
    """Record this process as ``server_id``; close sessions a previous process of that id left open."""
    now = timezone.now()
    ServerInstance.objects.update_or_create(
        server_id=server_id,
        defaults={
            "pid": os.getpid(),
            "started_at": now,
            "last_heartbeat": now,
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


def server_heartbeat(server_id: str, load: LoadSample | None = None) -> None:
    fields: dict[str, object] = {"last_heartbeat": timezone.now(), "stopped_at": None}
    if load is not None:
        fields.update(
            open_connections=load.open_connections,
            messages_in_total=load.messages_in,
            messages_out_total=load.messages_out,
            messages_in_rate=load.in_rate,
            messages_out_rate=load.out_rate,
        )
    ServerInstance.objects.filter(server_id=server_id).update(**fields)


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


def servers_by_liveness() -> tuple[set[str], set[str]]:
    """(alive, silent): running servers that heartbeat on time, and those that stopped beating."""
    now = timezone.now()
    running = ServerInstance.objects.filter(stopped_at__isnull=True).values_list(
        "server_id", "last_heartbeat", "heartbeat_interval"
    )
    alive: set[str] = set()
    silent: set[str] = set()
    for server, last, interval in running:
        if now - last <= timedelta(seconds=interval * STALE_AFTER_BEATS):
            alive.add(server)
        else:
            silent.add(server)
    return alive, silent


def connections_audit(*, fix: bool) -> AuditReport:
    now = timezone.now()
    alive, silent = servers_by_liveness()
    open_sessions = ConnectionSession.objects.filter(disconnected_at__isnull=True)
    counts = dict(open_sessions.values_list("server_id").annotate(n=Count("id")).values_list("server_id", "n"))
    dead = sorted(silent | (set(counts) - alive))
    leaked_sessions = open_sessions.exclude(server_id__in=alive)
    leaked = leaked_sessions.count()
    closed = _close_sessions(leaked_sessions) if fix and leaked else 0
    if fix:
        ServerInstance.objects.filter(server_id__in=dead, stopped_at__isnull=True).update(stopped_at=now)
    return AuditReport(open_by_server=counts, dead_servers=dead, leaked=leaked, closed=closed)


def _counter_total(metric: object) -> int:
    collect = getattr(metric, "collect")  # noqa: B009 - prometheus_client's public collect()
    return int(sum(s.value for family in collect() for s in family.samples if s.name.endswith("_total")))


async def heartbeat_forever(server_id: str) -> None:
    from realtime import metrics
    from realtime.fanout import get_hub

    beat = database_sync_to_async(server_heartbeat)
    loop = asyncio.get_running_loop()
    last_in = last_out = 0
    last_at = loop.time()
    while True:
        await asyncio.sleep(realtime_settings().server_heartbeat_interval)
        now = loop.time()
        metrics.fold_tallies()
        messages_in, messages_out = _counter_total(metrics.MESSAGES_IN), _counter_total(metrics.MESSAGES_OUT)
        elapsed = max(now - last_at, 1e-6)
        load = LoadSample(
            open_connections=get_hub().count_local(),
            messages_in=messages_in,
            messages_out=messages_out,
            in_rate=(messages_in - last_in) / elapsed,
            out_rate=(messages_out - last_out) / elapsed,
        )
        last_in, last_out, last_at = messages_in, messages_out, now
        with contextlib.suppress(Exception):  # a database hiccup must not stop the server
            await beat(server_id, load)
