"""A database crash while clients publish: never an error that tells the client to give up.

Row: Fault tolerance (the database of section 8's "source of truth" fails); risk No
built-in delivery guarantees. Found by the chaos soak (docs/reliability.md): during a
PostgreSQL restart, publishes were answered ``internal_error`` (by the contract, a bug:
the client drops the call), so the message was lost although the client would have
retried. Now the connection closes 1013 ``try_again_later``: the client reconnects with
backoff and retries the un-acked publish with the same id, which is stored once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import scaled
from tests.e2e.helpers import (
    ServerProcess,
    base_env,
    call,
    connect,
    create_user,
    db_query,
    expect_close,
    manage,
    mint_token,
    recv_json,
)
from tests.e2e.postgres_server import PostgresServer, private_directory


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    with private_directory() as workdir:
        server = PostgresServer(workdir).start()
        try:
            yield server
        finally:
            server.stop()


def _seed(database_url: str) -> int:
    manage(database_url, "migrate", "--noinput", "-v0", check=True)
    return create_user(database_url, "dora")


async def _connect_when_ready(server: ServerProcess, token: str) -> ClientConnection:
    """Reconnect as a client does after 1013 try_again_later: with backoff until welcomed."""
    for _ in range(60):
        try:
            ws = await connect(server, token)
            first = await recv_json(ws)
            if first.get("event") == "session.welcome":
                return ws
        except (ConnectionClosed, InvalidStatus, OSError):
            pass
        await asyncio.sleep(0.25)
    raise AssertionError("never welcomed again after the database came back")


async def test_publish_during_a_database_crash_closes_1013_and_the_retry_is_stored_once(
    private_postgres: PostgresServer, tmp_path: Path
) -> None:
    user_id = await asyncio.to_thread(_seed, private_postgres.url)
    server = ServerProcess(env=base_env(private_postgres.url), log_path=tmp_path / "server.log")
    await asyncio.to_thread(server.start)
    try:
        token = mint_token(user_id, expires_in=600)
        ws = await connect(server, token)
        assert (await recv_json(ws))["event"] == "session.welcome"
        ack = await call(ws, {"event": "stream.subscribe", "id": "s", "data": {"stream": "room:outage"}})
        assert ack["event"] == "ack", ack
        first = await call(ws, {"event": "message.send", "id": "m1", "data": {"stream": "room:outage", "text": "a"}})
        assert first["data"]["offset"] == 1, first

        await asyncio.to_thread(private_postgres.crash)
        await ws.send(
            orjson.dumps({"event": "message.send", "id": "m2", "data": {"stream": "room:outage", "text": "b"}}).decode()
        )
        code, reason, frames = await expect_close(ws, timeout=scaled(30))
        replies = [f for f in frames if f.get("ref") == "m2"]
        assert replies == [], f"the publish was answered instead of retried: {replies}"
        assert (code, reason) == (1013, "try_again_later")

        await asyncio.to_thread(private_postgres.resume)
        ws = await _connect_when_ready(server, token)
        resumed = await call(
            ws, {"event": "stream.subscribe", "id": "s2", "data": {"stream": "room:outage", "since": 1}}
        )
        assert resumed["data"]["recovered"] is True, resumed
        retry = await call(ws, {"event": "message.send", "id": "m2", "data": {"stream": "room:outage", "text": "b"}})
        assert retry["event"] == "ack", retry
        assert retry["data"]["offset"] == 2, retry
        push = await recv_json(ws)
        assert (push["event"], push["offset"], push["data"]["id"]) == ("message.new", 2, "m2")
        rows = db_query(
            private_postgres.url,
            "SELECT e.client_id FROM realtime_event e JOIN realtime_stream s ON s.id = e.stream_id "
            "WHERE s.name = %s ORDER BY e.offset",
            ("room:outage",),
        )
        assert [r[0] for r in rows] == ["m1", "m2"]
        log = server.log_text()
        assert "database unavailable" in log
        assert '"code":"internal_error"' not in log.replace(" ", ""), json.dumps(log[-3000:])
    finally:
        await asyncio.to_thread(server.stop)
