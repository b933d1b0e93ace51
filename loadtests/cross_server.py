"""Cross-server fan-out through the Redis bus, with the ``bench fanout`` load generator.

    python -m loadtests.cross_server --layer core   --runs 3 --subscribers 1000 --publishers 4 --window 4
    python -m loadtests.cross_server --layer pubsub --runs 3 --subscribers 1000 --publishers 4 --rate 100

Each run starts a throwaway redis-server and two ``manage.py serve`` processes sharing it and
one SQLite database: server B (pinned to core 0, as the single server of ``bench fanout``)
holds the S picows subscribers of one room; server A (pinned to core 1, with Redis and this
load generator) takes the P publishers. The measurement is ``loadtests.streams.run_fanout``
itself, so deliveries/s, per B-CPU-second and publish-to-delivery latency compare directly
with the single-server figures; A's and Redis's CPU are reported as ``a_cpu_pct`` and
``redis_cpu_pct``. One JSON line per run, ``"target": "cross-LAYER"`` (``--label`` appends a
tag, e.g. the server checkout under ``BENCH_SERVER_REPO``). Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import uvloop

from loadtests import streams
from loadtests.common import pin_to_cpu, raise_nofile, source_fingerprint
from loadtests.context import BenchError, Context
from loadtests.server import (
    LOADGEN_CPU,
    SERVER_CPU,
    SERVER_REPO,
    Database,
    Server,
    obtain_token,
    prepare_database,
    server_env,
)
from tests.e2e.redis_server import RedisServer, free_port

PARAMS = ("layer", "subscribers", "publishers", "rate", "window", "messages", "warmup", "duration")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layer", choices=("core", "pubsub"), default="core", help="REALTIME_REDIS_LAYER")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--label", default="", help="appended to the target, to tell checkouts apart")
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--publishers", type=int, default=4)
    p.add_argument("--window", type=int, default=4, help="publishes in flight per publisher (closed loop)")
    p.add_argument("--rate", type=float, default=0.0, help="publishes/s in total (0: closed loop)")
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--open-concurrency", type=int, default=200)
    p.add_argument("--send-queue", type=int, default=100_000)
    p.add_argument("--send-queue-bytes", type=int, default=256 * 1024 * 1024)
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--keep-logs", metavar="DIR", help="keep the servers' logs in DIR")
    p.add_argument("--pause-before", type=float, default=0.0, help="seconds to wait after startup (to attach py-spy)")
    return p.parse_args(argv)


def _env(args: argparse.Namespace, database: Database, redis: RedisServer) -> dict[str, str]:
    overrides = {
        "REDIS_URL": redis.url,
        "REALTIME_REDIS_LAYER": args.layer,
        "REALTIME_SEND_QUEUE": str(args.send_queue),
        "REALTIME_SEND_QUEUE_BYTES": str(args.send_queue_bytes),
    }
    for item in args.server_env:
        key, _, value = item.partition("=")
        overrides[key] = value
    return server_env(database.url, overrides)


async def one_run(args: argparse.Namespace, database: Database, log_dir: Path, run: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"redis-{run}-", dir=log_dir))
    redis = RedisServer(port=free_port(), workdir=workdir).start()
    assert redis.proc is not None
    os.sched_setaffinity(redis.proc.pid, {LOADGEN_CPU})
    env = _env(args, database, redis)
    b = Server(env, log_dir / f"b{run}.log", cpu=SERVER_CPU)
    a = Server(env, log_dir / f"a{run}.log", cpu=LOADGEN_CPU)
    record: dict[str, Any] = {
        "mode": "fanout",
        "target": f"cross-{args.layer}" + (f"-{args.label}" if args.label else ""),
        "run": run,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": {key: getattr(args, key) for key in PARAMS},
    }
    try:
        await asyncio.to_thread(b.start)
        await asyncio.to_thread(a.start)
        print(f"# run {run}: B pid {b.pid}, A pid {a.pid}, redis pid {redis.proc.pid}", file=sys.stderr, flush=True)
        if args.pause_before:
            await asyncio.sleep(args.pause_before)
        token = await asyncio.to_thread(obtain_token, b)
        ctx = Context(
            b.ws_url,
            token,
            "realtime",
            b.pid,
            args,
            publish_url=a.ws_url,
            other_pids={"a": a.pid, "redis": redis.proc.pid},
        )
        t0 = time.monotonic()
        try:
            record["results"] = await streams.run_fanout(ctx)
            record["ok"] = True
        except (BenchError, OSError, TimeoutError, ConnectionError) as exc:
            record["ok"], record["error"] = False, f"{type(exc).__name__}: {exc}"[:1000]
        record["wall_seconds"] = round(time.monotonic() - t0, 2)
        record["server"] = {
            "b_pid": b.pid,
            "a_pid": a.pid,
            "env": {k: v for k, v in env.items() if k.startswith("REALTIME_")},
        }
    finally:
        for server in (a, b):
            await asyncio.to_thread(server.stop)
        redis.kill()
    return record


async def main(args: argparse.Namespace) -> int:
    machine: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "loadgen_cpu": pin_to_cpu(LOADGEN_CPU),
        "nofile": raise_nofile(),
        "server_source": source_fingerprint(SERVER_REPO),
    }
    log_dir = Path(args.keep_logs or tempfile.mkdtemp(prefix="realtime-xserver-"))
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    database = await asyncio.to_thread(prepare_database, None)
    failures = 0
    try:
        for run in range(1, args.runs + 1):
            record = await one_run(args, database, log_dir, run)
            record["machine"] = {**machine, "loadavg": [round(x, 2) for x in os.getloadavg()]}
            failures += not record.get("ok")
            sys.stdout.write(orjson.dumps(record).decode() + "\n")
            sys.stdout.flush()
    finally:
        database.cleanup()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(uvloop.run(main(parse_args())))
