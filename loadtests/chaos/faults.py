"""The faults the chaos soak injects, one at a time, each undone before the next.

Each fault is an ``async`` function of the cluster, the raw clients and a random
generator; it returns a short description for the run's report. Blocking process
control (restarts that wait for a ``listening on`` line) runs in a thread so the
clients keep running while a server comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from collections.abc import Awaitable, Callable

from loadtests.chaos.clients import RawClient
from loadtests.chaos.cluster import Cluster

Fault = Callable[[Cluster, list[RawClient], random.Random], Awaitable[str]]


async def kill_server(cluster: Cluster, raw: list[RawClient], rng: random.Random) -> str:
    """``kill -9`` a server (for ``--workers``: one worker, which its supervisor restarts)."""
    server = rng.choice(cluster.servers)
    pids = server.pids()
    if len(pids) > 1:
        victim = rng.choice(pids[1:])
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
        return f"kill -9 worker {victim} of {server.name}"
    await asyncio.sleep(rng.uniform(0.2, 1.5))  # let clients notice before it is back
    await asyncio.to_thread(cluster.restart_server, server)
    return f"kill -9 and restart {server.name}"


async def stop_server(cluster: Cluster, raw: list[RawClient], rng: random.Random) -> str:
    """SIGSTOP a server (every process of it) for 1-4 s, then SIGCONT: a stall, not a crash."""
    server = rng.choice(cluster.servers)
    pids = server.pids()
    pause = rng.uniform(1.0, 4.0)
    server.stopped = True
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(pause)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        server.stopped = False
    return f"SIGSTOP {server.name} for {pause:.1f} s"


async def restart_redis(cluster: Cluster, raw: list[RawClient], rng: random.Random) -> str:
    down = rng.uniform(0.5, 3.0)
    cluster.redis.kill()
    await asyncio.sleep(down)
    await asyncio.to_thread(cluster.redis.start)
    return f"Redis down for {down:.1f} s"


async def restart_postgres(cluster: Cluster, raw: list[RawClient], rng: random.Random) -> str:
    await asyncio.to_thread(cluster.postgres.restart)
    return "PostgreSQL crash and restart"


async def cut_clients(cluster: Cluster, raw: list[RawClient], rng: random.Random) -> str:
    proxy = rng.choice(cluster.proxies)
    count = proxy.open_connections
    await proxy.cut()
    return f"cut {count} client connections"


async def half_open(cluster: Cluster, raw: list[RawClient], rng: random.Random) -> str:
    """Freeze a proxy's connections (no byte either way) long enough for heartbeats to notice."""
    proxy = rng.choice(cluster.proxies)
    pause = rng.uniform(3.0, 7.0)
    proxy.stall()
    try:
        await asyncio.sleep(pause)
    finally:
        proxy.unstall()
    return f"half-open {proxy.open_connections} connections for {pause:.1f} s"


async def stop_reading(cluster: Cluster, raw: list[RawClient], rng: random.Random) -> str:
    client = rng.choice(raw)
    pause = rng.uniform(2.0, 6.0)
    client.reading.clear()
    try:
        await asyncio.sleep(pause)
    finally:
        client.reading.set()
    return f"{client.spec.name} stopped reading for {pause:.1f} s"


FAULTS: dict[str, Fault] = {
    "kill_server": kill_server,
    "stop_server": stop_server,
    "restart_redis": restart_redis,
    "restart_postgres": restart_postgres,
    "cut_clients": cut_clients,
    "half_open": half_open,
    "stop_reading": stop_reading,
}
