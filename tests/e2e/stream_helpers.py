"""Small helpers shared by the stream, concurrency and resource e2e tests."""

from __future__ import annotations

import uuid
from typing import Any

from websockets.asyncio.client import ClientConnection

from tests.e2e.conftest import E2EDatabase
from tests.e2e.helpers import ServerProcess, call, connect, mint_token, recv_json


def uid(prefix: str) -> str:
    """A message id no other test uses: ids are idempotency keys per user for the whole session."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


async def login(server: ServerProcess, e2e_db: E2EDatabase, username: str, **kwargs: Any) -> ClientConnection:
    ws = await connect(server, mint_token(e2e_db.user_ids[username], expires_in=600), **kwargs)
    welcome = await recv_json(ws)
    assert welcome["event"] == "session.welcome", welcome
    return ws


async def subscribe(ws: ClientConnection, stream: str, **extra: Any) -> dict[str, Any]:
    ref = uid("sub")
    reply = await call(ws, {"event": "stream.subscribe", "id": ref, "data": {"stream": stream, **extra}})
    assert (reply["event"], reply["ref"]) == ("ack", ref), reply
    data: dict[str, Any] = reply["data"]
    return data


async def pushes(ws: ClientConnection, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The next ``count`` frames, each of which must be a push (no ref)."""
    frames = []
    for _ in range(count):
        frame = await recv_json(ws, timeout)
        assert "ref" not in frame, frame
        frames.append(frame)
    return frames
