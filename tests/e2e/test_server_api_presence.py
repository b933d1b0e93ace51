"""Operators see presence (issue 17) through the server HTTP API (issue 16), on real servers.

- One server: ``GET /api/server/streams/STREAM/presence/`` lists the WebSocket clients
  subscribed to a presence-enabled stream (sessions and meta), as ``stream.presence`` does;
  ``GET /api/server/users/ID/`` says a user is online with their sessions and server, and
  offline once the last session closes.
- Two servers sharing Redis: a member connected to server B is in the answer of server A,
  which does not follow the stream (it reads the presence store); A says the user is online
  on B (session rows, cluster-wide).
- The documented examples (run by ``tests/e2e/test_server_api.py``) show both endpoints.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import scaled
from tests.e2e.conftest import E2EDatabase
from tests.e2e.helpers import ServerProcess, connect, http_json, obtain_tokens, recv_json
from tests.e2e.redis_server import RedisServer
from tests.e2e.test_presence import ask, session, subscribe
from tests.e2e.test_server_api import examples

pytestmark = pytest.mark.timeout(60)

KEY = "e2e-presence-api-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}


def room() -> str:
    return f"room:ops-{uuid.uuid4().hex[:10]}"


def api(server: ServerProcess, path: str) -> tuple[int, Any]:
    status, _, body = http_json("GET", f"{server.http_url}/api/server/{path}", headers=AUTH)
    return status, body


async def welcomed(server: ServerProcess, user: str) -> tuple[Any, str]:
    """A session of ``user`` and the server id its welcome names."""
    ws = await connect(server, obtain_tokens(server, user)["access"])
    welcome = await recv_json(ws)
    assert welcome["event"] == "session.welcome"
    return ws, str(welcome["data"]["server"])


async def until(server: ServerProcess, path: str, done: Callable[[Any], bool], within: float = 5.0) -> Any:
    """The answer of ``path`` once ``done`` holds (presence is written every interval, sessions
    are closed after the socket), failing after ``within`` seconds."""
    deadline = time.monotonic() + scaled(within)
    while True:
        status, body = await asyncio.to_thread(api, server, path)
        assert status == 200, body
        if done(body) or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.1)


def test_examples_show_presence_and_online_status() -> None:
    """Issues 16/17, docs: the server API's examples call both endpoints with curl and show replies."""
    commands = "\n".join(text for language, text in examples() if language == "sh")
    assert "/api/server/streams/room:scores/presence/" in commands
    assert '/api/server/users/42/"' in commands


async def test_presence_and_online_status_on_one_server(server_factory: Any, e2e_db: E2EDatabase) -> None:
    """Issue 17, server API e2e: the stream's members (alice with two tabs and her meta, bob) are
    the stream.presence answer; alice is online with 2 sessions on this server, then offline
    when both close; a user stream is refused naming the field."""
    server = server_factory(REALTIME_API_KEYS=KEY)
    stream = room()
    bob = await session(server, "bob")
    await subscribe(bob, stream)
    alices = [await welcomed(server, "alice") for _ in range(2)]
    server_id = alices[0][1]
    for ws, _ in alices:
        await subscribe(ws, stream)
    answer = await ask(alices[0][0], "stream.presence", {"stream": stream, "meta": {"status": "away"}})
    status, body = api(server, f"streams/{stream}/presence/")
    assert (status, body) == (200, answer["data"])
    assert {u["username"]: (u["sessions"], u["meta"]) for u in body["users"]} == {
        "alice": (2, {"status": "away"}),
        "bob": (1, None),
    }
    assert body["degraded"] is False
    status, body = api(server, "streams/user:1/presence/")
    assert (status, list(body)) == (400, ["stream"])

    alice_id = e2e_db.user_ids["alice"]
    online = {"id": alice_id, "username": "alice", "online": True, "sessions": 2, "servers": [server_id]}
    assert api(server, f"users/{alice_id}/") == (200, online)
    for ws, _ in alices:
        await ws.close()
    offline = await until(server, f"users/{alice_id}/", lambda body: body["sessions"] == 0)
    assert offline == {"id": alice_id, "username": "alice", "online": False, "sessions": 0, "servers": []}
    assert api(server, "users/999999999/")[0] == 404
    await bob.close()


async def test_a_member_on_server_b_is_in_server_as_answer(
    server_factory: Any, redis: RedisServer, e2e_db: E2EDatabase
) -> None:
    """Issue 17, two servers + Redis: alice subscribed on B is a member in A's answer (A follows
    no subscriber of the stream: it reads the presence store) within 2 s; A says she is online
    on B's server; after she leaves, A's answer is empty."""
    settings = {"REDIS_URL": redis.url, "REALTIME_API_KEYS": KEY, "REALTIME_SERVER_HEARTBEAT_INTERVAL": "1.0"}
    a, b = server_factory(**settings), server_factory(**settings)
    stream = room()
    alice, server_b = await welcomed(b, "alice")
    started = time.monotonic()
    await subscribe(alice, stream)
    body = await until(a, f"streams/{stream}/presence/", lambda body: bool(body["users"]))
    assert time.monotonic() - started < scaled(2.0)
    alice_id = e2e_db.user_ids["alice"]
    assert body == {
        "stream": stream,
        "users": [{"id": alice_id, "username": "alice", "sessions": 1, "meta": None}],
        "degraded": False,
    }
    online = {"id": alice_id, "username": "alice", "online": True, "sessions": 1, "servers": [server_b]}
    assert api(a, f"users/{alice_id}/") == (200, online)
    await alice.close()
    left = await until(a, f"streams/{stream}/presence/", lambda body: not body["users"])
    assert left["users"] == []
