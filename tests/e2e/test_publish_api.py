"""``realtime.publish`` / ``realtime.position`` from other processes, against real servers (issue 16).

The publisher is ``manage.py shell`` (a process that is not the ASGI server, as a WSGI worker or
a Celery task is); subscribers hold WebSocket connections to ``manage.py serve`` processes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from tests.conftest import scaled
from tests.e2e.conftest import E2EDatabase
from tests.e2e.delivery_helpers import delivered_with_publish_time
from tests.e2e.helpers import PYTHON, REPO, ServerProcess, base_env, call, connect, http_json, mint_token, recv_json
from tests.e2e.redis_server import RedisServer, free_port


def _shell(e2e_db: E2EDatabase, script: str, **env: str) -> dict[str, Any]:
    """Run ``script`` in ``manage.py shell``; it prints ``RESULT=<json>`` once."""
    done = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", script],
        cwd=REPO,
        env=base_env(e2e_db.url, **env),
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    line = next((line for line in done.stdout.splitlines() if line.startswith("RESULT=")), None)
    assert line is not None, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(line[len("RESULT=") :])
    return result


async def _subscriber(server: ServerProcess, e2e_db: E2EDatabase, stream: str, **since: Any) -> ClientConnection:
    ws = await connect(server, mint_token(e2e_db.user_ids["alice"], expires_in=600))
    assert (await recv_json(ws))["event"] == "session.welcome"
    reply = await call(ws, {"event": "stream.subscribe", "id": "s", "data": {"stream": stream, **since}})
    assert reply["event"] == "ack", reply
    return ws


PUBLISH_ONE = """
import json, time, realtime
started = time.monotonic()
offset = realtime.publish({stream!r}, "score.changed", {{"n": 1, "name": "\\u00e9"}}, id="p1")
print("RESULT=" + json.dumps({{"offset": offset, "at": time.time(), "took": time.monotonic() - started}}))
"""


@pytest.mark.parametrize("broker", ["none", "unreachable"])
async def test_publish_from_shell_reaches_a_subscriber_by_head_tracking(
    server: ServerProcess, e2e_db: E2EDatabase, broker: str
) -> None:
    """Issue 16 (a): publish from manage.py shell, no Redis (or a Redis that refuses connections):
    the publish returns its offset at once, and the subscriber gets the push, shaped like every
    other push, within 2 s of the commit (the server reads it from the log)."""
    stream = f"room:pub{uuid.uuid4().hex[:10]}"
    ws = await _subscriber(server, e2e_db, stream)
    env = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"} if broker == "unreachable" else {}
    result = await asyncio.to_thread(_shell, e2e_db, PUBLISH_ONE.format(stream=stream), **env)
    assert result["offset"] == 1
    assert result["took"] < scaled(1.0), result
    frame = await recv_json(ws, timeout=scaled(2.5))
    latency = time.time() - result["at"]
    assert frame == {"event": "score.changed", "stream": stream, "offset": 1, "data": {"n": 1, "name": "é"}}
    assert latency < scaled(2.0), latency


async def test_publish_with_redis_reaches_subscribers_of_two_servers_at_once(
    server_factory: Any, e2e_db: E2EDatabase, redis: RedisServer
) -> None:
    """Issue 16 (b): with Redis the publish is one bus message: subscribers on both servers get it
    well under a second, through the bus (counted by the delivery-latency metric, which head
    tracking's catch-up does not feed)."""
    a = server_factory(REDIS_URL=redis.url)
    b = server_factory(REDIS_URL=redis.url)
    stream = f"room:bus{uuid.uuid4().hex[:10]}"
    subscribers = [await _subscriber(a, e2e_db, stream), await _subscriber(b, e2e_db, stream)]
    before = [delivered_with_publish_time(a, e2e_db), delivered_with_publish_time(b, e2e_db)]
    result = await asyncio.to_thread(_shell, e2e_db, PUBLISH_ONE.format(stream=stream), REDIS_URL=redis.url)
    frames = [await recv_json(ws, timeout=scaled(2)) for ws in subscribers]
    latency = time.time() - result["at"]
    assert all(frame["offset"] == 1 and frame["event"] == "score.changed" for frame in frames), frames
    assert latency < scaled(1.0), latency
    assert [delivered_with_publish_time(a, e2e_db) - before[0], delivered_with_publish_time(b, e2e_db) - before[1]] == [
        1,
        1,
    ]


ATOMIC = """
import json, threading
from django.db import connections, transaction
import realtime
from realtime.models import Event, Resource, Stream
from realtime.protocol.errors import NotFound

stream = {stream!r}
out = {{}}
class Rollback(Exception):
    pass
try:
    with transaction.atomic():
        gone = Resource.objects.create(data={{"doomed": True}})
        realtime.publish(stream, "thing.created", {{"id": gone.pk}})
        raise Rollback
except Rollback:
    pass
out["after_rollback"] = Event.objects.filter(stream__name=stream).count()
with transaction.atomic():
    kept = Resource.objects.create(data={{"kept": True}})
    out["committed"] = realtime.publish(stream, "thing.created", {{"id": kept.pk}})
out["kept_id"] = kept.pk
out["first"] = realtime.publish(stream, "thing.noted", {{"try": 1}}, id="retry-1")
out["second"] = realtime.publish(stream, "thing.noted", {{"try": 2}}, id="retry-1")
out["stored"] = Event.objects.filter(stream__name=stream, client_id__endswith="retry-1").count()

race = []
def racer():
    race.append(realtime.publish(stream + "r", "race.won", {{}}, id="race"))
    connections.close_all()
threads = [threading.Thread(target=racer) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
out["race"] = race
out["race_stored"] = Event.objects.filter(stream__name=stream + "r").count()

before = Event.objects.count()
refused = {{}}
bad = {{
    "stream": lambda: realtime.publish("lobby", "thing.noted", {{}}),
    "event": lambda: realtime.publish(stream, "Thing Noted", {{}}),
    "reserved": lambda: realtime.publish(stream, "stream.reset", {{}}),
    "data": lambda: realtime.publish(stream, "thing.noted", {{"a": {{"b": "\\x00"}}}}),
    "id": lambda: realtime.publish(stream, "thing.noted", {{}}, id=""),
    "resource": lambda: realtime.publish("resource:987654321", "thing.noted", {{}}),
    "position": lambda: realtime.position("resource:987654321"),
}}
for key, attempt in bad.items():
    try:
        attempt()
        refused[key] = None
    except (ValueError, NotFound) as exc:
        refused[key] = [type(exc).__name__, isinstance(exc, ValueError), str(exc)]
out["refused"] = refused
out["stored_after_refusals"] = Event.objects.count() - before
out["missing_stream_created"] = Stream.objects.filter(name="resource:987654321").exists()
out["position"] = list(realtime.position(stream))
print("RESULT=" + json.dumps(out))
"""


async def test_publish_is_atomic_idempotent_and_refuses_bad_input(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Issue 16 (c): a rolled-back publish publishes nothing; a committed one publishes with the
    caller's own write visible; a retry with the same id returns the original offset and is
    stored once (also when four threads race); bad input raises a clear error and stores nothing."""
    stream = f"room:tx{uuid.uuid4().hex[:10]}"
    ws = await _subscriber(server, e2e_db, stream)
    out = await asyncio.to_thread(_shell, e2e_db, ATOMIC.format(stream=stream))
    assert out["after_rollback"] == 0
    assert out["committed"] == 1
    assert (out["first"], out["second"], out["stored"]) == (2, 2, 1)
    assert out["race"] == [1, 1, 1, 1]
    assert out["race_stored"] == 1
    first = await recv_json(ws, timeout=scaled(3))
    assert first == {"event": "thing.created", "stream": stream, "offset": 1, "data": {"id": out["kept_id"]}}
    token = mint_token(e2e_db.user_ids["alice"], expires_in=600)
    status, _, body = http_json(
        "GET", f"{server.http_url}/api/resources/{out['kept_id']}/", None, {"Authorization": f"Bearer {token}"}
    )
    assert (status, body["data"]) == (200, {"kept": True})
    second = await recv_json(ws, timeout=scaled(3))
    assert (second["offset"], second["data"]) == (2, {"try": 1})
    refused = out["refused"]
    assert refused["stream"][:2] == ["PublishRefused", True]
    assert refused["stream"][2].startswith("stream:")
    assert refused["event"][:2] == ["PublishRefused", True]
    assert refused["event"][2].startswith("event:")
    assert refused["reserved"][2].startswith("event:")
    assert "reserved" in refused["reserved"][2]
    assert refused["data"][2] == "data.a.b: contains U+0000"
    assert refused["id"][2].startswith("id:")
    assert refused["resource"][0] == refused["position"][0] == "NotFound"
    assert out["stored_after_refusals"] == 0
    assert out["missing_stream_created"] is False
    assert out["position"][0] == 2


async def test_rest_position_then_subscribe_gets_exactly_the_later_updates(
    server: ServerProcess, e2e_db: E2EDatabase
) -> None:
    """Issue 16, snapshot with position: GET /api/resources/ID/?position=1 returns the state and
    the offset and epoch of resource:ID read before it; subscribing with them replays exactly
    the updates made after the GET, and a wrong epoch is answered recovered: false."""
    headers = {"Authorization": f"Bearer {mint_token(e2e_db.user_ids['bob'], expires_in=600)}"}
    base = f"{server.http_url}/api/resources/"
    status, _, created = http_json("POST", base, {"data": {"v": 1}}, headers)
    assert status == 201, created
    rid = created["id"]
    for version in (1, 2):
        assert http_json("PUT", f"{base}{rid}/", {"version": version, "data": {"v": version + 1}}, headers)[0] == 200
    status, _, snapshot = http_json("GET", f"{base}{rid}/?position=1", None, headers)
    assert status == 200, snapshot
    assert (snapshot["version"], snapshot["data"]) == (3, {"v": 3})
    position = snapshot["position"]
    assert position["offset"] == 2
    assert isinstance(position["epoch"], str)
    status, _, page = http_json("GET", f"{base}?position=1&limit=100&offset=0", None, headers)
    assert status == 200
    assert all("position" in item for item in page["results"])
    assert http_json("PUT", f"{base}{rid}/", {"version": 3, "data": {"v": 4}}, headers)[0] == 200
    since = {"since": position["offset"], "epoch": position["epoch"]}
    ws = await _subscriber(server, e2e_db, f"resource:{rid}", **since)
    update = await recv_json(ws)
    assert (update["offset"], update["data"]["version"]) == (3, 4)
    with pytest.raises(TimeoutError):
        await recv_json(ws, timeout=0.3)
    stale = await connect(server, mint_token(e2e_db.user_ids["alice"], expires_in=600))
    await recv_json(stale)
    wrong = {"stream": f"resource:{rid}", "since": position["offset"], "epoch": "0000"}
    reply = await call(stale, {"event": "stream.subscribe", "id": "w", "data": wrong})
    assert reply["data"]["recovered"] is False
