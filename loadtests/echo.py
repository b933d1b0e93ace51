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


async def run_scaling(ctx: Context) -> dict[str, Any]:
    """Pipelined echo at each connection count, with the same total in flight (``--inflight``).

    Connections are opened incrementally and all stay open; at each level every open
    connection carries ``max(1, inflight // conns)`` messages in flight.
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
            window = max(1, a.inflight // level)
            result = await pipelined(ctx, clients, window, a.warmup, a.duration)
            rss = rss_kb(ctx.pid) if ctx.pid else None
            rows.append({"conns": level, "window": window, "open_seconds": round(open_s, 2), "rss_kb": rss, **result})
    finally:
        await close_all(clients, timeout=30.0)
    first = rows[0]["msgs_per_s"] or 1
    return {
        "inflight": a.inflight,
        "levels": rows,
        "msgs_per_s": [row["msgs_per_s"] for row in rows],
        "relative_to_first": [round(row["msgs_per_s"] / first, 3) for row in rows],
    }
