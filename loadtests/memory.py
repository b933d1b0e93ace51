"""Memory modes: ``idle-memory``, ``active-memory`` and ``churn`` (leak detection).

RSS is the server process's VmRSS from /proc/PID/status. A few warm-up connections are
opened before the baseline so that one-time costs (imports, caches, the first stream)
are not charged to the connections being measured.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from typing import Any

from loadtests.common import CpuMeter, per_cpu, proc_status_kb, rss_kb, slope_per_unit
from loadtests.context import ECHO, BenchError, Context, Setup, subscribe_to
from loadtests.echo import open_loop
from loadtests.wsclient import WsClient, close_all, open_client


def _require_pid(ctx: Context) -> int:
    if ctx.pid is None:
        raise BenchError("memory modes read the server's RSS: start the server here or pass --server-pid")
    return ctx.pid


def _setup(ctx: Context) -> Setup | None:
    rooms, prefix = ctx.args.rooms, f"room:mem-{uuid.uuid4().hex[:6]}"
    return subscribe_to(lambda i: f"{prefix}-{i % rooms}") if ctx.realtime else None


async def _alive(clients: list[WsClient], sample: int = 5) -> int:
    """Echo on a few random connections: they are really open and served."""
    alive = 0
    for client in random.sample(clients, min(sample, len(clients))):
        client.send(ECHO)
        await client.recv(10.0)
        alive += 1
    return alive


async def run_idle_memory(ctx: Context) -> dict[str, Any]:
    a, pid = ctx.args, _require_pid(ctx)
    setup = _setup(ctx)
    clients = await ctx.open(a.warm, setup=setup)
    try:
        await asyncio.sleep(a.settle)
        before = rss_kb(pid)
        snap0 = await ctx.snapshot()
        t0 = time.monotonic()
        meter = CpuMeter(pid).start()
        clients += await ctx.open(a.conns, setup=setup, start=a.warm)
        open_s = time.monotonic() - t0
        open_cpu = meter.stop()
        await asyncio.sleep(a.settle)
        status = proc_status_kb(pid)
        snap1 = await ctx.snapshot()
        alive = await _alive(clients)
    finally:
        await close_all(clients, timeout=30.0)
    return {
        "tracemalloc_top": await ctx.tracemalloc_top(snap0, snap1),
        "conns": a.conns,
        "warm_conns": a.warm,
        "subscribed": ctx.realtime,
        "open_seconds": round(open_s, 2),
        "opens_per_s": round(a.conns / open_s),
        # Opens per second of server CPU: the figure to compare on a shared, noisy machine.
        "opens_per_server_cpu_s": per_cpu(a.conns / open_s, open_cpu),
        "open_cpu": open_cpu,
        "rss_before_kb": before,
        "rss_after_kb": status["VmRSS"],
        "kb_per_conn": round((status["VmRSS"] - before) / a.conns, 2),
        "sample_alive": alive,
    }


async def run_active_memory(ctx: Context) -> dict[str, Any]:
    """N subscribed connections each sending ``--per-conn-rate`` echoes/s; RSS peak while active.

    Also the steady-run leak check: RSS is sampled every second and its slope (KB per
    minute) fitted after the first tenth of ``--duration`` (warm-up); with
    ``--tracemalloc`` the allocation sites that grew between the end of warm-up and the
    end of the run are listed.
    """
    a, pid = ctx.args, _require_pid(ctx)
    setup = _setup(ctx)
    clients = await ctx.open(a.warm, setup=setup)
    samples: list[tuple[float, int]] = []
    last = [0.0]

    def sample() -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0:
            last[0] = now
            samples.append((now, rss_kb(pid)))

    try:
        await asyncio.sleep(a.settle)
        before = rss_kb(pid)
        active = await ctx.open(a.conns, setup=setup, start=a.warm)
        clients += active
        idle_rss = rss_kb(pid)
        warmed = asyncio.get_running_loop().time() + a.warmup + a.duration / 10
        snapshots: list[int | None] = []

        async def snapshot_after_warmup() -> None:
            await asyncio.sleep(max(0.0, warmed - asyncio.get_running_loop().time()))
            snapshots.append(await ctx.snapshot())

        warm_snap = asyncio.ensure_future(snapshot_after_warmup())
        result = await open_loop(ctx, active, a.per_conn_rate * a.conns, a.warmup, a.duration, on_tick=sample)
        await warm_snap
        end_snap = await ctx.snapshot()
    finally:
        await close_all(clients, timeout=30.0)
    peak = max(rss for _, rss in samples) if samples else rss_kb(pid)
    t0 = samples[0][0] if samples else 0.0
    steady = [(t, rss) for t, rss in samples if t - t0 >= a.warmup + a.duration / 10]
    return {
        "conns": a.conns,
        "per_conn_rate": a.per_conn_rate,
        "rss_before_kb": before,
        "rss_idle_kb": idle_rss,
        "rss_active_peak_kb": peak,
        "kb_per_conn": round((peak - before) / a.conns, 2),
        "idle_kb_per_conn": round((idle_rss - before) / a.conns, 2),
        "rss_slope_kb_per_min": round(slope_per_unit([t for t, _ in steady], [r for _, r in steady]) * 60, 1),
        "rss_steady_first_last_kb": [steady[0][1], steady[-1][1]] if steady else None,
        "tracemalloc_top": await ctx.tracemalloc_top(snapshots[0] if snapshots else None, end_snap),
        **result,
    }


async def run_churn(ctx: Context) -> dict[str, Any]:
    """K cycles of connect, subscribe, publish (acked), close, ``--concurrency`` at a time.

    RSS is sampled every ``cycles/20`` cycles; the slope (KB per 1,000 cycles) is fitted
    over the samples after the first 10% of cycles (warm-up: caches, allocator arenas).
    """
    ctx.require_realtime("churn")
    a, pid = ctx.args, _require_pid(ctx)
    prefix = f"room:churn-{uuid.uuid4().hex[:6]}"
    numbers = itertools.count()
    done = [0]
    errors: list[str] = []
    samples: list[tuple[int, float, int]] = []
    every = max(1, a.cycles // 20)
    rss_start = rss_kb(pid)
    t_start = time.monotonic()
    deadline = t_start + a.max_seconds

    async def cycle(i: int) -> None:
        client = await open_client(ctx.url, ctx.token, welcome=True)
        try:
            stream = f"{prefix}-{i % a.rooms}"
            for frame in (
                {"event": "stream.subscribe", "id": "s", "data": {"stream": stream}},
                {"event": "message.send", "id": f"{prefix}-{i}", "data": {"stream": stream, "text": f"churn {i}"}},
            ):
                reply = await client.call(frame)
                if reply.get("event") != "ack":
                    raise BenchError(f"{frame['event']}: {reply!r:.200}")
        finally:
            await client.close()

    async def worker(limit: int) -> None:
        while time.monotonic() < deadline:
            i = next(numbers)
            if i >= limit:
                return
            try:
                await cycle(i)
            except (OSError, TimeoutError, BenchError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                if len(errors) > max(10, a.cycles // 100):
                    raise BenchError(f"too many failed cycles: {errors[:3]}") from exc
            done[0] += 1
            if done[0] % every == 0:
                samples.append((done[0], time.monotonic() - t_start, rss_kb(pid)))

    # Warm-up (the first 10% of cycles), a tracemalloc snapshot when asked for, then the rest.
    warm = a.cycles // 10
    await asyncio.gather(*(worker(warm) for _ in range(a.concurrency)))
    numbers = itertools.count(warm)
    snap0 = await ctx.snapshot()
    await asyncio.gather(*(worker(a.cycles) for _ in range(a.concurrency)))
    elapsed = time.monotonic() - t_start
    await asyncio.sleep(a.settle)
    rss_end = rss_kb(pid)
    snap1 = await ctx.snapshot()
    steady = [s for s in samples if s[0] > a.cycles // 10] or samples
    slope_cycles = slope_per_unit([s[0] for s in steady], [s[2] for s in steady]) * 1000
    slope_time = slope_per_unit([s[1] for s in steady], [s[2] for s in steady]) * 60
    return {
        "cycles": done[0],
        "cycles_requested": a.cycles,
        "concurrency": a.concurrency,
        "seconds": round(elapsed, 2),
        "cycles_per_s": round(done[0] / elapsed, 1),
        "failed_cycles": len(errors),
        "first_errors": errors[:3],
        "rss_start_kb": rss_start,
        "rss_after_warmup_kb": steady[0][2] if steady else None,
        "rss_end_kb": rss_end,
        "slope_kb_per_1000_cycles": round(slope_cycles, 2),
        "slope_kb_per_min": round(slope_time, 1),
        "rss_samples": [[s[0], s[2]] for s in samples],
        "tracemalloc_top": await ctx.tracemalloc_top(snap0, snap1),
    }
