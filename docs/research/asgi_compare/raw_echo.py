#!/usr/bin/env python3
"""Ceiling reference: raw websockets-library echo server (no Django/Channels). Bounded by --seconds."""
import argparse
import asyncio

import uvloop
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def echo(ws):
    try:
        async for m in ws:
            await ws.send(m)
    except ConnectionClosed:
        pass


async def main(a):
    async with serve(echo, "127.0.0.1", a.port, compression=None, max_size=1048576):
        await asyncio.sleep(a.seconds)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=8009)
    ap.add_argument("--seconds", type=float, default=30)
    uvloop.run(main(ap.parse_args()))
