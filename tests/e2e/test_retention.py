"""Retention: prune_events against the real database and a real server (issue 3, issue 8)."""

from __future__ import annotations

import uuid

from tests.e2e.conftest import E2EDatabase
from tests.e2e.helpers import ServerProcess, call, connect, manage, obtain_tokens, recv_json


async def test_pruned_history_answers_recovered_false(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Connection: Reconnect -> after prune_events removed old events, a resume from before them
    gets recovered:false (no silent gap); a resume from after them still replays."""
    ws = await connect(server, obtain_tokens(server, "alice")["access"])
    await recv_json(ws)
    stream = f"room:prune{uuid.uuid4().hex[:10]}"
    for n in range(3):
        assert (await call(ws, {"event": "message.send", "data": {"stream": stream, "text": f"m{n}"}}))[
            "event"
        ] == "ack"
    dry = manage(e2e_db.url, "prune_events", "--hours", "0", "--dry-run", check=True)
    assert "would delete" in dry.stdout
    done = manage(e2e_db.url, "prune_events", "--hours", "0", check=True)
    assert done.stdout.startswith("deleted ")

    stale = await call(ws, {"event": "stream.subscribe", "data": {"stream": stream, "since": 1}})
    assert stale["data"]["recovered"] is False
    assert stale["data"]["offset"] == 3
    history = await call(ws, {"event": "stream.history", "data": {"stream": stream, "since": 0}})
    assert history["data"]["events"] == []
    fresh = await call(ws, {"event": "stream.subscribe", "data": {"stream": stream, "since": 3}})
    assert fresh["data"]["recovered"] is True
    ack = await call(ws, {"event": "message.send", "data": {"stream": stream, "text": "after"}})
    assert ack["data"]["offset"] == 4
    pushed = await recv_json(ws)
    assert (pushed["event"], pushed["offset"], pushed["data"]["text"]) == ("message.new", 4, "after")
