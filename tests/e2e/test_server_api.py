"""The server HTTP API (issue 16) against real ``manage.py serve`` processes.

- docs/platform.md, "Server HTTP API": every ``sh`` block of its examples runs in ``bash`` and
  every ``python`` block in a fresh interpreter, with ``BASE`` and ``REALTIME_API_KEY`` set to
  this server and its key; each must print what the block after it shows (a ``json`` block is
  compared as JSON, ``"…"`` matching any value; a ``text`` block line by line). The one edit:
  the example's user ``42`` is the seeded user alice. A WebSocket client follows the stream the
  examples publish to and must receive their events; alice's session must be closed 4403.
- Publishing from one server reaches a subscriber on another, and a disconnect sent to one
  server closes the user's sessions on the other (Redis between them).
- Keys never reach the server's log.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import uuid
from typing import Any

import orjson

from tests.conftest import scaled
from tests.e2e.conftest import E2EDatabase
from tests.e2e.helpers import (
    PYTHON,
    REPO,
    ServerProcess,
    call,
    connect,
    expect_close,
    http_json,
    obtain_tokens,
    recv_json,
)
from tests.e2e.redis_server import RedisServer

KEY = "e2e-server-api-key-0123456789abcdef"
WRONG_KEY = "e2e-server-api-key-0123456789abcdeX"
DOC = REPO / "docs" / "platform.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
EXAMPLE_USER = re.compile(r"\b42\b")


def examples() -> list[tuple[str, str]]:
    """``(language, text)`` of each fenced block in the examples of "Server HTTP API", in order."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("\n## Server HTTP API\n", 1)[1].split("\n## ", 1)[0]
    return [(m[1], m[2]) for m in FENCE.finditer(section.split("\n### Examples\n", 1)[1])]


def matches(expected: Any, actual: Any) -> bool:
    if expected == "…":
        return True
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(matches(value, actual[key]) for key, value in expected.items())
        )
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(map(matches, expected, actual))
    return bool(expected == actual) and type(expected) is type(actual)


async def stream_events(ws: Any, count: int) -> list[dict[str, Any]]:
    """The next ``count`` events of streams (pushes with an offset); other pushes are skipped."""
    events: list[dict[str, Any]] = []
    while len(events) < count:
        frame = await recv_json(ws, timeout=10)
        if "offset" in frame:
            events.append(frame)
    return events


def bearer(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_examples_are_complete() -> None:
    """Issue 16, docs: the examples show curl for every endpoint, then Python, each with its output."""
    blocks = examples()
    commands = "\n".join(text for language, text in blocks if language == "sh")
    for endpoint in ("publish/", "publish-many/", "/disconnect/", "streams/room:scores/", "/history/"):
        assert endpoint in commands
    assert [language for language, _ in blocks][-2:] == ["python", "text"]
    assert all(language in ("json", "text") for language, _ in blocks[1::2])


async def test_documented_examples_run_and_a_subscriber_receives_them(server_factory: Any, e2e_db: E2EDatabase) -> None:
    """Issue 16, docs + e2e: the curl and Python examples of docs/platform.md print what the doc shows
    against a real server; a WebSocket subscriber receives the published events as pushes; the
    disconnect example closes alice's session 4403 kicked; the key never reaches the log."""
    server: ServerProcess = server_factory(REALTIME_API_KEYS=f"{KEY},another-key-0123456789abcdefghij")
    alice_id = e2e_db.user_ids["alice"]
    follower = await connect(server, obtain_tokens(server, "bob")["access"])
    assert (await recv_json(follower))["event"] == "session.welcome"
    # The examples' stream is fresh in this database only once per session: start past what exists.
    reply = await call(follower, {"event": "stream.subscribe", "id": "s", "data": {"stream": "room:scores"}})
    assert reply["data"]["offset"] == 0, "room:scores must be new: the examples show its first offsets"
    alice = await connect(server, obtain_tokens(server, "alice")["access"])
    assert (await recv_json(alice))["event"] == "session.welcome"

    env = {**os.environ, "BASE": server.http_url, "REALTIME_API_KEY": KEY}
    blocks = examples()
    for (language, text), (shown, output) in zip(blocks[::2], blocks[1::2], strict=True):
        program = EXAMPLE_USER.sub(str(alice_id), text)
        argv = ["bash", "-c", program] if language == "sh" else [PYTHON, "-c", program]
        done = await asyncio.to_thread(
            subprocess.run, argv, env=env, capture_output=True, text=True, timeout=scaled(30), check=False
        )
        assert done.returncode == 0, done.stderr
        expected = EXAMPLE_USER.sub(str(alice_id), output)
        if shown == "json":
            assert matches(orjson.loads(expected), orjson.loads(done.stdout)), (text, done.stdout)
        else:
            assert done.stdout.splitlines() == expected.splitlines(), (text, done.stdout)

    pushes = await stream_events(follower, 3)
    assert [(p["event"], p["stream"], p["offset"]) for p in pushes] == [
        ("score.changed", "room:scores", 1),
        ("match.ended", "room:scores", 2),
        ("score.changed", "room:scores", 3),
    ]
    assert pushes[0]["data"] == {"home": 2, "away": 1}
    code, reason, _ = await expect_close(alice)
    assert (code, reason) == (4403, "kicked")
    await follower.close()
    assert KEY not in server.log_text()


async def test_credentials_on_a_real_server(server_factory: Any) -> None:
    """Issue 16, auth e2e: through uvicorn, no key -> 401 with WWW-Authenticate, a wrong key -> 401,
    a non-staff token -> 403, a staff token -> 200; the rate limit answers 429 with Retry-After;
    neither the key nor the wrong key is logged (log level DEBUG)."""
    server = server_factory(REALTIME_API_KEYS=KEY, REALTIME_SERVER_API_RATE="4/min", REALTIME_LOG_LEVEL="DEBUG")
    url = f"{server.http_url}/api/server/streams/room:e2e-auth/"
    status, headers, _ = http_json("GET", url)
    assert (status, headers["www-authenticate"]) == (401, 'Bearer realm="server-api"')
    assert http_json("GET", url, headers=bearer(WRONG_KEY))[0] == 401
    bob = obtain_tokens(server, "bob")["access"]
    assert http_json("GET", url, headers={"Authorization": f"Bearer {bob}"})[0] == 403
    admin = obtain_tokens(server, "admin")["access"]
    assert http_json("GET", url, headers={"Authorization": f"Bearer {admin}"})[0] == 200
    assert [http_json("GET", url, headers=bearer())[0] for _ in range(5)] == [200, 200, 200, 200, 429]
    status, headers, body = http_json("GET", url, headers=bearer())
    assert status == 429, body
    assert int(headers["retry-after"]) >= 1
    log = server.log_text()
    assert KEY not in log
    assert WRONG_KEY not in log


async def test_publish_and_disconnect_across_two_servers(
    server_factory: Any, redis: RedisServer, e2e_db: E2EDatabase
) -> None:
    """Issue 16, two servers + Redis: a publish sent to server A reaches a subscriber on server B, a
    disconnect sent to A closes the user's two sessions on B (4403 kicked) and no one else's, and
    REALTIME_SERVER_API_RATE is one budget for both servers."""
    settings = {"REDIS_URL": redis.url, "REALTIME_API_KEYS": KEY, "REALTIME_SERVER_API_RATE": "3/hour"}
    a, b = server_factory(**settings), server_factory(**settings)
    stream = f"room:two-{uuid.uuid4().hex[:8]}"
    follower = await connect(b, obtain_tokens(b, "bob")["access"])
    assert (await recv_json(follower))["event"] == "session.welcome"
    await call(follower, {"event": "stream.subscribe", "id": "s", "data": {"stream": stream}})
    alice_token = obtain_tokens(b, "alice")["access"]
    alices = [await connect(b, alice_token) for _ in range(2)]
    for ws in alices:
        assert (await recv_json(ws))["event"] == "session.welcome"

    status, _, body = http_json(
        "POST", f"{a.http_url}/api/server/publish/", {"stream": stream, "event": "x.y", "data": {"n": 1}}, bearer()
    )
    assert status == 200, body
    (push,) = await stream_events(follower, 1)
    assert (push["event"], push["offset"], push["data"]) == ("x.y", body["offset"], {"n": 1})

    alice_id = e2e_db.user_ids["alice"]
    status, _, body = http_json("POST", f"{a.http_url}/api/server/users/{alice_id}/disconnect/", {}, bearer())
    assert (status, body) == (202, {"user_id": alice_id, "sessions": 2})
    for ws in alices:
        assert (await expect_close(ws))[:2] == (4403, "kicked")
    assert (await call(follower, {"event": "ping", "id": "p"}))["event"] == "ack"
    # The key's budget is one for both servers (counted in Redis): two calls on A, one more on B.
    info = f"{b.http_url}/api/server/streams/{stream}/"
    assert [http_json("GET", info, headers=bearer())[0] for _ in range(2)] == [200, 429]
    await follower.close()
    assert "throttle unavailable" not in a.log_text() + b.log_text()
