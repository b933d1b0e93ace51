"""The Python ceiling: a raw ``websockets`` echo server (no Django, no Channels, no protocol).

    python -m loadtests.raw_echo_server --port 0 --seconds 600

Echoes every message back as it came, on uvloop, without compression, with the same
1 MiB message limit as the service. Prints ``listening on H:P`` when ready, like
``manage.py serve``; stops by itself after ``--seconds`` or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

import uvloop
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


async def echo(ws: ServerConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for message in ws:
            await ws.send(message)


async def main(host: str, port: int, seconds: float) -> None:
    stop = asyncio.get_running_loop().create_future()

    def on_signal() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, on_signal)
    async with serve(echo, host, port, compression=None, max_size=1048576, ping_interval=None, backlog=4096) as server:
        bound = next(iter(server.sockets)).getsockname()
        sys.stdout.write(f"listening on {bound[0]}:{bound[1]}\n")
        sys.stdout.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop, seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=3600.0)
    args = parser.parse_args()
    uvloop.run(main(args.host, args.port, args.seconds))
