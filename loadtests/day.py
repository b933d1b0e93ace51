"""A busy day of one server, compressed: the 24-hour memory-growth run (leak detection).

    python -m loadtests.day --hours 1          # the compressed day: a day's counts in one hour
    python -m loadtests.day --hours 24         # the day in real time
    python -m loadtests.day --minutes 5 --scale 0.1 --stable 200    # a quick check
    python -m loadtests.day --minutes 10 --tracemalloc 1           # allocation sites that grew

Starts one ``manage.py serve`` on a temporary SQLite database, pinned to core 0 (this
process pins itself to core 1), and drives it through the day below, every count spread
evenly over ``--hours`` (or ``--minutes``). Prints ONE JSON line: the counts issued, the
server's RSS (VmRSS of /proc/PID/status, sampled every ``--sample`` seconds) at start, after
warm-up and at the end, the RSS slope fitted after the first tenth (warm-up: caches,
allocator arenas) with its standard error, CPU of both sides, and every error.

The day (``--scale 1``; counts for 24 hours, whatever the run's length):

- **Stable connections**: 2,000 connections opened first and held all day, each subscribed
  to one of 50 rooms (40 per room). They send 1,200,000 echoes (one per connection every
  144 s of the day, which also keeps them inside the idle timeout of a real-time run) and
  144,000 persisted publishes (``message.send``) to their rooms.
- **Churn**: 24,000 visits, each 4 sessions of 2 minutes with 5 minutes away in between:
  96,000 connects, of which 72,000 are reconnects resuming with ``since`` = the last offset
  seen and the stream's ``epoch``, so the replay path runs (about 14 events per resume).
  A session authenticates (bearer token), subscribes to its room, sends 2 echoes and 1
  publish, receives its room's traffic, and then closes (1000), or every other session
  drops its socket without a close. 192,000 echoes and 96,000 publishes.
- **Totals**: 98,000 connects, 240,000 publishes, 1,392,000 echoes, about 10 million
  deliveries (each publish reaches the ~40 stable subscribers of its room and the visitors
  there), 4,800 token refreshes (``POST /api/auth/token/refresh/``, the rotated access
  token then sent as ``auth.refresh`` on a stable connection and used by later connects)
  and 4,800 history reads (``GET /api/server/streams/ROOM/history/`` with an API key).

Compressed into one hour that is 27 connects/s, 67 publishes/s, 387 echoes/s and about 2,800
deliveries/s: a modest fraction of a core on each side. Session lifetimes and gaps are
compressed with the day, so the population connected at once (2,000 stable + ~130
visitors) is the same at every ``--hours``.

Errors (the run's target is none): requests unanswered within 30 s, error replies,
unexpected close codes (anything but our own close), replay gaps (every delivered offset is
checked to be the previous one + 1 per subscriber, across a visit's reconnects), resumes
not ``recovered``, deliveries missing at the end (a stable subscriber behind its room's
head), failed sessions and HTTP calls. ``--tracemalloc N`` runs the server under
``loadtests.traced_serve`` and reports the allocation sites that grew between the end of
the warm-up tenth and the end; tracemalloc slows the server and adds its own memory, so
RSS and CPU of such a run are not figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import secrets
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import orjson
import uvloop

from loadtests.common import CpuMeter, pin_to_cpu, raise_nofile, rss_kb, slope_per_unit, source_fingerprint
from loadtests.context import Context
from loadtests.day_traffic import Conn, Stats, Traffic, Visit, http_json
from loadtests.fastclient import FastClient, open_fast_client
from loadtests.server import (
    LOADGEN_CPU,
    PASSWORD,
    SERVER_REPO,
    USERNAME,
    Server,
    log_directory,
    prepare_database,
    realtime_server,
)
from loadtests.wsclient import close_all

DAY_SECONDS = 86_400
# Counts per day at --scale 1 (see the module docstring).
DAY = {
    "stable_echoes": 1_200_000,
    "stable_publishes": 144_000,
    "visits": 24_000,
    "token_refreshes": 4_800,
    "history_reads": 4_800,
}
SESSIONS_PER_VISIT = 4
SESSION_SECONDS = 120.0  # of the day
GAP_SECONDS = 300.0  # of the day
DRAIN_SECONDS = 30.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hours", type=float, default=1.0, help="the day's length: 24 = real time, 1 = compressed")
    p.add_argument("--minutes", type=float, help="the day's length in minutes instead (smoke tests)")
    p.add_argument("--stable", type=int, default=2000, help="connections held all day")
    p.add_argument("--rooms", type=int, default=50, help="rooms the connections spread over")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies the day's counts (not --stable)")
    p.add_argument("--sample", type=float, help="seconds between RSS samples (default: the run's length / 360)")
    p.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES", help="diff allocation sites (slow)")
    p.add_argument("--database-url", help="default: a temporary SQLite file, migrated here")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra server env")
    p.add_argument("--keep-logs", metavar="DIR", help="keep the server's log in DIR")
    p.add_argument("--open-concurrency", type=int, default=100, help="handshakes in flight while opening")
    args = p.parse_args(argv)
    args.seconds = args.minutes * 60 if args.minutes is not None else args.hours * 3600
    args.sample = args.sample or max(0.5, args.seconds / 360)
    return args


async def paced(count: int, seconds: float, fire: Callable[[int], None], tick: float = 0.05) -> None:
    """Call ``fire(0..count-1)`` spread evenly over ``seconds``."""
    loop = asyncio.get_running_loop()
    t0, done = loop.time(), 0
    while done < count:
        due = min(count, int((loop.time() - t0) / max(seconds, 1e-9) * count) + 1)
        while done < due:
            fire(done)
            done += 1
        if done < count:
            await asyncio.sleep(tick)


def anon_file_kb(pid: int) -> list[int]:
    """[RssAnon, RssFile] of /proc/PID/status: heap growth against mapped files (SQLite, libraries)."""
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status if line.startswith(("RssAnon", "RssFile")))
    return [int(fields["RssAnon"].split()[0]), int(fields["RssFile"].split()[0])]


def fit(samples: list[tuple[float, int]]) -> dict[str, float | None]:
    """Least-squares slope of RSS (KB per second) with its standard error and the residuals' spread."""
    xs, ys = [t for t, _ in samples], [float(kb) for _, kb in samples]
    n = len(xs)
    if n < 3:
        return {"slope": None, "stderr": None, "residual_kb": None}
    slope = slope_per_unit(xs, ys)
    mx, my = sum(xs) / n, sum(ys) / n
    residuals = [y - (my + slope * (x - mx)) for x, y in zip(xs, ys, strict=True)]
    var_x = sum((x - mx) ** 2 for x in xs)
    sse = sum(r * r for r in residuals)
    return {"slope": slope, "stderr": math.sqrt(sse / (n - 2) / var_x), "residual_kb": math.sqrt(sse / n)}


async def open_stable(ctx: Context, stats: Stats, rooms: list[str]) -> list[Conn]:
    conns: list[Conn] = []

    async def setup(client: FastClient, i: int) -> None:
        reply = await client.call({"event": "stream.subscribe", "id": "sub", "data": {"stream": rooms[i % len(rooms)]}})
        if reply.get("event") != "ack":
            raise ConnectionError(f"subscribe failed: {reply!r:.300}")
        conn = Conn(client, stats)
        conn.last[rooms[i % len(rooms)]] = int(reply["data"]["offset"])
        conn.attach()
        conns.append(conn)

    await ctx.open(ctx.args.stable, setup=setup, opener=open_fast_client)
    stats.issued["connects"] += len(conns)
    return conns


class Day:
    """One run: the server, the stable population, the paced traffic and the RSS samples."""

    def __init__(self, args: argparse.Namespace, server: Server, ctx: Context, api_key: str, refresh: str) -> None:
        self.args, self.server, self.ctx, self.api_key, self.refresh = args, server, ctx, api_key, refresh
        self.stats = Stats()
        tag = f"d{uuid.uuid4().hex[:6]}-"
        self.rooms = [f"room:day-{tag}{i}" for i in range(args.rooms)]
        assert ctx.token is not None
        self.traffic = Traffic(server.ws_url, ctx.token, self.stats, tag)
        self.stable: list[Conn] = []
        self.samples: list[tuple[float, int]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.http = asyncio.Semaphore(4)
        # Refresh tokens rotate: a second refresh with the same token is refused, so one at a time.
        self.refreshing = asyncio.Lock()

    def room_of(self, conn: Conn) -> str:
        return next(iter(conn.last))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.done)

    def done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stats.error("harness_errors", repr(task.exception()))

    async def call_http(self, kind: str, url: str, body: dict[str, Any] | None, bearer: str | None) -> dict[str, Any]:
        async with self.http:
            try:
                answer = await asyncio.to_thread(http_json, url, body, bearer)
            except OSError as exc:
                self.stats.error("http_errors", f"{kind}: {exc}")
                return {}
        self.stats.issued[kind] += 1
        return answer

    async def refresh_token(self, i: int) -> None:
        url = f"{self.server.http_url}/api/auth/token/refresh/"
        async with self.refreshing:
            answer = await self.call_http("token_refreshes", url, {"refresh": self.refresh}, None)
            if "access" in answer:
                self.refresh, self.traffic.token = answer["refresh"], answer["access"]
        if "access" in answer:
            conn = self.stable[i % len(self.stable)]
            conn.request(self.traffic.next_id("a"), "auth.refresh", {"token": answer["access"]})

    async def read_history(self, i: int) -> None:
        room = self.rooms[i % len(self.rooms)]
        since = max(0, self.stats.heads.get(room, 0) - 50)
        url = f"{self.server.http_url}/api/server/streams/{room}/history/?since={since}&limit=50"
        await self.call_http("history_reads", url, None, self.api_key)

    async def sample(self, t0: float, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            now = time.monotonic()
            self.samples.append((round(loop.time() - t0, 2), rss_kb(self.server.pid)))
            for conn in [*self.stable, *self.traffic.live]:
                conn.sweep(now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.args.sample)

    def fire_echo(self, i: int) -> None:
        self.stable[i % len(self.stable)].request(self.traffic.next_id("e"), "echo", {"i": i})

    def fire_publish(self, i: int) -> None:
        conn = self.stable[(i * 7919) % len(self.stable)]
        conn.publish(self.traffic.next_id("m"), self.room_of(conn), f"day {i}")

    def fire_visit(self, i: int) -> None:
        scale = self.args.seconds / DAY_SECONDS
        visit = Visit(self.rooms[i % len(self.rooms)], SESSIONS_PER_VISIT, SESSION_SECONDS * scale, GAP_SECONDS * scale)
        self.spawn(self.traffic.visit(visit))

    async def drain(self) -> int:
        """Wait (bounded) until every request is answered and every stable subscriber is at its room's head."""
        deadline = time.monotonic() + DRAIN_SECONDS
        while True:
            behind = sum(
                max(0, self.stats.heads.get(self.room_of(c), 0) - c.last[self.room_of(c)]) for c in self.stable
            )
            pending = sum(len(c.pending) for c in self.stable)
            if (behind == 0 and pending == 0) or time.monotonic() > deadline:
                return behind
            await asyncio.sleep(0.2)

    async def run(self) -> dict[str, Any]:
        a, scale = self.args, self.args.scale
        counts = {key: round(value * scale) for key, value in DAY.items()}
        rss_fresh = rss_kb(self.server.pid)
        self.stable = await open_stable(self.ctx, self.stats, self.rooms)
        rss_open = rss_kb(self.server.pid)
        loop = asyncio.get_running_loop()
        t0, stop, warm = loop.time(), asyncio.Event(), a.seconds / 10
        meter = CpuMeter(self.server.pid).start()
        sampler = asyncio.ensure_future(self.sample(t0, stop))
        snapshots: list[int | None] = []

        async def warm_snapshot() -> None:
            await asyncio.sleep(warm)
            snapshots.append(await self.ctx.snapshot())

        span = (SESSIONS_PER_VISIT * SESSION_SECONDS + (SESSIONS_PER_VISIT - 1) * GAP_SECONDS) / DAY_SECONDS
        await asyncio.gather(
            warm_snapshot(),
            paced(counts["stable_echoes"], a.seconds, self.fire_echo),
            paced(counts["stable_publishes"], a.seconds, self.fire_publish),
            paced(counts["visits"], a.seconds * (1 - span), self.fire_visit),
            paced(counts["token_refreshes"], a.seconds, lambda i: self.spawn(self.refresh_token(i))),
            paced(counts["history_reads"], a.seconds, lambda i: self.spawn(self.read_history(i))),
        )
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=a.seconds * span + 60)
        for task in list(self.tasks):  # bounded: a visit still running now is a failure
            task.cancel()
            self.stats.error("failed_sessions", "visit still running at the end")
        missing = await self.drain()
        elapsed = loop.time() - t0
        stop.set()
        await sampler
        for conn in self.stable:
            conn.sweep(time.monotonic(), older_than=-1.0)
        cpu = meter.stop()
        rss_end = rss_kb(self.server.pid)
        rss_split = anon_file_kb(self.server.pid)
        end_snapshot = await self.ctx.snapshot()
        for conn in self.stable:
            conn.closing = True
        await close_all([c.client for c in self.stable], timeout=30.0)
        await asyncio.sleep(min(2.0, max(0.5, a.seconds / 60)))
        rss_closed = rss_kb(self.server.pid)
        if missing:
            self.stats.error("missing_deliveries", f"{missing} deliveries behind the heads")
        steady = [s for s in self.samples if s[0] >= warm] or self.samples
        line = fit(steady)
        slope = line["slope"]
        # The same fit over the second half only: how much the slope depends on where it starts.
        late = fit([s for s in self.samples if s[0] >= a.seconds / 2])["slope"]
        issued = dict(self.stats.issued)
        errors = {k: v for k, v in self.stats.errors.items() if v and k != "late_or_stray_replies"}
        return {
            "day": {**counts, "stable": a.stable, "rooms": a.rooms, "sessions": counts["visits"] * SESSIONS_PER_VISIT},
            "issued": issued,
            "seconds": round(elapsed, 1),
            "rss_fresh_kb": rss_fresh,
            "rss_stable_open_kb": rss_open,
            "rss_after_warmup_kb": steady[0][1] if steady else None,
            "rss_end_kb": rss_end,
            "rss_after_close_kb": rss_closed,
            "rss_steady_min_max_kb": [min(kb for _, kb in steady), max(kb for _, kb in steady)] if steady else None,
            "rss_slope_kb_per_hour": None if slope is None else round(slope * 3600, 1),
            "rss_slope_kb_per_day": None if slope is None else round(slope * a.seconds, 1),
            "rss_slope_stderr_kb_per_day": None if line["stderr"] is None else round(line["stderr"] * a.seconds, 1),
            "rss_residual_kb": None if line["residual_kb"] is None else round(line["residual_kb"], 1),
            "rss_slope_second_half_kb_per_day": None if late is None else round(late * a.seconds, 1),
            "rss_end_anon_file_kb": rss_split,
            "rss_samples": self.samples[:: max(1, len(self.samples) // 120)],
            "cpu": cpu,
            "errors": errors,
            "close_codes": dict(self.stats.close_codes),
            "late_replies": self.stats.errors["late_or_stray_replies"],
            "first_errors": list(self.stats.examples),
            "tracemalloc_top": await self.ctx.tracemalloc_top(snapshots[0] if snapshots else None, end_snapshot),
        }


async def main(args: argparse.Namespace) -> int:
    loadgen_cpu = pin_to_cpu(LOADGEN_CPU)
    raise_nofile()
    api_key = secrets.token_urlsafe(32)
    record: dict[str, Any] = {
        "mode": "day",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": {k: getattr(args, k) for k in ("hours", "minutes", "seconds", "stable", "rooms", "scale", "sample")}
        | {"tracemalloc": args.tracemalloc},
    }
    source = source_fingerprint(SERVER_REPO)  # now: others may edit the sources while the day runs
    with log_directory(args.keep_logs) as log_dir:
        database = await asyncio.to_thread(prepare_database, args.database_url)
        overrides = {
            "REALTIME_API_KEYS": api_key,
            # The access token must outlive the run: its refreshes are part of the day, not a deadline.
            "JWT_ACCESS_TTL": str(max(DAY_SECONDS, int(2 * args.seconds) + 3600)),
        } | dict(item.partition("=")[::2] for item in args.server_env)
        server = realtime_server(database, log_dir, overrides, args.tracemalloc)
        try:
            await asyncio.to_thread(server.start)
            login = {"username": USERNAME, "password": PASSWORD}
            tokens = await asyncio.to_thread(http_json, f"{server.http_url}/api/auth/token/", login)
            traced = server.env.get("BENCH_TRACEMALLOC_DIR")
            ctx = Context(server.ws_url, tokens["access"], "realtime", server.pid, args, traced)
            record["results"] = await Day(args, server, ctx, api_key, tokens["refresh"]).run()
            record["ok"] = not record["results"]["errors"]
        except (OSError, TimeoutError, ConnectionError) as exc:
            record["ok"], record["error"] = False, f"{type(exc).__name__}: {exc}"[:1000]
        finally:
            record["server"] = {"pid": server.proc and server.pid, "exit_code": await asyncio.to_thread(server.stop)}
            database.cleanup()
    record["machine"] = {
        "cpus": os.cpu_count(),
        "loadgen_cpu": loadgen_cpu,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "server_source": source,
    }
    sys.stdout.write(orjson.dumps(record).decode() + "\n")
    sys.stdout.flush()
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    sys.exit(uvloop.run(main(parse_args())))
