"""Cross-server fan-out through the Redis bus: deliveries/s and publish-to-delivery latency.

    python -m loadtests.cross_server --layer core --messages 2000
    python -m loadtests.cross_server --layer pubsub --messages 2000

Starts a throwaway redis-server, a SQLite database and two `manage.py serve` processes
(A and B) sharing them; S subscribers on B follow one room while one publisher on A
publishes pipelined messages whose text carries the send time. Prints one JSON line.
Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loadtests.server import PYTHON, Server, migrate  # noqa: E402
from tests.e2e.helpers import PASSWORD, base_env, obtain_tokens  # noqa: E402
from tests.e2e.redis_server import RedisServer, free_port  # noqa: E402


def _prepare(database_url: str) -> None:
    env = base_env(database_url)
    migrate(env)
    code = f"from accounts.models import User; User.objects.create_user('bench', password={PASSWORD!r})"
    subprocess.run([PYTHON, "manage.py", "shell", "-c", code], cwd=REPO, env=env, check=True, capture_output=True)


async def _subscriber(ws: ClientConnection, stream: str, count: int, latencies: list[float]) -> int:
    await ws.send(orjson.dumps({"event": "stream.subscribe", "data": {"stream": stream}}).decode())
    got = 0
    async with asyncio.timeout(120):
        while got < count:
            frame = orjson.loads(await ws.recv())
            if frame.get("event") == "message.new":
                latencies.append(time.time() - float(frame["data"]["text"]))
                got += 1
    return got


def _frame(stream: str) -> str:
    return orjson.dumps({"event": "message.send", "data": {"stream": stream, "text": repr(time.time())}}).decode()


async def _pipelined(pub: ClientConnection, stream: str, count: int, window: int) -> None:
    sent = acked = 0
    while acked < count:
        while sent < count and sent - acked < window:
            await pub.send(_frame(stream))
            sent += 1
        if orjson.loads(await pub.recv()).get("event") == "ack":
            acked += 1


async def _paced(pub: ClientConnection, stream: str, count: int, rate: float) -> None:
    """Open loop: one publish every 1/rate s, acks read concurrently (latency without queueing)."""

    async def read_acks() -> None:
        acked = 0
        while acked < count:
            if orjson.loads(await pub.recv()).get("event") == "ack":
                acked += 1

    reader = asyncio.ensure_future(read_acks())
    start = time.perf_counter()
    for n in range(count):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await pub.send(_frame(stream))
    await asyncio.wait_for(reader, 60)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="xserver-"))
    redis = RedisServer(port=free_port(), workdir=workdir).start()
    database_url = f"sqlite:///{workdir / 'db.sqlite3'}"
    _prepare(database_url)
    settings = {
        "REDIS_URL": redis.url,
        "REALTIME_RATE_LIMIT": "0",
        "REALTIME_REDIS_LAYER": args.layer,
        "REALTIME_SEND_QUEUE": "100000",
        "REALTIME_SEND_QUEUE_BYTES": "1000000000",
        "REALTIME_MAX_CONNECTIONS_PER_USER": "1000000",  # every subscriber is the one benchmark user
    }
    servers = [
        Server(env=base_env(database_url, **settings), log_path=workdir / f"{n}.log").start() for n in ("a", "b")
    ]
    try:
        token = obtain_tokens(servers[0], "bench")["access"]
        stream = "room:xbench"
        subs = [await connect(f"{servers[1].ws_url}?token={token}", max_size=None) for _ in range(args.subscribers)]
        for ws in subs:
            await ws.recv()
        latencies: list[float] = []
        tasks = [asyncio.ensure_future(_subscriber(ws, stream, args.messages, latencies)) for ws in subs]
        await asyncio.sleep(0.5)  # subscriptions acked
        pub = await connect(f"{servers[0].ws_url}?token={token}")
        await pub.recv()
        started = time.perf_counter()
        if args.rate:
            await _paced(pub, stream, args.messages, args.rate)
        else:
            await _pipelined(pub, stream, args.messages, window=100)
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        latencies.sort()
        for ws in [*subs, pub]:
            await ws.close()
        return {
            "mode": "cross-server",
            "layer": args.layer,
            "messages": args.messages,
            "subscribers_on_other_server": args.subscribers,
            "publish_rate": args.rate or "pipelined (window 100)",
            "deliveries_per_s": round(args.messages * args.subscribers / elapsed),
            "latency_ms_p50": round(statistics.median(latencies) * 1000, 2),
            "latency_ms_p99": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
            "date": time.strftime("%Y-%m-%d"),
            "cores": os.cpu_count(),
        }
    finally:
        for server in servers:
            server.stop()
        redis.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", choices=("core", "pubsub"), default="core")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--rate", type=float, default=0.0, help="paced publishes per second (0: pipelined)")
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
