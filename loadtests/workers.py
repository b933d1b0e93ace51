"""``serve --workers N`` against one process: ``python -m loadtests.workers [options]``.

For each run, mode and variant, a fresh server on a fresh port runs one ``bench`` mode
(``throughput``: pipelined echo; ``fanout``: S subscribers of one room, P publishers in a
closed loop), and one JSON line reports the total rate, the server's CPU (the supervisor
and every worker, from /proc/PID/stat, each worker's share too), Redis's CPU, the load
generator's CPU, the rate per server CPU-second and how many connections each worker
accepted. Variants, run interleaved (``--runs 3`` = three rounds of all of them):

- ``1-local``: plain ``serve``, the embedded in-memory layer, pinned to core 0;
- ``1-redis``: the same with ``REDIS_URL`` (the bus cost of N workers, on one);
- ``2-redis``: ``serve --workers 2`` with ``REDIS_URL``, unpinned (the workers need both
  cores, so they share core 1 with the load generator: the total is a floor).

The load generator is pinned to core 1; Redis (started here, throwaway, no persistence,
unless ``--redis-url``) floats. The last lines are the medians, and ``N=2 / N=1`` ratios
in total and per server CPU-second. ``--profile DIR`` records every worker with py-spy
(``record --gil -r 200 --format raw``) during the measured window; such runs are marked
and are not figures. ``--summarize FILE ...`` prints the tables again from saved lines,
one per server source (so a ``BENCH_SERVER_REPO=/tmp/baseline`` run sits next to ours);
``--profile-report FILE ...`` sums such profiles (metrics, Redis, bus, registry shares).

    python -m loadtests.workers --runs 3 --modes throughput,fanout
    python -m loadtests.workers --runs 1 --modes throughput --variants 2-redis --profile /tmp/prof
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import uvloop

from loadtests import bench, echo, streams
from loadtests.common import WATCHED, pin_to_cpu, proc_cpu_by_pid, raise_nofile, source_fingerprint
from loadtests.context import Context
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

RATE_KEY = {"throughput": "msgs_per_s", "fanout": "deliveries_per_s"}
PY_SPY = str(Path(sys.executable).parent / "py-spy")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="rounds; each round runs every mode and variant once")
    p.add_argument("--modes", default="throughput,fanout", help="throughput, fanout")
    p.add_argument("--variants", default="1-local,1-redis,2-redis", help="N-local or N-redis, comma-separated")
    p.add_argument("--conns", type=int, default=100, help="throughput: connections")
    p.add_argument("--window", type=int, default=16, help="throughput: echoes in flight per connection")
    p.add_argument("--subscribers", type=int, default=1000, help="fanout: subscribers of the one room")
    p.add_argument("--publishers", type=int, default=4, help="fanout: publishing connections")
    p.add_argument("--fanout-window", type=int, default=4, help="fanout: publishes in flight per publisher")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--redis-url", help="an existing Redis (default: a throwaway redis-server started here)")
    p.add_argument("--database-url", help="default: a temporary SQLite file")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra server env")
    p.add_argument("--profile", metavar="DIR", help="py-spy every worker during the measured window into DIR")
    p.add_argument("--summarize", nargs="+", metavar="FILE", help="only print the tables of saved JSON lines")
    p.add_argument("--profile-report", nargs="+", metavar="FILE", help="only summarize py-spy raw files")
    return p.parse_args(argv)


def variant(name: str) -> tuple[int, bool]:
    count, _, bus = name.partition("-")
    if bus not in ("local", "redis") or not count.isdigit() or (int(count) > 1 and bus != "redis"):
        raise SystemExit(f"bad variant {name!r}: N-local (N=1 only) or N-redis")
    return int(count), bus == "redis"


@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[tuple[str, int | None]]:
    """A throwaway loopback redis-server (its URL and pid), or ``url`` as given (pid unknown)."""
    if url:
        yield url, None
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (scripts/services.sh installs it)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="realtime-bench-redis-")
    every = range(os.cpu_count() or 1)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        preexec_fn=lambda: os.sched_setaffinity(0, every),  # not the load generator's core only
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def established_by_pid(pids: list[int], port: int) -> dict[int, int]:
    """How many established TCP connections on ``port`` each of ``pids`` holds (/proc/net/tcp)."""
    owner: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        owner[int(link[8:-1])] = pid
    counts = dict.fromkeys(pids, 0)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if fields[3] == "01" and local_port == port and int(fields[9]) in owner:
                    counts[owner[int(fields[9])]] += 1
    return counts


def is_worker(pid: int) -> bool:
    """Not multiprocessing's resource tracker, the supervisor's other (idle) child."""
    try:
        return b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class Watcher:
    """Samples which worker holds the connections; when they are all open, py-spies the workers."""

    def __init__(self, server: Server, expected: int, profile: Path | None, seconds: float, label: str) -> None:
        self.server, self.expected, self.profile, self.seconds, self.label = server, expected, profile, seconds, label
        self.best: dict[int, int] = {}
        self.spies: list[subprocess.Popen[bytes]] = []

    def workers(self) -> list[int]:
        pids = [pid for pid in proc_cpu_by_pid(self.server.pid) if pid != self.server.pid and is_worker(pid)]
        return sorted(pids) or [self.server.pid]

    async def run(self, warmup: float) -> None:
        while True:
            counts = await asyncio.to_thread(established_by_pid, self.workers(), self.server.port)
            if sum(counts.values()) > sum(self.best.values()):
                self.best = counts
            if self.profile is not None and not self.spies and sum(counts.values()) >= self.expected:
                await asyncio.sleep(warmup + 0.5)
                self.spies = [self._spy(pid) for pid in counts]
            await asyncio.sleep(0.5)

    def _spy(self, pid: int) -> subprocess.Popen[bytes]:
        assert self.profile is not None
        out = self.profile / f"{self.label}-{pid}.txt"
        argv = [PY_SPY, "record", "--gil", "-r", "200", "--format", "raw", "-p", str(pid)]
        argv += ["-d", str(max(1, int(self.seconds) - 1)), "-o", str(out), "--nonblocking"]
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def finish(self) -> None:
        for spy in self.spies:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(30)
            if spy.poll() is None:
                spy.send_signal(signal.SIGINT)
                spy.wait(10)


def mode_namespace(args: argparse.Namespace, mode: str) -> argparse.Namespace:
    common = ["--duration", str(args.duration), "--warmup", str(args.warmup)]
    if mode == "throughput":
        argv = [mode, "--conns", str(args.conns), "--window", str(args.window), *common]
    else:
        argv = [mode, "--subscribers", str(args.subscribers), "--publishers", str(args.publishers)]
        argv += ["--window", str(args.fanout_window), *common]
    return bench.mode_args(bench.parse_args(argv), mode)


async def one_run(
    args: argparse.Namespace, mode: str, name: str, run: int, database: Database, redis_url: str, log_dir: str
) -> dict[str, Any]:
    count, with_redis = variant(name)
    overrides = {"REALTIME_SEND_QUEUE": "100000", "REALTIME_SEND_QUEUE_BYTES": str(256 * 1024 * 1024)}
    for item in args.server_env:
        key, _, value = item.partition("=")
        overrides[key] = value
    if with_redis:
        overrides["REDIS_URL"] = redis_url
    server = Server(
        server_env(database.url, overrides),
        Path(log_dir) / f"server-{mode}-{name}-{run}.log",
        extra_args=("--workers", str(count)) if count > 1 else (),
        cpu=SERVER_CPU if count == 1 else "every",
    )
    await asyncio.to_thread(server.start)
    label = f"{mode}-{name}-{run}"
    profile = Path(args.profile) if args.profile else None
    a = mode_namespace(args, mode)
    expected = a.conns if mode == "throughput" else a.subscribers + a.publishers
    watcher = Watcher(server, expected, profile, args.duration, label)
    watching = asyncio.create_task(watcher.run(args.warmup))
    record: dict[str, Any] = {"mode": mode, "variant": name, "workers": count, "redis": with_redis, "run": run}
    record |= {"date": datetime.now(UTC).isoformat(timespec="seconds"), "profiled": profile is not None}
    try:
        token = await asyncio.to_thread(obtain_token, server)
        results = await getattr(echo if mode == "throughput" else streams, f"run_{mode}")(
            Context(server.ws_url, token, "realtime", server.pid, a)
        )
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        await asyncio.to_thread(watcher.finish)
        record["exit_code"] = await asyncio.to_thread(server.stop)
    rate = results[RATE_KEY[mode]]
    cpu = results.get("server_cpu_pct") or 0.0
    by_pid = results.get("server_cpu_pct_by_pid") or {str(server.pid): cpu}
    record["rate"] = rate
    record["server_cpu_s_per_s"] = round(cpu / 100, 3)
    record["rate_per_server_cpu_s"] = round(rate / (cpu / 100)) if cpu else None
    record["redis_cpu_pct"] = results.get("redis_cpu_pct")
    record["loadgen_cpu_pct"] = results.get("loadgen_cpu_pct")
    record["per_worker"] = [
        {"pid": pid, "conns": conns, "cpu_pct": by_pid.get(str(pid))} for pid, conns in sorted(watcher.best.items())
    ]
    record["supervisor_cpu_pct"] = by_pid.get(str(server.pid)) if count > 1 else None
    record["results"] = results
    record["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    record["server_source"] = source_fingerprint(SERVER_REPO)
    record["server_repo"] = str(SERVER_REPO)
    return record


def _median(records: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in records if r.get(key) is not None]
    return statistics.median(values) if values else None


def summary_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians per (server checkout, mode, variant) over the unprofiled runs, with N / 1-redis ratios."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        if not r.get("profiled") and r.get("rate") is not None:
            # By checkout, not by fingerprint: others may edit the server between rounds.
            groups.setdefault((r.get("server_repo", "?"), r["mode"], r["variant"]), []).append(r)
    rows: list[dict[str, Any]] = []
    for (source, mode, name), group in groups.items():
        row: dict[str, Any] = {"source": source, "mode": mode, "variant": name, "runs": len(group)}
        row["fingerprints"] = sorted({r.get("server_source", "?") for r in group})
        for key in ("rate", "server_cpu_s_per_s", "rate_per_server_cpu_s", "redis_cpu_pct", "loadgen_cpu_pct"):
            row[key] = _median(group, key)
        row["rates"] = sorted(r["rate"] for r in group)
        shares = [sorted((w["conns"] for w in r["per_worker"]), reverse=True) for r in group]
        row["conns_by_worker"] = shares
        row["cpu_pct_by_worker"] = [sorted((w["cpu_pct"] or 0 for w in r["per_worker"]), reverse=True) for r in group]
        rows.append(row)
    for row in rows:
        one = next((o for o in rows if o["source"] == row["source"] and o["mode"] == row["mode"]
                    and o["variant"] == "1-redis"), None)  # fmt: skip
        if one and one is not row and one["rate"] and one["rate_per_server_cpu_s"]:
            row["ratio_total_vs_1_redis"] = round(row["rate"] / one["rate"], 3)
            row["ratio_per_cpu_vs_1_redis"] = round(
                (row["rate_per_server_cpu_s"] or 0) / one["rate_per_server_cpu_s"], 3
            )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    head = "| source | mode | variant | rate (median; range) | server CPU-s/s | per server CPU-s | Redis % | loadgen % "
    head += "| conns by worker | CPU % by worker | N / 1-redis total | per CPU-s |"
    lines = [head, "|" + " --- |" * 12]
    for r in sorted(rows, key=lambda r: (r["mode"], r["source"], r["variant"])):
        rates = r["rates"]
        lines.append(
            f"| {r['source']} | {r['mode']} | {r['variant']} | {r['rate']:,.0f} ({rates[0]:,} to {rates[-1]:,}) "
            f"| {r['server_cpu_s_per_s']} | {r['rate_per_server_cpu_s'] or 0:,.0f} | {r['redis_cpu_pct']} "
            f"| {r['loadgen_cpu_pct']} | {r['conns_by_worker']} | {r['cpu_pct_by_worker']} "
            f"| {r.get('ratio_total_vs_1_redis', '')} | {r.get('ratio_per_cpu_vs_1_redis', '')} |"
        )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    modes = [m for m in args.modes.split(",") if m]
    names = [v for v in args.variants.split(",") if v]
    for name in names:
        variant(name)
    if set(modes) - set(RATE_KEY):
        raise SystemExit(f"modes: {', '.join(RATE_KEY)}")
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    records: list[dict[str, Any]] = []
    failures = 0
    with redis_server(args.redis_url) as (redis_url, redis_pid), tempfile.TemporaryDirectory() as log_dir:
        if redis_pid is not None:
            WATCHED["redis"] = redis_pid
        pin_to_cpu(LOADGEN_CPU)
        raise_nofile()
        database = await asyncio.to_thread(prepare_database, args.database_url)
        try:
            for run in range(1, args.runs + 1):
                for mode in modes:
                    for name in names:
                        try:
                            record = await one_run(args, mode, name, run, database, redis_url, log_dir)
                        except Exception as exc:  # one failed run is reported, the rest go on
                            failures += 1
                            record = {"mode": mode, "variant": name, "run": run, "error": repr(exc)[:1000]}
                        records.append(record)
                        sys.stdout.write(orjson.dumps(record).decode() + "\n")
                        sys.stdout.flush()
        finally:
            database.cleanup()
    rows = summary_rows(records)
    sys.stdout.write(orjson.dumps({"summary": rows}).decode() + "\n")
    print(markdown(rows), file=sys.stderr)
    return 1 if failures else 0


def summarize(paths: list[str]) -> int:
    records = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            record = orjson.loads(line)
            if "mode" in record and "summary" not in record:
                records.append(record)
    print(markdown(summary_rows(records)))
    return 0


# Where a worker's GIL time goes that one process does not spend (or spends less of).
PROFILE_GROUPS = {
    "prometheus_client": "prometheus_client/",
    "realtime/ops/metrics.py": "realtime/ops/metrics.py",
    "redis client": "/redis/",
    "channels_redis": "channels_redis/",
    "bus": "realtime/streams/bus",
    "server registry": "server_registry",
    "logging": "logging/",
}


def profile_report(paths: list[str]) -> int:
    """Per py-spy raw file: the share of samples under each of PROFILE_GROUPS, and the top frames."""
    for path in paths:
        total, groups, frames = 0, dict.fromkeys(PROFILE_GROUPS, 0), dict[str, int]()
        for line in Path(path).read_text().splitlines():
            stack, _, samples = line.rpartition(" ")
            n = int(samples)
            total += n
            for name, part in PROFILE_GROUPS.items():
                groups[name] += n if part in stack else 0
            leaf = stack.rsplit(";", 1)[-1]
            frames[leaf] = frames.get(leaf, 0) + n
        print(f"{path}: {total} samples")
        for name, n in groups.items():
            print(f"  {100 * n / max(total, 1):5.1f} %  under {name}")
        for leaf, n in sorted(frames.items(), key=lambda item: -item[1])[:10]:
            print(f"  {100 * n / max(total, 1):5.1f} %  self {leaf[:120]}")
    return 0


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summarize:
        return summarize(args.summarize)
    if args.profile_report:
        return profile_report(args.profile_report)
    return uvloop.run(main(args))


if __name__ == "__main__":
    sys.exit(run())
