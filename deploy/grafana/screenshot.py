"""Reproduce the two pictures of docs/operations.md, "Live view".

    .venv/bin/python deploy/grafana/screenshot.py [--seconds 150] [--redis-url URL] [--out docs/images]

Starts two real ``manage.py serve`` processes (ids app1 and app2, one SQLite database,
the Redis of ``--redis-url`` as their bus like docker-compose's replicas, else the
in-memory channel layer, where the broker panels read 0), a real Prometheus (the ``prometheus`` binary on PATH, Debian's
package) scraping both every 2 s, and drives a bounded mixed load over loopback
WebSockets for ``--seconds``: listeners, talkers, a client flooding past the rate limit,
short sessions closing normally or dropping, refused handshakes and invalid messages.
Then it checks every expression of deploy/grafana/dashboards/realtime.json with
``promtool``, answers each panel with Prometheus' range queries and draws the dashboard
(deploy/grafana/dashboard_render.py) in headless Chromium: grafana-dashboard.png. Last it
runs ``manage.py realtime_stats --watch 5 --count 1`` against the same database and
draws its output as a terminal: realtime-stats-watch.png. Both are taken while the
load still runs, 5 s before it ends.
"""

# ruff: noqa: S310, S603 - loopback URLs and fixed argv built here
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

from dashboard_render import render_dashboard, render_terminal, screenshot  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import WebSocketException  # noqa: E402

from loadtests.server import (  # noqa: E402
    PYTHON,
    Database,
    Server,
    obtain_token,
    prepare_database,
    realtime_server,
    server_env,
)

DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "realtime.json"
SCRAPE = 2.0
RATE_INTERVAL = "10s"  # what Grafana's $__rate_interval is for a 2 s scrape interval
ROOMS = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def prometheus(workdir: Path, targets: list[str]) -> Iterator[str]:
    """A real Prometheus scraping ``targets`` every 2 s; yields its base URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("prometheus is not on PATH (Debian: apt-get install prometheus)")
    config = workdir / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": f"{SCRAPE:g}s", "evaluation_interval": f"{SCRAPE:g}s"},
                "scrape_configs": [{"job_name": "realtime", "static_configs": [{"targets": targets}]}],
            }
        )
    )
    port = free_port()
    argv = [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}"]
    argv += [f"--web.listen-address=127.0.0.1:{port}"]
    with (workdir / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def substitute(expr: str) -> str:
    return expr.replace("$__rate_interval", RATE_INTERVAL).replace("$instance", ".*")


def check_expressions(dashboard: dict[str, Any], workdir: Path) -> int:
    """Every target expression through ``promtool check rules`` (PromQL syntax); returns how many."""
    exprs = [substitute(t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    rules = [{"record": f"dashboard:check_{i}", "expr": expr} for i, expr in enumerate(exprs)]
    path = workdir / "rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool = shutil.which("promtool") or "promtool"
    subprocess.run([promtool, "check", "rules", str(path)], check=True, capture_output=True)
    return len(exprs)


def query_range(url: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": SCRAPE})
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{params}", timeout=30) as response:
        body = json.loads(response.read())
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def answer_panels(dashboard: dict[str, Any], url: str, start: float, end: float) -> dict[int, list[dict[str, Any]]]:
    """Panel id -> series [{"target", "labels", "values": [(t, v)]}] from Prometheus."""
    answers: dict[int, list[dict[str, Any]]] = {}
    for panel in dashboard["panels"]:
        series = []
        for target in panel.get("targets", []):
            for item in query_range(url, substitute(target["expr"]), start, end):
                values = [(float(t), float(v)) for t, v in item["values"]]
                series.append({"target": target, "labels": item["metric"], "values": values})
        answers[panel["id"]] = series
    return answers


class Load:
    """A bounded mixed load on the servers' WebSocket endpoints; stops by itself at ``until``."""

    def __init__(self, servers: list[Server], token: str, until: float) -> None:
        self.servers = servers
        self.token = token
        self.until = until
        self.random = random.Random(18)  # noqa: S311 - traffic shape, not security
        self.sent = 0

    async def session(self, server: Server, token: str | None = None) -> ClientConnection:
        headers = {"Authorization": f"Bearer {token if token is not None else self.token}"}
        ws = await connect(server.ws_url, additional_headers=headers, open_timeout=10, max_queue=None)
        await ws.recv()  # session.welcome
        return ws

    async def send(self, ws: ClientConnection, event: str, data: dict[str, Any]) -> None:
        self.sent += 1
        await ws.send(json.dumps({"event": event, "id": f"m{self.sent}", "data": data}))

    async def drain(self, ws: ClientConnection) -> None:
        with contextlib.suppress(WebSocketException):
            async for _frame in ws:
                pass

    async def listener(self, server: Server, room: int, start_after: float, leave_at: float) -> None:
        await asyncio.sleep(start_after)
        ws = await self.session(server)
        await self.send(ws, "stream.subscribe", {"stream": f"room:r{room}"})
        reader = asyncio.create_task(self.drain(ws))
        await asyncio.sleep(max(0.0, min(leave_at, self.until) - time.monotonic()))
        await ws.close()
        await reader

    async def talker(self, server: Server, room: int, interval: float) -> None:
        ws = await self.session(server)
        reader = asyncio.create_task(self.drain(ws))
        while time.monotonic() < self.until:
            await self.send(ws, "message.send", {"stream": f"room:r{room}", "text": "status update"})
            if self.random.random() < 0.05:
                await self.send(ws, "message.send", {"stream": f"room:r{room}"})  # validation_error
            if self.random.random() < 0.3:
                await self.send(ws, "echo", {"n": self.sent})
            await asyncio.sleep(interval * self.random.uniform(0.5, 1.5))
        await ws.close()
        await reader

    async def flooder(self, server: Server) -> None:
        """Bursts past REALTIME_RATE_LIMIT every 15 s: rate_limited replies, then a 4429 close."""
        while time.monotonic() < self.until - 15:
            await asyncio.sleep(15)
            with contextlib.suppress(WebSocketException):
                ws = await self.session(server)
                reader = asyncio.create_task(self.drain(ws))
                for _ in range(120):
                    await self.send(ws, "echo", {"burst": True})
                await asyncio.sleep(1)
                await ws.close()
                await reader

    async def churn(self, server: Server) -> None:
        """Short sessions: normal closes, dropped sockets, refused handshakes."""
        while time.monotonic() < self.until:
            await asyncio.sleep(self.random.uniform(0.5, 2.0))
            choice = self.random.random()
            with contextlib.suppress(WebSocketException, OSError):
                if choice < 0.15:
                    ws = await connect(server.ws_url, open_timeout=10)  # no token: refused
                    await self.drain(ws)
                    continue
                if choice < 0.25:
                    ws = await connect(server.ws_url, additional_headers={"Authorization": "Bearer x.y.z"})
                    await self.drain(ws)
                    continue
                ws = await self.session(server)
                await self.send(ws, "stream.subscribe", {"stream": f"room:r{self.random.randrange(ROOMS)}"})
                await asyncio.sleep(self.random.uniform(0.2, 3.0))
                if choice < 0.45:
                    ws.transport.abort()  # the server sees the connection lost: 1006
                else:
                    await ws.close()

    async def run(self) -> None:
        tasks = []
        span = self.until - time.monotonic()
        for index, server in enumerate(self.servers):
            count = 40 if index == 0 else 25
            for i in range(count):
                start = span * 0.4 * i / count
                leave = self.until - (span * 0.25 if i % 3 == 0 else 0)
                tasks.append(self.listener(server, i % ROOMS, start, leave))
            tasks += [self.talker(server, room, 0.25 + 0.15 * index) for room in range(ROOMS)]
            tasks += [self.flooder(server), self.churn(server)]
        await asyncio.gather(*tasks)


def realtime_stats(database: Database) -> tuple[str, str]:
    """The real ``realtime_stats --watch`` output, one view; returns (command, output)."""
    args = ["manage.py", "realtime_stats", "--watch", "5", "--count", "1", "--minutes", "10"]
    env = server_env(database.url, {})
    done = subprocess.run([PYTHON, *args], cwd=REPO, env=env, check=True, capture_output=True, text=True)
    return "python " + " ".join(args), done.stdout


async def load_and_snapshot(load: Load, database: Database, after: float) -> tuple[str, str, float]:
    """Run the load; ``after`` seconds in, while it still runs, take realtime_stats' view and the time."""
    running = asyncio.create_task(load.run())
    await asyncio.sleep(after)
    end = time.time()
    command, output = await asyncio.to_thread(realtime_stats, database)
    await running
    await asyncio.sleep(2 * SCRAPE)  # the last scrapes before ``end`` are in
    return command, output, end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=150.0, help="how long the load runs")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""), help="Redis for the servers' bus")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    args = parser.parse_args()
    dashboard = json.loads(DASHBOARD.read_text())
    workdir = Path(tempfile.mkdtemp(prefix="live-view-"))
    database = prepare_database(f"sqlite:///{workdir}/live.sqlite3")
    servers = []
    try:
        print(f"promtool: {check_expressions(dashboard, workdir)} expressions parse")
        overrides = {"REALTIME_RATE_LIMIT": "20", "REDIS_URL": args.redis_url}
        for name in ("app1", "app2"):
            server = realtime_server(database, str(workdir), {**overrides, "REALTIME_SERVER_ID": name})
            server.cpu = "every"
            servers.append(server.start())
        token = obtain_token(servers[0])
        targets = [f"127.0.0.1:{server.port}" for server in servers]
        with prometheus(workdir, targets) as url:
            start = time.time()
            load = Load(servers, token, time.monotonic() + args.seconds)
            command, output, end = asyncio.run(load_and_snapshot(load, database, args.seconds - 5))
            answers = answer_panels(dashboard, url, start - 4 * SCRAPE, end)
            print(f"load: {load.sent} messages sent in {args.seconds:g} s")
        names = dict(zip(targets, ("app1", "app2"), strict=True))
        args.out.mkdir(parents=True, exist_ok=True)
        html = render_dashboard(dashboard, answers, names, start - 4 * SCRAPE, end)
        for name, page, width in (
            ("grafana-dashboard.png", html, 1400),
            ("realtime-stats-watch.png", render_terminal(command, output), 900),
        ):
            size = screenshot(page, args.out / name, width)
            print(f"{args.out / name}: {size // 1024} KiB")
    finally:
        for server in servers:
            server.stop()
        database.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
