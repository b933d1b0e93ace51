"""What every mode gets: where the server is, how to authenticate, and the parsed options."""

# ruff: noqa: ASYNC109 - bounded polling waits with explicit bounds, on purpose

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from loadtests.fastclient import FastClient
from loadtests.traced_serve import SNAPSHOT_SIGNAL, snapshot_path, top_diff
from loadtests.wsclient import WsClient, open_client

ECHO = b'{"event":"echo","id":"e","data":{"x":1}}'
ERROR_PREFIX = b'{"event":"error"'

Setup = Callable[[Any, int], Awaitable[None]]  # a WsClient or a FastClient
Client = TypeVar("Client", WsClient, FastClient)
Opener = Callable[..., Awaitable[Client]]


class BenchError(RuntimeError):
    """The run could not measure what it was asked to (the JSON line says why)."""


@dataclass
class Context:
    url: str
    token: str | None
    target: str  # "realtime" or "raw"
    pid: int | None
    args: argparse.Namespace
    tracemalloc_dir: str | None = None
    snapshots: int = 0
    # Cross-server fan-out (loadtests/cross_server.py): publishers connect here, not to ``url``,
    # and the CPU of these other processes (server A, Redis) is reported as NAME_cpu_pct.
    publish_url: str | None = None
    other_pids: dict[str, int] = field(default_factory=dict)

    async def snapshot(self) -> int | None:
        """Ask a ``--tracemalloc`` server for a snapshot and wait (bounded) until it is written."""
        if self.tracemalloc_dir is None or self.pid is None:
            return None
        self.snapshots += 1
        path = snapshot_path(self.tracemalloc_dir, self.snapshots)
        os.kill(self.pid, SNAPSHOT_SIGNAL)
        deadline = time.monotonic() + 300
        while not path.exists():
            if time.monotonic() > deadline:
                raise BenchError("no tracemalloc snapshot after 300 s")
            await asyncio.sleep(0.2)
        return self.snapshots

    async def tracemalloc_top(self, before: int | None, after: int | None) -> list[dict[str, Any]] | None:
        """Top allocation sites grown between two snapshots (``--tracemalloc`` runs only)."""
        if self.tracemalloc_dir is None or before is None or after is None:
            return None
        directory = self.tracemalloc_dir
        return await asyncio.to_thread(top_diff, snapshot_path(directory, before), snapshot_path(directory, after))

    @property
    def realtime(self) -> bool:
        return self.target == "realtime"

    def require_realtime(self, mode: str) -> None:
        if not self.realtime:
            raise BenchError(f"mode {mode} needs the realtime protocol; --target raw supports echo modes only")

    async def open(
        self,
        count: int,
        *,
        setup: Setup | None = None,
        start: int = 0,
        timeout: float = 300.0,
        opener: Opener[Client] = open_client,  # type: ignore[assignment]
    ) -> list[Client]:
        """Open ``count`` connections (welcome read), ``open_concurrency`` handshakes at a time, then ``setup``."""
        clients: list[Client] = []
        semaphore = asyncio.Semaphore(self.args.open_concurrency)
        numbers = itertools.count(start)

        async def one() -> None:
            async with semaphore:
                client = await opener(self.url, self.token, welcome=self.realtime)
                clients.append(client)
                if setup is not None:
                    await setup(client, next(numbers))

        async with asyncio.timeout(timeout):
            await asyncio.gather(*(one() for _ in range(count)))
        return clients


def subscribe_to(stream_for: Callable[[int], str]) -> Setup:
    """A setup step that subscribes connection ``i`` to ``stream_for(i)`` and checks the ack."""

    async def setup(client: WsClient, i: int) -> None:
        reply = await client.call({"event": "stream.subscribe", "id": "sub", "data": {"stream": stream_for(i)}})
        if reply.get("event") != "ack":
            raise BenchError(f"subscribe failed: {reply!r:.300}")

    return setup
