"""The benchmark harness: ``python -m loadtests.bench MODE [MODE ...] [options]``.

One asyncio process on uvloop, pinned to CPU 1, drives a server it starts itself on CPU 0
(``manage.py serve`` with a temporary SQLite database, or ``--target raw``: a raw
``websockets`` echo server, the Python ceiling). It prints ONE JSON line per run: mode,
parameters, results, the server's RSS (from /proc/PID/status), CPU use of both sides and
the date. Every loop is bounded in count and time; targets are loopback only.

    python -m loadtests.bench throughput --conns 100 --window 16
    python -m loadtests.bench throughput --target raw
    python -m loadtests.bench latency --conns 10000 --rate 5000 --duration 10
    python -m loadtests.bench idle-memory --conns 10000
    python -m loadtests.bench fanout --subscribers 1000
    python -m loadtests.bench publish --publishers 8 --window 8
    python -m loadtests.bench churn --cycles 10000
    python -m loadtests.bench scaling --levels 100,1000,10000
    python -m loadtests.bench latency throughput --runs 3     # several modes/runs, one server each

Each run gets a fresh server process (memory figures start clean; ``--one-server`` shares
one, for quick checks); the database is migrated once. ``--url URL --token T --server-pid PID``
measures a server you started yourself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import uvloop

from loadtests import echo, memory, streams
from loadtests.common import check_loopback, pin_to_cpu, proc_status_kb, raise_nofile, source_fingerprint
from loadtests.context import BenchError, Context
from loadtests.server import (
    LOADGEN_CPU,
    SERVER_REPO,
    Database,
    Server,
    log_directory,
    obtain_token,
    prepare_database,
    raw_server,
    realtime_server,
)

Mode = Callable[[Context], Awaitable[dict[str, Any]]]
MODES: dict[str, Mode] = {
    "latency": echo.run_latency,
    "throughput": echo.run_throughput,
    "scaling": echo.run_scaling,
    "idle-memory": memory.run_idle_memory,
    "active-memory": memory.run_active_memory,
    "churn": memory.run_churn,
    "fanout": streams.run_fanout,
    "publish": streams.run_publish,
}

# Per-mode defaults for the options left unset on the command line.
DEFAULTS: dict[str, dict[str, Any]] = {
    "latency": {"conns": 1000, "rate": 5000.0, "duration": 10.0},
    "throughput": {"conns": 100, "window": 16, "duration": 5.0},
    "scaling": {"duration": 4.0},
    "idle-memory": {"conns": 1000},
    "active-memory": {"conns": 1000, "duration": 10.0},
    "churn": {"cycles": 5000, "concurrency": 20},
    "fanout": {"window": 4, "rate": 0.0, "duration": 5.0, "publishers": 1},
    "publish": {"window": 8, "duration": 5.0, "publishers": 8},
}
COMMON = {"conns": 100, "window": 8, "rate": 0.0, "duration": 5.0, "warmup": 1.0, "cycles": 5000, "concurrency": 20}

NOTES = [
    "REALTIME_RATE_LIMIT=0: the per-connection rate limit is off so benchmarks are not throttled",
    "REALTIME_SEND_QUEUE raised (see server_env) so a briefly slow load generator is not closed as slow_consumer",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("modes", nargs="+", choices=sorted(MODES), metavar="MODE", help=", ".join(sorted(MODES)))
    p.add_argument("--target", choices=["realtime", "raw"], default="realtime")
    p.add_argument("--runs", type=int, default=1, help="runs of each mode, one JSON line each")
    p.add_argument("--one-server", action="store_true", help="one server for every run (quick checks, CI smoke)")
    p.add_argument("--database-url", help="default: a temporary SQLite file, migrated here")
    p.add_argument("--send-queue", type=int, default=100_000, help="REALTIME_SEND_QUEUE for the server")
    p.add_argument("--send-queue-bytes", type=int, default=256 * 1024 * 1024)
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra server env")
    p.add_argument("--keep-logs", metavar="DIR", help="keep the server's log in DIR")
    p.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="FRAMES",
        help="idle-memory, churn: diff allocation sites (RSS and timings then are not figures)",
    )
    p.add_argument("--url", help="use a running server instead of starting one (loopback only)")
    p.add_argument("--token", help="access token for --url")
    p.add_argument("--server-pid", type=int, help="PID of the --url server, for RSS and CPU figures")
    p.add_argument("--conns", type=int, help="connections (latency, throughput, memory modes)")
    p.add_argument("--rate", type=float, help="total msg/s (latency) or publishes/s (fanout; 0 = closed loop)")
    p.add_argument("--per-conn-rate", type=float, default=1.0, help="active-memory: msg/s per connection")
    p.add_argument("--window", type=int, help="messages in flight per connection (pipelined modes)")
    p.add_argument("--inflight", type=int, default=2000, help="scaling: total messages in flight")
    p.add_argument("--levels", default="100,1000,10000", help="scaling: connection counts")
    p.add_argument("--duration", type=float, help="measured seconds")
    p.add_argument("--warmup", type=float, help="seconds before measuring")
    p.add_argument("--subscribers", type=int, default=1000, help="fanout: subscribers of the one room")
    p.add_argument("--messages", type=int, default=1_000_000, help="fanout: at most this many publishes")
    p.add_argument(
        "--publishers", type=int, help="publish, fanout: publishing connections (default 8 for publish, 1 for fanout)"
    )
    p.add_argument("--cycles", type=int, help="churn: connect/subscribe/publish/close cycles")
    p.add_argument("--concurrency", type=int, help="churn: cycles in parallel")
    p.add_argument("--max-seconds", type=float, default=600.0, help="churn: stop after this long")
    p.add_argument("--rooms", type=int, default=100, help="memory modes, churn: rooms the connections spread over")
    p.add_argument("--warm", type=int, default=50, help="memory modes: connections opened before the baseline")
    p.add_argument("--settle", type=float, default=2.0, help="memory modes: seconds before reading RSS")
    p.add_argument("--open-concurrency", type=int, default=200, help="handshakes in flight while opening")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="serve --workers N (needs --server-env REDIS_URL=...; the server is then not pinned and shares "
        "core 1 with the load generator); with --url: the --server-pid is such a supervisor",
    )
    return p.parse_args(argv)


def mode_args(args: argparse.Namespace, mode: str) -> argparse.Namespace:
    filled = argparse.Namespace(**vars(args))
    for key, value in {**COMMON, **DEFAULTS[mode]}.items():
        if getattr(filled, key) is None:
            setattr(filled, key, value)
    return filled


PARAM_KEYS = {
    "latency": ["conns", "rate", "warmup", "duration"],
    "throughput": ["conns", "window", "warmup", "duration"],
    "scaling": ["levels", "inflight", "warmup", "duration"],
    "idle-memory": ["conns", "warm", "rooms", "settle", "tracemalloc"],
    "active-memory": ["conns", "per_conn_rate", "warm", "rooms", "warmup", "duration", "tracemalloc"],
    "churn": ["cycles", "concurrency", "rooms", "max_seconds", "tracemalloc"],
    "fanout": ["subscribers", "publishers", "rate", "window", "messages", "warmup", "duration"],
    "publish": ["publishers", "window", "warmup", "duration"],
}


def setup_params(args: argparse.Namespace) -> dict[str, Any]:
    """What else tells runs apart (so the summary does not merge them): workers, database kind."""
    extra: dict[str, Any] = {}
    if args.workers != 1:
        extra["workers"] = args.workers
    if args.database_url:
        extra["database"] = str(args.database_url).split(":", 1)[0]
    return extra


_tokens: dict[int, str] = {}


async def one_run(mode: str, args: argparse.Namespace, server: Server | None, run: int) -> dict[str, Any]:
    a = mode_args(args, mode)
    url = server.ws_url if server else str(args.url)
    pid = server.pid if server else args.server_pid
    token = args.token
    if server is not None and args.target == "realtime":
        if server.pid not in _tokens:
            _tokens[server.pid] = await asyncio.to_thread(obtain_token, server)
        token = _tokens[server.pid]
    record: dict[str, Any] = {
        "mode": mode,
        "target": args.target,
        "run": run,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": {key: getattr(a, key) for key in PARAM_KEYS[mode]} | setup_params(args),
    }
    start_status = proc_status_kb(pid) if pid else {}
    t0 = time.monotonic()
    try:
        traced = server.env.get("BENCH_TRACEMALLOC_DIR") if server else None
        record["results"] = await MODES[mode](Context(url, token, args.target, pid, a, traced))
        record["ok"] = True
    except (BenchError, OSError, TimeoutError, ConnectionError) as exc:
        record["ok"], record["error"] = False, f"{type(exc).__name__}: {exc}"[:1000]
        traceback.print_exc(file=sys.stderr)
    record["wall_seconds"] = round(time.monotonic() - t0, 2)
    end_status: dict[str, int] = {}
    if pid:
        with contextlib.suppress(OSError):
            end_status = proc_status_kb(pid)
    record["server"] = {
        "pid": pid,
        "cpu": server.cpu if server and isinstance(server.cpu, int) else None,
        "workers": args.workers,
        "rss_start_kb": start_status.get("VmRSS"),
        "rss_end_kb": end_status.get("VmRSS"),
        "rss_peak_kb": end_status.get("VmHWM"),
        "env": {k: v for k, v in (server.env if server else {}).items() if k.startswith(("REALTIME_", "JWT_"))},
    }
    return record


def server_overrides(args: argparse.Namespace) -> dict[str, str]:
    env = {"REALTIME_SEND_QUEUE": str(args.send_queue), "REALTIME_SEND_QUEUE_BYTES": str(args.send_queue_bytes)}
    for item in args.server_env:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def new_server(args: argparse.Namespace, database: Database | None, log_dir: str) -> Server:
    if args.target == "raw":
        return raw_server(log_dir)
    assert database is not None
    return realtime_server(database, log_dir, server_overrides(args), args.tracemalloc, args.workers)


async def run_with_server(
    mode: str, args: argparse.Namespace, run: int, shared: Server | None, database: Database | None, log_dir: str
) -> dict[str, Any]:
    """One run on the shared server, on ``--url``, or on a fresh server started and stopped for it."""
    if shared is not None or args.url:
        return await one_run(mode, args, shared, run)
    server = new_server(args, database, log_dir)
    await asyncio.to_thread(server.start)
    print(f"# {mode} run {run}: server pid {server.pid} at {server.ws_url}", file=sys.stderr, flush=True)
    try:
        record = await one_run(mode, args, server, run)
    finally:
        exit_code = await asyncio.to_thread(server.stop)
    record["server"]["exit_code"] = exit_code
    return record


async def main(args: argparse.Namespace) -> int:
    loadgen_cpu = pin_to_cpu(LOADGEN_CPU)
    nofile = raise_nofile()
    machine: dict[str, Any] = {"cpus": os.cpu_count(), "loadgen_cpu": loadgen_cpu, "nofile": nofile}
    machine["server_source"] = source_fingerprint(SERVER_REPO)
    if args.url:
        check_loopback(args.url)
    database: Database | None = None
    failures = 0
    with log_directory(args.keep_logs) as log_dir:
        try:
            if not args.url and args.target == "realtime":
                database = await asyncio.to_thread(prepare_database, args.database_url)
            shared: Server | None = None
            if args.one_server and not args.url:
                shared = new_server(args, database, log_dir)
                await asyncio.to_thread(shared.start)
            try:
                for mode in args.modes:
                    for run in range(1, args.runs + 1):
                        record = await run_with_server(mode, args, run, shared, database, log_dir)
                        record["machine"] = {**machine, "loadavg": [round(x, 2) for x in os.getloadavg()]}
                        record["notes"] = NOTES if args.target == "realtime" else ["raw websockets echo server"]
                        failures += not record["ok"]
                        sys.stdout.write(orjson.dumps(record).decode() + "\n")
                        sys.stdout.flush()
            finally:
                if shared is not None:
                    await asyncio.to_thread(shared.stop)
        finally:
            if database is not None:
                database.cleanup()
    return 1 if failures else 0


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return uvloop.run(main(args))


if __name__ == "__main__":
    sys.exit(run())
