"""The deployment's nginx configuration, for real: Debian's nginx in front of two servers (issue 4)."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import scaled
from tests.e2e.helpers import REPO, ServerProcess, call, http_json, recv_json
from tests.e2e.redis_server import RedisServer, free_port


def nginx_conf(workdir: Path, port: int, upstreams: list[int]) -> Path:
    template = (REPO / "deploy" / "nginx" / "realtime.conf.template").read_text()
    site = template.replace("${NGINX_PORT}", f"127.0.0.1:{port}").replace(
        "${REALTIME_UPSTREAMS}",
        "\n    ".join(f"server 127.0.0.1:{p} max_fails=0;" for p in upstreams),
    )
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {workdir}/access.log;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
{site}
}}
"""
    )
    return conf


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[list[int]], str]]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(binary).exists(), "nginx is not installed (scripts/services.sh installs it)"
    procs: list[subprocess.Popen[bytes]] = []

    def start(upstreams: list[int]) -> str:
        port = free_port()
        conf = nginx_conf(tmp_path, port, upstreams)
        proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(tmp_path), "-g", "daemon off;"], cwd=tmp_path)
        procs.append(proc)
        deadline = time.monotonic() + scaled(10)
        while time.monotonic() < deadline:
            try:
                if http_json("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    return f"127.0.0.1:{port}"
            except OSError:
                time.sleep(0.1)
        raise RuntimeError((tmp_path / "error.log").read_text())

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait()


async def test_cross_server_broadcast_through_nginx(server_factory, nginx, redis: RedisServer) -> None:
    """Risks: Scaling complexity -> behind nginx (WebSocket upgrade headers, least_conn), clients land
    on both servers and a broadcast published through nginx reaches every one of them."""
    servers: list[ServerProcess] = [server_factory(REDIS_URL=redis.url) for _ in range(2)]
    front = nginx([s.port for s in servers])
    status, _, body = http_json(
        "POST", f"http://{front}/api/auth/token/", {"username": "alice", "password": "correct-horse-battery-staple"}
    )
    assert status == 200
    token = body["access"]
    from websockets.asyncio.client import connect

    clients = [await connect(f"ws://{front}/ws/?token={token}") for _ in range(10)]
    landed = {(await recv_json(ws))["data"]["server"] for ws in clients}
    assert len(landed) == 2, landed
    stream = f"room:nginx{uuid.uuid4().hex[:10]}"
    for ws in clients:
        assert (await call(ws, {"event": "stream.subscribe", "data": {"stream": stream}}))["event"] == "ack"
    ack = await call(clients[0], {"event": "message.send", "id": "n1", "data": {"stream": stream, "text": "via nginx"}})
    assert ack["event"] == "ack"
    for ws in clients[1:]:
        frame = await recv_json(ws, 10)
        assert (frame["offset"], frame["data"]["text"]) == (1, "via nginx")

    status, _, _ = http_json("GET", f"http://{front}/ws/")
    assert status == 426
    for ws in clients:
        await ws.close()
