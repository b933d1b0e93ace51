"""Presence join storm and reconnect storm on two servers sharing Redis (issue 17).

    python -m loadtests.presence_storm --members 1000

Starts a throwaway redis-server, a SQLite database and two ``manage.py serve`` processes;
creates MEMBERS users, connects each once (alternating servers) and then subscribes them
all to one room at once: the join storm. Observers (a few members on each server) keep
the presence map a client keeps; every other member only counts its presence frames.
Then every member but the observers drops its connection and comes back at once: the
reconnect storm. Prints one JSON line: how long until every observer saw every member,
and how many presence frames were sent, against the N x N of one push per join per member.
Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loadtests.server import PYTHON, Server, migrate  # noqa: E402
from tests.e2e.helpers import PASSWORD, SECRET_KEY, base_env, mint_token  # noqa: E402
from tests.e2e.redis_server import RedisServer, free_port  # noqa: E402

CONNECT_BATCH = 100  # handshakes in flight at once
CONVERGE_TIMEOUT = 60.0

_CREATE = """
import json
from accounts.models import User
from django.contrib.auth.hashers import make_password
password = make_password({password!r})
users = User.objects.bulk_create([User(username=f"{prefix}{{n}}", password=password) for n in range({count})])
print("IDS=" + json.dumps([u.pk for u in users]))
"""


def create_members(env: dict[str, str], count: int) -> list[int]:
    """``count`` users in one query (one password hash for all): their ids."""
    code = _CREATE.format(password=PASSWORD, prefix=f"s{uuid.uuid4().hex[:8]}-", count=count)
    out = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", code], cwd=REPO, env=env, check=True, capture_output=True, text=True
    ).stdout
    ids: list[int] = json.loads(next(line for line in out.splitlines() if line.startswith("IDS="))[4:])
    return ids


@dataclass
class Member:
    user_id: int
    url: str
    observer: bool
    ws: ClientConnection | None = None
    frames: int = 0  # presence.* frames received
    bytes: int = 0
    present: set[int] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set when ``present`` changes
    reader: asyncio.Task[None] | None = None

    async def open(self, token: str) -> None:
        self.ws = await connect(f"{self.url}?token={token}", max_size=None)
        await self.ws.recv()  # session.welcome
        self.reader = asyncio.ensure_future(self._read(self.ws))

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            async for raw in ws:
                text = raw if isinstance(raw, str) else raw.decode()
                if not text.startswith('{"event":"presence.'):
                    continue
                self.frames += 1
                self.bytes += len(text)
                if self.observer:
                    self._apply(orjson.loads(text))

    def _apply(self, frame: dict[str, Any]) -> None:
        users = {u["id"] for u in frame["data"]["users"]}
        if frame["event"] == "presence.state":
            self.present = users
        elif frame["event"] == "presence.join":
            self.present |= users
        else:
            self.present -= users
        self.changed.set()

    async def subscribe(self, stream: str) -> None:
        assert self.ws is not None
        await self.ws.send(
            orjson.dumps({"event": "stream.subscribe", "data": {"stream": stream, "presence": True}}).decode()
        )

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            with contextlib.suppress(BaseException):
                await self.reader


async def _batched(coros: list[Any]) -> None:
    for start in range(0, len(coros), CONNECT_BATCH):
        await asyncio.gather(*coros[start : start + CONNECT_BATCH])


async def _converged(observers: list[Member], everyone: set[int], started: float) -> float:
    async with asyncio.timeout(CONVERGE_TIMEOUT):
        for observer in observers:
            while observer.present != everyone:
                observer.changed.clear()
                await observer.changed.wait()
    return time.perf_counter() - started


async def storm(
    urls: list[str], user_ids: list[int], observers_per_server: int = 5, reconnect: bool = True
) -> dict[str, Any]:
    """The join storm, then (``reconnect``) the reconnect storm, of ``user_ids`` spread over ``urls``."""
    stream = f"room:storm-{uuid.uuid4().hex[:8]}"
    tokens = {uid: mint_token(uid, expires_in=3600, key=SECRET_KEY) for uid in user_ids}
    members = [
        Member(uid, urls[n % len(urls)], observer=n < observers_per_server * len(urls))
        for n, uid in enumerate(user_ids)
    ]
    observers = [m for m in members if m.observer]
    everyone = set(user_ids)
    try:
        await _batched([m.open(tokens[m.user_id]) for m in members])
        started = time.perf_counter()
        await asyncio.gather(*(m.subscribe(stream) for m in members))
        join_s = await _converged(observers, everyone, started)
        await asyncio.sleep(1.0)  # the last intervals' pushes arrive
        join_frames = sum(m.frames for m in members)
        join_bytes = sum(m.bytes for m in members)
        observer_frames = [o.frames for o in observers]
        n = len(members)
        figures: dict[str, Any] = {
            "mode": "presence-storm",
            "members": n,
            "servers": len(urls),
            "join_converged_s": round(join_s, 2),
            "join_presence_frames": join_frames,
            "join_presence_frames_per_member": round(join_frames / n, 2),
            "join_presence_mb": round(join_bytes / 1e6, 1),
            "naive_frames_one_push_per_join": n * n,
            "date": time.strftime("%Y-%m-%d"),
            "cores": os.cpu_count(),
        }
        if not reconnect:
            return figures

        movers = [m for m in members if not m.observer]
        await asyncio.gather(*(m.close() for m in movers))
        for m in movers:
            m.frames = m.bytes = 0
        started = time.perf_counter()
        await _batched([m.open(tokens[m.user_id]) for m in movers])
        await asyncio.gather(*(m.subscribe(stream) for m in movers))
        reconnect_s = await _converged(observers, everyone, started)
        await asyncio.sleep(1.0)
        reconnect_frames = [o.frames - before for o, before in zip(observers, observer_frames, strict=True)]
        return {
            **figures,
            "reconnect_converged_s": round(reconnect_s, 2),
            "reconnect_frames_per_observer_max": max(reconnect_frames),
            "reconnect_presence_frames_movers": sum(m.frames for m in movers),
        }
    finally:
        await asyncio.gather(*(m.close() for m in members), return_exceptions=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="presence-storm-"))
    redis = RedisServer(port=free_port(), workdir=workdir).start()
    database_url = f"sqlite:///{workdir / 'db.sqlite3'}"
    env = base_env(database_url)
    migrate(env)
    user_ids = create_members(env, args.members)
    settings = {"REDIS_URL": redis.url, "REALTIME_RATE_LIMIT": "0"}
    servers = [
        Server(env=base_env(database_url, **settings), log_path=workdir / f"{n}.log").start() for n in ("a", "b")
    ]
    try:
        return await storm([s.ws_url for s in servers], user_ids)
    finally:
        for server in servers:
            server.stop()
        redis.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1000)
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
