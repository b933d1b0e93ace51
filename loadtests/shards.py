"""Cross-server fan-out over 1 or N Redis servers (``REDIS_URL`` as a list): deliveries/s.

    python -m loadtests.shards --shards 1 --runs 3
    python -m loadtests.shards --shards 2 --runs 3

Starts N throwaway redis-servers, a SQLite database and two ``manage.py serve`` processes
sharing them (B pinned to core 0; A, the Redis servers and this load generator on core 1).
``--subscribers`` clients on B per room follow ``--rooms`` rooms (spread over the shards by
the stable hash); one publisher on A publishes ``--messages`` messages pipelined
(``--window`` in flight), round robin over the rooms. Prints one JSON line per run: deliveries/s
from the first publish to the last delivery, and per CPU second of each process (A, B, the
Redis servers together). Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loadtests.server import (  # noqa: E402
    LOADGEN_CPU,
    SERVER_CPU,
    SERVER_REPO,
    Server,
    obtain_token,
    prepare_database,
    server_env,
)
from tests.e2e.redis_server import RedisServer, free_port  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def _rooms(count: int) -> list[str]:
    """The same rooms for every shard count, so runs compare the same work (8 rooms: 4 per
    shard of 2)."""
    return [f"room:shard-bench-{i}" for i in range(count)]


async def _subscriber(ws: ClientConnection, room: str, count: int, ready: asyncio.Event) -> float:
    await ws.send(orjson.dumps({"event": "stream.subscribe", "id": "s", "data": {"stream": room}}).decode())
    while orjson.loads(await ws.recv()).get("event") != "ack":
        pass
    ready.set()
    got = 0
    while got < count:
        if orjson.loads(await ws.recv()).get("event") == "message.new":
            got += 1
    return time.monotonic()


async def _publish(pub: ClientConnection, rooms: list[str], count: int, window: int) -> None:
    sent = acked = 0
    while acked < count:
        while sent < count and sent - acked < window:
            frame = {
                "event": "message.send",
                "id": str(sent),
                "data": {"stream": rooms[sent % len(rooms)], "text": "x"},
            }
            await pub.send(orjson.dumps(frame).decode())
            sent += 1
        if orjson.loads(await pub.recv()).get("event") == "ack":
            acked += 1


async def one_run(args: argparse.Namespace, database_url: str, log_dir: Path, run: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"redis-{run}-", dir=log_dir))
    brokers = [RedisServer(port=free_port(), workdir=workdir).start() for _ in range(args.shards)]
    for broker in brokers:
        assert broker.proc is not None
        os.sched_setaffinity(broker.proc.pid, {LOADGEN_CPU})
    env = server_env(database_url, {"REDIS_URL": ",".join(b.url for b in brokers)})
    b = Server(env, log_dir / f"b{run}.log", cpu=SERVER_CPU)
    a = Server(env, log_dir / f"a{run}.log", cpu=LOADGEN_CPU)
    rooms = _rooms(args.rooms)
    per_room = -(-args.messages // len(rooms))
    messages = per_room * len(rooms)
    try:
        await asyncio.to_thread(b.start)
        await asyncio.to_thread(a.start)
        token = await asyncio.to_thread(obtain_token, b)
        headers = {"Authorization": f"Bearer {token}"}
        subs = [
            await connect(b.ws_url, additional_headers=headers, max_size=None)
            for _ in range(args.rooms * args.subscribers)
        ]
        pub = await connect(a.ws_url, additional_headers=headers, max_size=None)
        for ws in [*subs, pub]:
            await ws.recv()  # session.welcome
        readies = [asyncio.Event() for _ in subs]
        tasks = [
            asyncio.ensure_future(_subscriber(ws, rooms[i % len(rooms)], per_room, readies[i]))
            for i, ws in enumerate(subs)
        ]
        async with asyncio.timeout(60):
            await asyncio.gather(*(ready.wait() for ready in readies))
        await asyncio.sleep(0.5)  # every hub has joined its groups
        pids = {"a": a.pid, "b": b.pid, **{f"redis{i}": r.proc.pid for i, r in enumerate(brokers) if r.proc}}
        cpu0 = {name: _cpu_seconds(pid) for name, pid in pids.items()}
        t0 = time.monotonic()
        async with asyncio.timeout(args.timeout):
            await _publish(pub, rooms, messages, args.window)
            done = await asyncio.gather(*tasks)
        elapsed = max(done) - t0
        cpu = {name: round(_cpu_seconds(pid) - cpu0[name], 2) for name, pid in pids.items()}
        deliveries = messages * args.subscribers
        redis_cpu = sum(v for k, v in cpu.items() if k.startswith("redis"))
        for ws in [*subs, pub]:
            await ws.close()
        return {
            "shards": args.shards,
            "run": run,
            "server_repo": str(SERVER_REPO),
            "rooms_per_shard": [
                sum(1 for r in rooms if zlib.crc32(r.encode()) % args.shards == i) for i in range(args.shards)
            ],
            "messages": messages,
            "deliveries": deliveries,
            "seconds": round(elapsed, 3),
            "deliveries_per_s": round(deliveries / elapsed),
            "cpu_seconds": cpu,
            "deliveries_per_b_cpu_s": round(deliveries / max(cpu["b"], 0.01)),
            "messages_per_a_cpu_s": round(messages / max(cpu["a"], 0.01)),
            "deliveries_per_redis_cpu_s": round(deliveries / max(redis_cpu, 0.01)),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        for server in (a, b):
            await asyncio.to_thread(server.stop)
        for broker in brokers:
            broker.kill()


async def main(args: argparse.Namespace) -> int:
    os.sched_setaffinity(0, {LOADGEN_CPU})
    log_dir = Path(tempfile.mkdtemp(prefix="realtime-shards-"))
    database = await asyncio.to_thread(prepare_database, None)
    try:
        for run in range(1, args.runs + 1):
            record = await one_run(args, database.url, log_dir, run)
            sys.stdout.write(orjson.dumps(record).decode() + "\n")
            sys.stdout.flush()
    finally:
        database.cleanup()
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=1, help="Redis servers in REDIS_URL")
    parser.add_argument("--rooms", type=int, default=8)
    parser.add_argument("--subscribers", type=int, default=5, help="clients on B per room")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--window", type=int, default=100, help="publishes in flight")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
