"""Measurements shared by the attack tests (issue 13): server RSS, another client's echo latency."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.e2e.helpers import ServerProcess, call, connect, recv_json


def rss_kib(server: ServerProcess) -> int:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def echo_latencies(server: ServerProcess, token: str, stop: asyncio.Event) -> list[float]:
    ws = await connect(server, token)
    assert (await recv_json(ws))["event"] == "session.welcome"
    latencies: list[float] = []
    n = 0
    while not stop.is_set():
        n += 1
        started = time.perf_counter()
        reply = await call(ws, {"event": "echo", "id": f"e{n}", "data": {"n": n}}, timeout=10)
        latencies.append(time.perf_counter() - started)
        assert reply["event"] == "ack"
        await asyncio.sleep(0.02)
    return latencies


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
