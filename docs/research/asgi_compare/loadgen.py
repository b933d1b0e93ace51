#!/usr/bin/env python3
"""Pipelined WebSocket echo load generator (asyncio + uvloop + websockets client).

Opens --conns connections to --url; each keeps --window JSON messages in flight and sends a
new one for every reply. Counts replies during --seconds after --warmup and prints msg/s.
Bounded: stops by itself after warmup+seconds. Loopback only.

    taskset -c 1 python loadgen.py --url ws://127.0.0.1:8001/ws/ --conns 50 --window 8
"""
import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlparse

import uvloop
from websockets.asyncio.client import connect


def check_loopback(url):
    host = urlparse(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("127."):
        sys.exit(f"refusing non-loopback target {host}")


async def worker(url, window, state, stop_at):
    async with connect(url, compression=None, ping_interval=None, max_queue=None,
                       open_timeout=30, close_timeout=2) as ws:
        payload = json.dumps({"message": "hello world", "seq": 0})
        for _ in range(window):
            await ws.send(payload)
        while time.monotonic() < stop_at:
            try:
                await asyncio.wait_for(ws.recv(), timeout=max(0.01, stop_at - time.monotonic()))
            except TimeoutError:
                break
            if state["counting"]:
                state["count"] += 1
            await ws.send(payload)


async def main(a):
    check_loopback(a.url)
    state = {"count": 0, "counting": False}
    tasks = []
    deadline_holder = {"stop": None}

    async def run_one():
        while deadline_holder["stop"] is None:
            await asyncio.sleep(0.01)
        await worker(a.url, a.window, state, deadline_holder["stop"])

    for _ in range(a.conns):
        tasks.append(asyncio.ensure_future(run_one()))
    await asyncio.sleep(0)
    start = time.monotonic()
    deadline_holder["stop"] = start + a.warmup + a.seconds
    await asyncio.sleep(a.warmup)
    state["counting"] = True
    c0 = state["count"]
    t0 = time.monotonic()
    await asyncio.sleep(a.seconds)
    state["counting"] = False
    c1 = state["count"]
    t1 = time.monotonic()
    done, pending = await asyncio.wait(tasks, timeout=10)
    errors = [repr(t.exception()) for t in done if t.exception()]
    for t in pending:
        t.cancel()
    rate = (c1 - c0) / (t1 - t0)
    out = {"msg_per_s": round(rate), "replies": c1 - c0, "seconds": round(t1 - t0, 3),
           "conns": a.conns, "window": a.window, "errors": errors[:3], "n_errors": len(errors)}
    print(json.dumps(out))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="ws://127.0.0.1:8001/ws/")
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--window", type=int, default=8, help="in-flight messages per connection")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--seconds", type=float, default=8.0)
    a = ap.parse_args()
    uvloop.run(main(a))
