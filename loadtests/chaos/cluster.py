"""The chaos soak's cluster: a private PostgreSQL and Redis, three ``serve`` processes, proxies.

Everything is a real process on loopback that the soak may kill, stop or restart:

- PostgreSQL: its own ``initdb`` cluster, restarted with ``pg_ctl restart -m immediate``
  (a crash and WAL recovery, as after a power cut of the database host);
- Redis: ``tests/e2e/redis_server.py``'s killable server, restarted on the same port;
- servers ``a`` and ``b`` (one process each) and ``c`` (``--workers 2``), through
  ``loadtests/server.py``'s ``Server`` (the one launcher, the e2e tests' too);
- two fault proxies per server (``tests/fault_proxy.py``) that clients connect through,
  so a fault can cut or freeze a group of client connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from loadtests import server as launcher
from loadtests.server import PYTHON, REPO
from tests.e2e.helpers import base_env
from tests.e2e.postgres_server import PostgresServer
from tests.e2e.redis_server import RedisServer, free_port
from tests.fault_proxy import FaultProxy

PASSWORD = "chaos-password-not-a-secret"  # noqa: S105 - throwaway users in a throwaway database

SEED = """
import json
from accounts.models import User
from rest_framework_simplejwt.tokens import AccessToken
out = {}
for i in range(%(users)d):
    user = User.objects.create_user(username=f"chaos{i}", password=%(password)r)
    out[user.username] = {"id": user.pk, "token": str(AccessToken.for_user(user))}
print("USERS=" + json.dumps(out))
"""


@dataclass
class Server:
    name: str
    process: launcher.Server
    proxies: list[FaultProxy] = field(default_factory=list)
    stopped: bool = False  # SIGSTOPped right now

    def pids(self) -> list[int]:
        """The server's process and, for ``--workers``, its worker processes."""
        assert self.process.proc is not None
        root = self.process.proc.pid
        out = subprocess.run(["pgrep", "-P", str(root)], capture_output=True, text=True, check=False).stdout
        return [root, *(int(p) for p in out.split())]


@dataclass
class Cluster:
    workdir: Path
    postgres: PostgresServer
    redis: RedisServer
    database_url: str
    users: dict[str, dict[str, object]]
    servers: list[Server] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, workdir: Path, *, users: int, settings: dict[str, str]) -> Cluster:
        postgres = PostgresServer(workdir).start()
        redis = RedisServer(free_port(), workdir).start()
        env = base_env(postgres.url, REDIS_URL=redis.url, **settings)
        subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v0"], cwd=REPO, env=env, check=True, timeout=300)
        seeded = subprocess.run(
            [PYTHON, "manage.py", "shell", "-c", SEED % {"users": users, "password": PASSWORD}],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        line = next(line for line in seeded.splitlines() if line.startswith("USERS="))
        return cls(workdir, postgres, redis, postgres.url, json.loads(line[6:]), env=env)

    def start_servers(self) -> None:
        for name, extra in (("a", ()), ("b", ()), ("c", ("--workers", "2"))):
            env = {**self.env, "REALTIME_SERVER_ID": f"chaos-{name}"}
            process = launcher.Server(env=env, log_path=self.workdir / f"server-{name}.log", extra_args=extra)
            self.servers.append(Server(name, process.start(timeout=120)))

    async def start_proxies(self, per_server: int) -> None:
        for server in self.servers:
            for _ in range(per_server):
                server.proxies.append(await FaultProxy("127.0.0.1", server.process.port).start())

    @property
    def proxies(self) -> list[FaultProxy]:
        return [proxy for server in self.servers for proxy in server.proxies]

    def restart_server(self, server: Server) -> None:
        """After a ``kill -9``: a new process on the same port, the same database and log."""
        with contextlib.suppress(Exception):
            server.process.stop(signal.SIGKILL)
        server.process = server.process.restarted()

    def logs(self) -> str:
        return "\n".join(server.process.log_text() for server in self.servers)

    async def close(self) -> None:
        for proxy in self.proxies:
            with contextlib.suppress(Exception):
                await proxy.close()
        for server in self.servers:
            if server.stopped:
                for pid in server.pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(server.process.stop)
        self.redis.kill()
        self.postgres.stop()
