"""Run the chaos soak: a cluster, 50+ clients, random faults, then the checker's verdict.

    .venv/bin/python -m loadtests.chaos --duration 60            # the CI run (make test runs it)
    .venv/bin/python -m loadtests.chaos --duration 1800 --report /tmp/chaos.json

The run has three phases: warm-up (every client connected and subscribed), chaos
(publishing while one fault at a time is injected and undone every 1-4 s), and
quiescence (faults stop, publishing stops, every un-acked call is retried until acked,
every subscription catches up to the stream's head). Then the log is read from the
database and :func:`loadtests.chaos.checker.check` judges every record.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.chaos.checker import LoggedEvent, check
from loadtests.chaos.clients import ClientSpec, LibraryClient, RawClient, Tally
from loadtests.chaos.cluster import Cluster
from loadtests.chaos.faults import FAULTS
from tests.e2e.helpers import db_query
from tests.e2e.postgres_server import private_directory

SERVER_SETTINGS = {
    "REALTIME_HEARTBEAT_INTERVAL": "2",
    "REALTIME_HEARTBEAT_TIMEOUT": "3",
    "REALTIME_SERVER_HEARTBEAT_INTERVAL": "1",
    "REALTIME_IDLE_TIMEOUT": "3600",
    "REALTIME_SEND_QUEUE": "200",
    "JWT_ACCESS_TTL": "14400",
    "REALTIME_LOG_LEVEL": "WARNING",
}


@dataclass(frozen=True)
class Options:
    duration: float
    seed: int
    library_clients: int
    raw_clients: int
    streams: int
    users: int
    publish_interval: float
    settle_timeout: float
    keep: bool


async def _wait(predicate: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.2)
    return bool(predicate())


def _specs(cluster: Cluster, options: Options, rng: random.Random) -> list[ClientSpec]:
    streams = [f"room:chaos-{i}" for i in range(options.streams)]
    users = list(cluster.users.values())
    specs = []
    for i in range(options.library_clients + options.raw_clients):
        user = users[i % len(users)]
        proxy = rng.choice(cluster.proxies)
        kind = "lib" if i < options.library_clients else "raw"
        specs.append(
            ClientSpec(
                name=f"{kind}{i}",
                user_id=int(user["id"]),  # type: ignore[call-overload]
                token=str(user["token"]),
                url=proxy.ws_url,
                streams=rng.sample(streams, rng.randint(2, 4)),
                publish_interval=options.publish_interval,
            )
        )
    return specs


async def soak(cluster: Cluster, options: Options) -> dict[str, Any]:
    rng = random.Random(options.seed)
    await cluster.start_proxies(per_server=2)
    tally = Tally()
    specs = _specs(cluster, options, rng)
    library = [LibraryClient(s, tally, random.Random(rng.random())) for s in specs[: options.library_clients]]
    raw = [RawClient(s, tally, random.Random(rng.random())) for s in specs[options.library_clients :]]
    everyone: list[LibraryClient | RawClient] = [*library, *raw]
    for lib in library:
        await lib.start()
    raw_tasks = [asyncio.create_task(r.run()) for r in raw]
    for r in raw:
        await asyncio.wait_for(r.subscribed.wait(), 30)
        tally.subscriptions.extend(r.records.values())

    stop = asyncio.Event()
    publishers = [asyncio.create_task(c.publish_until(stop)) for c in everyone]
    faults: Counter[str] = Counter()
    timeline: list[str] = []
    started = time.monotonic()
    while time.monotonic() - started < options.duration:
        await asyncio.sleep(rng.uniform(1.0, 4.0))
        name = rng.choice(sorted(FAULTS))
        description = await FAULTS[name](cluster, raw, rng)
        faults[name] += 1
        timeline.append(f"{time.monotonic() - started:7.1f}s {description}")

    # Quiescence: no more faults or new publishes; every publish in flight completes.
    stop.set()
    _, late = await asyncio.wait(publishers, timeout=options.settle_timeout)
    for task in late:
        task.cancel()
    if late:
        tally.problems.append(f"{len(late)} library publishers still waiting for an ack after the settle timeout")
    for r in raw:
        await r.resend_pending()
    if not await _wait(lambda: all(not c.pending for c in raw), options.settle_timeout):
        left = {c.spec.name: sorted(c.pending) for c in raw if c.pending}
        tally.problems.append(f"raw publishes never acked: {left}")

    heads = {
        name: int(head)
        for name, head in db_query(
            cluster.database_url, "SELECT name, head FROM realtime_stream WHERE name LIKE %s", ("room:chaos-%",)
        )
    }

    def caught_up() -> bool:
        return all(
            offset >= heads.get(stream, 0) for client in everyone for stream, offset in client.last_offsets().items()
        )

    settled = await _wait(caught_up, options.settle_timeout)
    for client in everyone:
        await client.close()
    for task in raw_tasks:
        task.cancel()
    await asyncio.gather(*raw_tasks, return_exceptions=True)

    rows = db_query(
        cluster.database_url,
        "SELECT s.name, e.offset, e.sender_id, e.client_id FROM realtime_event e "
        "JOIN realtime_stream s ON s.id = e.stream_id WHERE s.name LIKE %s",
        ("room:chaos-%",),
    )
    verdict = check([LoggedEvent(*row) for row in rows], tally.acks, tally.subscriptions)
    verdict.violations.extend(tally.problems)
    if not settled:
        verdict.violations.append("subscriptions did not catch up with the heads within the settle timeout")
    logs = cluster.logs()
    return {
        "verdict": verdict.as_dict(),
        "duration_s": options.duration,
        "seed": options.seed,
        "clients": {"library": len(library), "raw": len(raw)},
        "streams": options.streams,
        "faults": dict(sorted(faults.items())),
        "fault_count": sum(faults.values()),
        "reconnects": tally.reconnects,
        "publish_errors": tally.publish_errors,
        "library_duplicates_dropped": sum(sub.duplicates_dropped for c in library for sub in c.subs),
        "library_gap_fills": sum(sub.fills for c in library for sub in c.subs),
        "server_tracebacks": logs.count("Traceback"),
        "timeline": timeline,
    }


def parse_args(argv: list[str] | None = None) -> tuple[Options, str | None]:
    parser = argparse.ArgumentParser(prog="python -m loadtests.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of faults (default 60)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: time-based, printed)")
    parser.add_argument("--library-clients", type=int, default=40)
    parser.add_argument("--raw-clients", type=int, default=12)
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--publish-interval", type=float, default=1.0, help="mean seconds between a client's publishes")
    parser.add_argument("--settle-timeout", type=float, default=60.0)
    parser.add_argument("--report", default=None, help="write the JSON report here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, database)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time())
    options = Options(
        args.duration,
        seed,
        args.library_clients,
        args.raw_clients,
        args.streams,
        args.users,
        args.publish_interval,
        args.settle_timeout,
        args.keep,
    )
    return options, args.report


async def _run(options: Options) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        workdir = (
            Path(tempfile.mkdtemp(prefix="realtime-chaos-"))
            if options.keep
            else stack.enter_context(private_directory("realtime-chaos-"))
        )
        workdir.chmod(0o755)
        print(f"chaos: seed {options.seed}, scratch {workdir}", file=sys.stderr, flush=True)
        cluster = await asyncio.to_thread(Cluster.create, workdir, users=options.users, settings=SERVER_SETTINGS)
        try:
            await asyncio.to_thread(cluster.start_servers)
            return await soak(cluster, options)
        finally:
            await cluster.close()


def main(argv: list[str] | None = None) -> int:
    options, report_path = parse_args(argv)
    report = asyncio.run(_run(options))
    text = json.dumps(report, indent=2)
    if report_path:
        with open(report_path, "w") as out:
            out.write(text + "\n")
    print(text)
    return 0 if report["verdict"]["ok"] else 1
