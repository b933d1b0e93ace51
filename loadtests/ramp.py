"""Echo latency while 10,000 connections pour in, and the server's collector pauses (issue 19).

    python -m loadtests.ramp --runs 3

Each run starts a fresh ``manage.py serve`` pinned to core 0 (this process pins itself to
core 1) with ``REALTIME_GC_TRACE`` set, opens ``--echo-conns`` connections that echo
``--rate`` messages per second in total on a fixed schedule (latency from each message's
scheduled send time, as ``bench latency``), and after ``--before`` seconds starts a second
process on core 1 that opens ``--ramp-conns`` more connections as fast as it can (welcome
read, ``--open-concurrency`` handshakes at a time) and keeps them open. The echo goes on
for ``--after`` seconds once the last of them is open. Then the ramp connections are
dropped, and after ``--settle`` seconds the server is stopped, so its trace ends with the
frozen-object count once they are gone.

Both variants run in every round, side by side: ``baseline`` (``REALTIME_GC_FREEZE=0``,
CPython's collector defaults) and ``policy`` (the server's default,
``realtime/server/gc_policy.py``). One JSON line per run: echo p50/p99/max per 1-second
window and per phase (before, ramp, after), the ramp's duration, and the collections
inside the server (count, max and total milliseconds per generation, during the ramp and
in the whole run). The last line holds the medians per variant. This process freezes and
disables its own collector while it measures, so the pauses seen are the server's.
"""

# ruff: noqa: ASYNC109, ASYNC110 - bounded waits and polls with explicit bounds, on purpose

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import math
import os
import signal
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import uvloop

from loadtests.common import (
    latency_summary,
    pin_to_cpu,
    proc_cpu_seconds,
    raise_nofile,
    rss_kb,
    source_fingerprint,
)
from loadtests.context import ECHO, ERROR_PREFIX
from loadtests.server import (
    LOADGEN_CPU,
    PYTHON,
    REPO,
    SERVER_REPO,
    Server,
    log_directory,
    obtain_token,
    prepare_database,
    realtime_server,
)
from loadtests.wsclient import WsClient, close_all, open_client

VARIANTS = {"baseline": "0", "policy": "1"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="rounds; each runs every variant once")
    p.add_argument("--variants", default="baseline,policy", help="comma-separated: baseline, policy")
    p.add_argument("--echo-conns", type=int, default=1000)
    p.add_argument("--rate", type=float, default=1000.0, help="echoes per second, all echo connections together")
    p.add_argument("--ramp-conns", type=int, default=10_000)
    p.add_argument("--open-concurrency", type=int, default=200, help="handshakes in flight while ramping")
    p.add_argument("--before", type=float, default=3.0, help="seconds of echo before the ramp")
    p.add_argument("--after", type=float, default=10.0, help="seconds of echo after the last connection opened")
    p.add_argument("--settle", type=float, default=3.0, help="seconds after dropping the ramp before stopping")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra server env")
    p.add_argument("--keep-logs", metavar="DIR", help="keep the server logs and gc traces in DIR")
    # The ramp's own process (started by a run, not by hand).
    p.add_argument("--hold", metavar="URL", help=argparse.SUPPRESS)
    p.add_argument("--token", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# The process that opens the ramp ----------------------------------------------------------


async def hold(url: str, token: str, count: int, concurrency: int) -> None:
    """Open ``count`` connections, print one JSON line, keep them until stdin closes."""
    gc.disable()  # a load generator of bounded life: its own pauses would slow the ramp
    semaphore = asyncio.Semaphore(concurrency)
    clients: list[WsClient] = []
    failures = 0

    async def one() -> None:
        nonlocal failures
        async with semaphore:
            try:
                clients.append(await open_client(url, token, welcome=True, timeout=60.0))
            except (OSError, TimeoutError, ConnectionError):
                failures += 1

    t0 = time.time()
    await asyncio.gather(*(one() for _ in range(count)))
    print(orjson.dumps({"t0": t0, "t1": time.time(), "opened": len(clients), "failed": failures}).decode(), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for client in clients:
        client.abort()


# One run ----------------------------------------------------------------------------------


class Echo:
    """Open-loop echo at a fixed rate; keeps (scheduled wall time, latency) per reply."""

    def __init__(self, clients: list[WsClient], rate: float) -> None:
        self.clients = clients
        self.rate = rate
        self.samples: list[tuple[float, float]] = []
        self.errors = 0
        self.sent = 0
        self.received = 0
        self.running = True
        # Wall-clock time of a monotonic instant, to compare with the server's trace.
        self.offset = time.time() - time.monotonic()
        for client in clients:
            client.state = collections.deque()
            client.on_frame = self.on_frame

    def on_frame(self, client: WsClient, data: bytes) -> None:
        scheduled = client.state.popleft()
        self.received += 1
        if data.startswith(ERROR_PREFIX):
            self.errors += 1
        self.samples.append((scheduled + self.offset, time.monotonic() - scheduled))

    async def run(self) -> None:
        n, start, k = len(self.clients), time.monotonic(), 0
        while self.running:
            due = int((time.monotonic() - start) * self.rate) + 1
            while k < due:
                client = self.clients[k % n]
                client.state.append(start + k / self.rate)
                client.send(ECHO)
                k += 1
            self.sent = k
            await asyncio.sleep(0.001)

    async def drain(self, timeout: float) -> int:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.received < self.sent:
                    await asyncio.sleep(0.01)
        return self.sent - self.received


def windows(samples: list[tuple[float, float]], origin: float, end: float) -> list[dict[str, Any]]:
    """Latency per 1-second window of scheduled send time, ``origin`` being the ramp's start."""
    buckets: dict[int, list[float]] = collections.defaultdict(list)
    for scheduled, latency in samples:
        if scheduled < end:
            buckets[math.floor(scheduled - origin)].append(latency)
    rows = []
    for second in sorted(buckets):
        s = latency_summary(buckets[second])
        rows.append({"s": second, "n": s["samples"], "p50": s["p50_ms"], "p99": s["p99_ms"], "max": s["max_ms"]})
    return rows


def phase(samples: list[tuple[float, float]], lo: float, hi: float) -> dict[str, float | int]:
    return latency_summary([latency for scheduled, latency in samples if lo <= scheduled < hi])


def read_trace(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def pauses(records: list[dict[str, Any]], lo: float, hi: float) -> dict[str, dict[str, float]]:
    """Count, max and total ms of the collections per generation that ended in [lo, hi)."""
    out: dict[str, dict[str, float]] = {}
    for gen in (0, 1, 2):
        ms = [r["ms"] for r in records if r.get("gen") == gen and lo <= r["t"] < hi]
        out[f"gen{gen}"] = {"count": len(ms), "max_ms": round(max(ms, default=0.0), 2), "total_ms": round(sum(ms), 1)}
    return out


async def open_echo_clients(url: str, token: str, count: int) -> list[WsClient]:
    semaphore = asyncio.Semaphore(200)

    async def one() -> WsClient:
        async with semaphore:
            return await open_client(url, token, welcome=True)

    async with asyncio.timeout(120):
        return list(await asyncio.gather(*(one() for _ in range(count))))


async def one_run(args: argparse.Namespace, server: Server, trace: Path) -> dict[str, Any]:
    token = await asyncio.to_thread(obtain_token, server)
    clients = await open_echo_clients(server.ws_url, token, args.echo_conns)
    await census(server)
    gc.collect()
    gc.freeze()
    gc.disable()
    echo = Echo(clients, args.rate)
    pacer = asyncio.ensure_future(echo.run())
    opener: asyncio.subprocess.Process | None = None
    try:
        await asyncio.sleep(args.before)
        rss_before = rss_kb(server.pid)
        cpu_before = proc_cpu_seconds(server.pid)
        opener = await asyncio.create_subprocess_exec(
            *(PYTHON, "-m", "loadtests.ramp", "--hold", server.ws_url, "--token", token),
            *("--ramp-conns", str(args.ramp_conns), "--open-concurrency", str(args.open_concurrency)),
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert opener.stdout is not None
        async with asyncio.timeout(300):
            ramp = orjson.loads(await opener.stdout.readline())
        ramp_cpu = proc_cpu_seconds(server.pid) - cpu_before  # the server's CPU while the ramp ran
        await asyncio.sleep(args.after)
        rss_ramped = rss_kb(server.pid)
        end = time.time()
        echo.running = False
        await pacer
        unanswered = await echo.drain(10.0)
        await census(server)
    finally:
        echo.running = False
        pacer.cancel()
        if opener is not None and opener.returncode is None:
            assert opener.stdin is not None
            opener.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(opener.wait(), 60)
            if opener.returncode is None:
                opener.kill()
        gc.enable()
        gc.unfreeze()
    await asyncio.sleep(args.settle)
    rss_dropped = rss_kb(server.pid)
    await census(server)
    for client in clients:
        client.on_frame = None
    await close_all(clients)
    exit_code = await asyncio.to_thread(server.stop)
    records = read_trace(trace)
    t0, t1 = ramp["t0"], ramp["t1"]
    start = min((s for s, _ in echo.samples), default=t0)
    policy = next((r for r in records if r.get("event") == "policy"), {})
    stopped = next((r for r in records if r.get("event") == "stopped"), {})
    counts = [r["frozen"] + r["tracked"] for r in records if r.get("event") == "census"]
    return {
        "ramp": {
            "opened": ramp["opened"],
            "failed": ramp["failed"],
            "seconds": round(t1 - t0, 2),
            "server_cpu_s": round(ramp_cpu, 2),
            # Opens per second of the server's CPU (the machine is shared: rates per CPU-second hold better).
            "opens_per_cpu_s": round(ramp["opened"] / ramp_cpu) if ramp_cpu > 0 else None,
        },
        "echo": {
            "before": phase(echo.samples, start, t0),
            "ramp": phase(echo.samples, t0, t1),
            "after": phase(echo.samples, t1, end),
            "worst_window_p99_ms": max((w["p99"] for w in windows(echo.samples, t0, end)), default=None),
            "errors": echo.errors,
            "unanswered": unanswered,
        },
        "gc_ramp": pauses(records, t0, t1),
        "gc_run": pauses(records, start, end),
        "gc_after_drop": pauses(records, end, math.inf),
        "reclaims": stopped.get("reclaims"),
        "gc_startup": [r for r in records if r.get("why") == "startup"],
        "frozen": {"startup": policy.get("frozen"), "stopped": stopped.get("frozen")},
        # Objects the collector tracks (frozen or not) per ramp connection while they are open,
        # and what is left per connection once they are gone (uncollected garbage, caches).
        "tracked_per_conn": per_conn(counts, 1, ramp["opened"]),
        "left_per_conn_after_drop": per_conn(counts, 2, ramp["opened"]),
        "threshold": policy.get("threshold"),
        "rss_kb": {"before": rss_before, "ramped": rss_ramped, "dropped": rss_dropped},
        "windows": windows(echo.samples, t0, end),
        "server_exit_code": exit_code,
    }


async def census(server: Server) -> None:
    """Ask the server (traced) to append a census of tracked objects to its gc trace."""
    os.kill(server.pid, signal.SIGUSR1)
    await asyncio.sleep(0.5)


def per_conn(counts: list[int], index: int, conns: int) -> float | None:
    if len(counts) <= index or not conns:
        return None
    return round((counts[index] - counts[0]) / conns, 1)


def median_of(rows: list[dict[str, Any]], *keys: str) -> float | None:
    values = []
    for row in rows:
        value: Any = row
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            values.append(value)
    return round(statistics.median(values), 2) if values else None


def summary(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for variant, rows in results.items():
        row: dict[str, Any] = {"runs": len(rows)}
        for ph in ("before", "ramp", "after"):
            row[f"{ph}_p99_ms"] = median_of(rows, "echo", ph, "p99_ms")
            row[f"{ph}_max_ms"] = median_of(rows, "echo", ph, "max_ms")
        row["ramp_p99_ms_per_run"] = [r["echo"]["ramp"].get("p99_ms") for r in rows]
        row["worst_window_p99_ms"] = median_of(rows, "echo", "worst_window_p99_ms")
        row["ramp_seconds"] = median_of(rows, "ramp", "seconds")
        row["ramp_opens_per_cpu_s"] = median_of(rows, "ramp", "opens_per_cpu_s")
        for gen in ("gen0", "gen1", "gen2"):
            row[f"ramp_{gen}"] = {k: median_of(rows, "gc_ramp", gen, k) for k in ("count", "max_ms", "total_ms")}
        row["rss_ramped_kb"] = median_of(rows, "rss_kb", "ramped")
        row["tracked_per_conn"] = median_of(rows, "tracked_per_conn")
        row["left_per_conn_after_drop"] = median_of(rows, "left_per_conn_after_drop")
        out[variant] = row
    return out


async def main(args: argparse.Namespace) -> int:
    if args.hold:
        await hold(args.hold, args.token, args.ramp_conns, args.open_concurrency)
        return 0
    machine: dict[str, Any] = {"cpus": os.cpu_count(), "loadgen_cpu": pin_to_cpu(LOADGEN_CPU), "nofile": raise_nofile()}
    if machine["nofile"] < args.echo_conns + args.ramp_conns + 100:
        raise SystemExit(f"the open-file limit {machine['nofile']} is too low for {args.ramp_conns} connections")
    machine["server_source"] = source_fingerprint(SERVER_REPO)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    failures = 0
    with log_directory(args.keep_logs) as log_dir:
        database = await asyncio.to_thread(prepare_database, None)
        try:
            for run in range(1, args.runs + 1):
                for variant in variants:
                    trace = Path(log_dir) / f"gc-{variant}-{run}.jsonl"
                    overrides = {"REALTIME_GC_FREEZE": VARIANTS[variant], "REALTIME_GC_TRACE": str(trace)}
                    for item in args.server_env:
                        key, _, value = item.partition("=")
                        overrides[key] = value
                    server = realtime_server(database, log_dir, overrides)
                    await asyncio.to_thread(server.start)
                    record: dict[str, Any] = {
                        "mode": "ramp",
                        "variant": variant,
                        "run": run,
                        "date": datetime.now(UTC).isoformat(timespec="seconds"),
                        "params": {
                            k: getattr(args, k) for k in ("echo_conns", "rate", "ramp_conns", "before", "after")
                        },
                    }
                    try:
                        record["results"] = await one_run(args, server, trace)
                        record["ok"] = True
                        results[variant].append(record["results"])
                    except (OSError, TimeoutError, ConnectionError, KeyError, ValueError) as exc:
                        record["ok"], record["error"] = False, f"{type(exc).__name__}: {exc}"[:1000]
                        failures += 1
                        server.stop()
                    record["machine"] = {**machine, "loadavg": [round(x, 2) for x in os.getloadavg()]}
                    sys.stdout.write(orjson.dumps(record).decode() + "\n")
                    sys.stdout.flush()
        finally:
            database.cleanup()
    sys.stdout.write(orjson.dumps({"mode": "ramp-summary", "medians": summary(results)}).decode() + "\n")
    return 1 if failures else 0


def run(argv: list[str] | None = None) -> int:
    return uvloop.run(main(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(run())
