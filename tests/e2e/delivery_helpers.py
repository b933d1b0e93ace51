"""Helpers of the issue-14 delivery tests: servers on one private Redis, clients, Redis state."""

from __future__ import annotations

import asyncio
import re
import socket
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import redis as redis_sync
from websockets.asyncio.client import ClientConnection

from tests.conftest import scaled
from tests.e2e.conftest import E2EDatabase
from tests.e2e.helpers import ServerProcess, call, connect, mint_token, recv_json
from tests.e2e.redis_server import RedisServer
from tests.waiting import async_wait_until


def room() -> str:
    return f"room:d{uuid.uuid4().hex[:12]}"


def msg_id(prefix: str = "m") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


async def client(
    server: ServerProcess, e2e_db: E2EDatabase, user: str = "alice", rcvbuf: int | None = None
) -> ClientConnection:
    """A logged-in client; ``rcvbuf`` shrinks its socket's receive buffer (a slow reader's
    window fills at once, so the server's transport pauses writing)."""
    kwargs: dict[str, Any] = {"max_size": None}
    if rcvbuf is not None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect((server.host, server.port))
        kwargs.update(sock=sock, max_queue=1)
    ws = await connect(server, mint_token(e2e_db.user_ids[user], expires_in=600), **kwargs)
    assert (await recv_json(ws))["event"] == "session.welcome"
    return ws


async def subscribe(ws: ClientConnection, stream: str, since: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"stream": stream} if since is None else {"stream": stream, "since": since}
    ref = msg_id("sub")
    reply = await call(ws, {"event": "stream.subscribe", "id": ref, "data": data})
    assert (reply["event"], reply.get("ref")) == ("ack", ref), reply
    ack: dict[str, Any] = reply["data"]
    return ack


async def publish(ws: ClientConnection, stream: str, texts: list[str], ids: list[str] | None = None) -> list[int]:
    """Publish pipelined; the acked offsets in order."""
    ids = ids or [msg_id() for _ in texts]
    for text, ident in zip(texts, ids, strict=True):
        frame = {"event": "message.send", "id": ident, "data": {"stream": stream, "text": text}}
        await ws.send(orjson.dumps(frame).decode())
    offsets: dict[str, int] = {}
    async with asyncio.timeout(scaled(60)):
        while len(offsets) < len(ids):
            reply = orjson.loads(await ws.recv())
            assert reply["event"] != "error", reply
            if reply["event"] == "ack":
                offsets[reply["ref"]] = reply["data"]["offset"]
    return [offsets[i] for i in ids]


async def collect(
    ws: ClientConnection, count: int, timeout: float, others: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The next ``count`` stream events (frames with an offset); other frames go to ``others``."""
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(scaled(timeout)):
        while len(frames) < count:
            frame = orjson.loads(await ws.recv())
            if "offset" in frame and "ref" not in frame:
                frames.append(frame)
            elif others is not None:
                others.append(frame)
    return frames


async def until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> float:
    """Poll ``predicate`` until true; the seconds it took. Fails the test after ``timeout``."""
    return await async_wait_until(predicate, timeout, interval=step)


def db_execute(database_url: str, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Change the server's database as an operator would (a statement with no result)."""
    if database_url.startswith("sqlite:"):
        import sqlite3

        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            conn.execute(sql.replace("%s", "?"), params)
        return
    import psycopg

    with psycopg.connect(database_url) as conn:
        conn.execute(sql, params)


def commit_without_broadcast(
    database_url: str, stream: str, event: str, data: dict[str, Any], sender_id: int, client_id: str
) -> int:
    """Commit an event as a publisher would and never send it on the bus (a publisher that
    crashed between its commit and its broadcast); returns its offset."""
    claim = "UPDATE realtime_stream SET head = head + 1 WHERE name = %s RETURNING id, head"
    insert = (
        'INSERT INTO realtime_event (stream_id, "offset", event, data, sender_id, client_id, created_at)'
        " VALUES (%s, %s, %s, %s, %s, %s, CURRENT_TIMESTAMP)"
    )
    payload = orjson.dumps(data).decode()
    if database_url.startswith("sqlite:"):
        import sqlite3

        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            stream_id, head = conn.execute(claim.replace("%s", "?"), (stream,)).fetchone()
            conn.execute(insert.replace("%s", "?"), (stream_id, head, event, payload, sender_id, client_id))
        return int(head)
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute(claim, (stream,)).fetchone()
        assert row is not None, f"{stream} does not exist"
        conn.execute(insert, (row[0], row[1], event, payload, sender_id, client_id))
    return int(row[1])


def redis_client(server: RedisServer) -> Any:
    """A synchronous client of the test's Redis (redis-py's command types are loose: Any)."""
    return redis_sync.Redis.from_url(server.url)


def group_scores(client: Any, key: str) -> list[float]:
    """When each member of a group joined, as channels-redis recorded it (epoch seconds)."""
    return [float(score) for _, score in client.zrange(key, 0, -1, withscores=True)]


def age_group(client: Any, key: str, joined_at: float) -> None:
    """Make every member of a group look as if it joined at ``joined_at``."""
    client.zadd(key, dict.fromkeys(client.zrange(key, 0, -1), joined_at))


def group_key(group: str) -> str:
    """channels-redis's sorted set of a group's member channels (score: when each joined)."""
    return f"asgi:group:{group}"


def stream_group(stream: str) -> str:
    kind, _, key = stream.partition(":")
    return f"stream.{kind}.{key}"


def delivered_with_publish_time(server: ServerProcess, e2e_db: E2EDatabase) -> float:
    """How many events this server's hub was handed with a publish time: over the bus or by a
    local publish, never by head tracking's catch-up from the log (those carry none). A test
    that publishes on another server counts what crossed the broker."""
    request = urllib.request.Request(f"{server.http_url}/metrics")  # noqa: S310 - loopback test URL
    request.add_header("Authorization", f"Bearer {mint_token(e2e_db.user_ids['admin'], expires_in=600)}")
    with urllib.request.urlopen(request, timeout=scaled(10)) as response:  # noqa: S310
        text = response.read().decode()
    match = re.search(r"^realtime_publish_to_delivery_seconds_count (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0
