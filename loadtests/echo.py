"""Echo modes: ``latency`` (open-loop, paced), ``throughput`` (pipelined) and ``scaling``.

Replies on one connection come back in the order their messages were sent (the contract
says so, and the raw echo server does the same), so a per-connection FIFO of send times
matches replies to requests without parsing any JSON on the hot path.
"""

# ruff: noqa: ASYNC109, ASYNC110 - bounded polling waits with explicit bounds, on purpose

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable
from typing import Any

from loadtests.common import CpuMeter, latency_summary, per_cpu, rss_kb
from loadtests.context import ECHO, ERROR_PREFIX, Context
from loadtests.wsclient import WsClient, close_all


class Counters:
    __slots__ = ("counting", "errors", "received", "sending", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.errors = 0
        self.sending = True
        self.counting = False


async def drain(counters: Counters, timeout: float) -> int:
    """Wait (bounded) until every message sent has been answered; returns how many are still missing."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while counters.received < counters.sent:
                await asyncio.sleep(0.01)
    return counters.sent - counters.received


async def pipelined(
    ctx: Context, clients: list[WsClient], window: int, warmup: float, duration: float
) -> dict[str, Any]:
    """Keep ``window`` echoes in flight on every connection; count replies during ``duration`` after ``warmup``."""
    c = Counters()

    def on_frame(client: WsClient, data: bytes) -> None:
        c.received += 1
        if data.startswith(ERROR_PREFIX):
            c.errors += 1
        if c.sending:
            c.sent += 1
            client.send(ECHO)

    for client in clients:
        client.on_frame = on_frame
        c.sent += window
        client.send_many([ECHO] * window)
    await asyncio.sleep(warmup)
    meter = CpuMeter(ctx.pid).start() if ctx.pid else None
    r0, t0 = c.received, time.monotonic()
    await asyncio.sleep(duration)
    r1, t1 = c.received, time.monotonic()
    cpu = meter.stop() if meter else {}
    return await window_result(c, clients, (r0, t0, r1, t1), cpu)


async def window_result(
    c: Counters,
    clients: list[WsClient],
    window: tuple[int, float, int, float],
    cpu: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """Stop sending, drain what is in flight, detach the clients; the measured window's
    figures (``window``: replies and time at its start and end), ``extra`` before the counts
    of what went wrong."""
    r0, t0, r1, t1 = window
    c.sending = False
    missing = await drain(c, 10.0)
    for client in clients:
        client.on_frame = None
    closed = sum(1 for client in clients if not client.is_open)
    rate = (r1 - r0) / (t1 - t0)
    return {
        "msgs_per_s": round(rate),
        "msgs_per_server_cpu_s": per_cpu(rate, cpu),
        "replies": r1 - r0,
        "seconds": round(t1 - t0, 3),
        **extra,
        "error_replies": c.errors,
        "unanswered": missing,
        "closed_connections": closed,
        **cpu,
    }


async def open_loop(
    ctx: Context,
    clients: list[WsClient],
    rate: float,
    warmup: float,
    duration: float,
    on_tick: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Send echoes at ``rate`` msg/s in total, round robin, on a fixed schedule (no coordinated omission).

    Latency is measured from each message's scheduled send time, so a stalled server or a
    late pacer shows up as latency instead of silently lowering the offered load.
    """
    c = Counters()
    latencies: list[float] = []
    n = len(clients)
    measure_from = time.monotonic() + warmup

    def on_frame(client: WsClient, data: bytes) -> None:
        scheduled = client.state.popleft()
        c.received += 1
        if data.startswith(ERROR_PREFIX):
            c.errors += 1
        if scheduled >= measure_from:
            latencies.append(time.monotonic() - scheduled)

    for client in clients:
        client.state = collections.deque()
        client.on_frame = on_frame
    total = int(rate * (warmup + duration))
    start = measure_from - warmup
    meter: CpuMeter | None = None
    k = 0
    while k < total:
        now = time.monotonic()
        if meter is None and now >= measure_from and ctx.pid:
            meter = CpuMeter(ctx.pid).start()
        due = min(total, int((now - start) * rate) + 1)
        while k < due:
            client = clients[k % n]
            client.state.append(start + k / rate)
            client.send(ECHO)
            k += 1
        c.sent = k
        if on_tick is not None:
            on_tick()
        await asyncio.sleep(0.001)
    elapsed = time.monotonic() - measure_from
    cpu = meter.stop() if meter else {}
    missing = await drain(c, 10.0)
    for client in clients:
        client.on_frame = None
    return {
        "offered_rate": rate,
        "sent_rate": round((k - int(rate * warmup)) / max(elapsed, 1e-9)),
        "latency": latency_summary(latencies),
        "error_replies": c.errors,
        "unanswered": missing,
        **cpu,
    }


async def run_latency(ctx: Context) -> dict[str, Any]:
    a = ctx.args
    t0 = time.monotonic()
    clients = await ctx.open(a.conns)
    open_s = time.monotonic() - t0
    try:
        result = await open_loop(ctx, clients, a.rate, a.warmup, a.duration)
    finally:
        await close_all(clients)
    return {"conns": a.conns, "open_seconds": round(open_s, 2), **result}


async def run_throughput(ctx: Context) -> dict[str, Any]:
    a = ctx.args
    clients = await ctx.open(a.conns)
    try:
        result = await pipelined(ctx, clients, a.window, a.warmup, a.duration)
    finally:
        await close_all(clients)
    return {"conns": a.conns, "window": a.window, **result}


async def rotating(
    ctx: Context, clients: list[WsClient], inflight: int, warmup: float, duration: float
) -> dict[str, Any]:
    """Keep exactly ``inflight`` echoes in flight over ``clients``, moving each freed slot round robin.

    Every connection has ``ceil(inflight / conns)`` slots; the ``inflight`` messages first
    take them round robin, and the free slots wait in a FIFO. A reply frees its slot at the
    FIFO's tail and the next message goes to the slot at its head. With at least as many
    messages as connections and a divisible count, the FIFO holds only the slot just freed,
    so each connection simply keeps its share pipelined; with fewer messages than
    connections, every connection holds at most one message and the free slots rotate over
    all of them, so all connections take part and none is favoured.
    """
    c = Counters()
    n = len(clients)
    cap = -(-inflight // n)
    free: collections.deque[WsClient] = collections.deque(clients[j % n] for j in range(inflight, cap * n))
    for client in clients:
        client.state = 0  # messages sent to it, to count the connections that took part

    def on_frame(client: WsClient, data: bytes) -> None:
        c.received += 1
        if data.startswith(ERROR_PREFIX):
            c.errors += 1
        if c.sending:
            free.append(client)
            target = free.popleft()
            target.state += 1
            c.sent += 1
            target.send(ECHO)

    for client in clients:
        client.on_frame = on_frame
    for j in range(inflight):
        client = clients[j % n]
        client.state += 1
        client.send(ECHO)
    c.sent = inflight
    await asyncio.sleep(warmup)
    meter = CpuMeter(ctx.pid).start() if ctx.pid else None
    sends0 = [client.state for client in clients]
    io0 = syscall_counts(ctx.pid)
    r0, t0 = c.received, time.monotonic()
    await asyncio.sleep(duration)
    r1, t1 = c.received, time.monotonic()
    io1 = syscall_counts(ctx.pid)
    in_flight = c.sent - c.received
    cpu = meter.stop() if meter else {}
    used = sum(1 for client, before in zip(clients, sends0, strict=True) if client.state > before)
    return await window_result(
        c,
        clients,
        (r0, t0, r1, t1),
        cpu,
        in_flight=in_flight,
        # Server system calls per reply (workers' calls are not counted for ``--workers``).
        reads_per_reply=round((io1[0] - io0[0]) / max(1, r1 - r0), 3),
        writes_per_reply=round((io1[1] - io0[1]) / max(1, r1 - r0), 3),
        max_per_conn=cap,
        connections_used=used,
    )


def syscall_counts(pid: int | None) -> tuple[int, int]:
    """Read-like and write-like system calls the process made so far (``/proc/PID/io``), or zeros."""
    counts = {"syscr": 0, "syscw": 0}
    if pid:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/io") as io:
            for line in io:
                key, _, value = line.partition(":")
                if key in counts:
                    counts[key] = int(value)
    return counts["syscr"], counts["syscw"]


async def run_scaling(ctx: Context) -> dict[str, Any]:
    """Echo at each connection count with exactly the same total in flight (``--inflight``).

    Connections are opened incrementally and all stay open. At each level ``rotating``
    keeps ``inflight`` messages in flight in total: ``inflight / conns`` pipelined on every
    connection when there are fewer connections than messages, otherwise one on each of
    ``inflight`` connections at a time, the next message going to the next idle connection
    in round robin, so every connection takes part (``connections_used``). The work per
    second is then the same at every level; what changes is how many connections it is
    spread over, which is what the mode measures.
    """
    a = ctx.args
    levels = sorted(int(level) for level in str(a.levels).split(","))
    clients: list[WsClient] = []
    rows: list[dict[str, Any]] = []
    try:
        for level in levels:
            t0 = time.monotonic()
            clients += await ctx.open(level - len(clients), start=len(clients))
            open_s = time.monotonic() - t0
            result = await rotating(ctx, clients, a.inflight, a.warmup, a.duration)
            rss = rss_kb(ctx.pid) if ctx.pid else None
            rows.append({"conns": level, "open_seconds": round(open_s, 2), "rss_kb": rss, **result})
    finally:
        await close_all(clients, timeout=30.0)
    first = rows[0]["msgs_per_s"] or 1
    return {
        "inflight": a.inflight,
        "levels": rows,
        "msgs_per_s": [row["msgs_per_s"] for row in rows],
        "relative_to_first": [round(row["msgs_per_s"] / first, 3) for row in rows],
    }
