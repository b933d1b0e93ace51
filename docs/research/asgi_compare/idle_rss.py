#!/usr/bin/env python3
"""Server RSS per idle WebSocket connection.

Opens --warm connections (baseline), reads the server's RSS (VmRSS summed over --pid and its
children, from /proc), opens --conns more idle connections, waits --settle s, reads RSS again.
Prints JSON with (after-before)/conns in KiB. Bounded by --timeout. Loopback only.

    taskset -c 1 python idle_rss.py --url ws://127.0.0.1:8001/ws/ --pid 12345 --conns 1000
"""
import argparse
import asyncio
import json
import resource
import sys
import time
from urllib.parse import urlparse

import uvloop
from servers import tree_rss_kb
from websockets.asyncio.client import connect


async def open_many(url, n, batch, conns):
    for i in range(0, n, batch):
        k = min(batch, n - i)
        res = await asyncio.gather(
            *[connect(url, compression=None, ping_interval=None, open_timeout=60,
                      close_timeout=1) for _ in range(k)],
            return_exceptions=True)
        for r in res:
            if isinstance(r, Exception):
                raise r
            conns.append(r)


async def main(a):
    host = urlparse(a.url).hostname
    if not host.startswith("127.") and host not in ("localhost", "::1"):
        sys.exit("refusing non-loopback target")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    conns = []
    await open_many(a.url, a.warm, 50, conns)
    await asyncio.sleep(a.settle)
    before = tree_rss_kb(a.pid)
    t0 = time.monotonic()
    await asyncio.wait_for(open_many(a.url, a.conns, a.batch, conns), a.timeout)
    open_s = time.monotonic() - t0
    await asyncio.sleep(a.settle)
    after = tree_rss_kb(a.pid)
    # Verify that a sample still echoes (they are really open).
    alive = 0
    for ws in conns[-5:]:
        await ws.send('{"message": "ping"}')
        await asyncio.wait_for(ws.recv(), 10)
        alive += 1
    print(json.dumps({"conns": a.conns, "rss_before_kb": before, "rss_after_kb": after,
                      "kb_per_conn": round((after - before) / a.conns, 1),
                      "open_seconds": round(open_s, 2), "sample_alive": alive}))
    for ws in conns:
        ws.transport.abort()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="ws://127.0.0.1:8001/ws/")
    ap.add_argument("--pid", type=int, required=True, help="server PID (children included)")
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--warm", type=int, default=50)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--timeout", type=float, default=180.0)
    uvloop.run(main(ap.parse_args()))
