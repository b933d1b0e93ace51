"""The generated specs, served by a real ``manage.py serve`` and checked against real traffic (issue 18).

- ``/api/schema/`` and ``/api/docs/`` (Swagger UI) are served with no external asset: the
  sidecar's files come from the server itself.
- ``/docs/asyncapi.json`` is the document ``manage.py realtime_asyncapi`` writes, and
  ``/docs/protocol/`` lists every event with no script and no external asset.
- Every frame a real server sends in a session that uses every client event (and triggers
  most pushes) validates against the AsyncAPI document's payload schemas, with undeclared
  keys refused: the declared schemas of ``realtime/protocol/pushes.py`` are what the
  server really sends, not a guess.
"""

from __future__ import annotations

import copy
import json
import re
import urllib.request
import uuid
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import orjson
import pytest
import yaml
from websockets.asyncio.client import ClientConnection

from realtime.client_events import registry
from tests.conftest import scaled
from tests.e2e.conftest import E2EDatabase, ServerFactory
from tests.e2e.helpers import ServerProcess, connect, expect_close, http_json, mint_token, recv_json

CHANNEL = "realtime"

# The servers run project.settings: the realtime package's own events only.
EVENTS = registry.builtin()


def _get(server: ServerProcess, path: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(f"{server.http_url}{path}", timeout=scaled(10)) as response:  # noqa: S310
        return response.status, response.headers.get("Content-Type", ""), response.read().decode()


def _document(server: ServerProcess) -> dict[str, Any]:
    status, content_type, body = _get(server, "/docs/asyncapi.json")
    assert status == 200
    assert content_type.startswith("application/json")
    document: dict[str, Any] = json.loads(body)
    return document


def _strict(document: dict[str, Any]) -> dict[str, Any]:
    """The document with ``additionalProperties: false`` on every declared object, so a key the
    server sends but the document does not declare fails validation."""
    strict = copy.deepcopy(document)

    def close(schema: Any) -> None:
        if isinstance(schema, dict):
            if "properties" in schema and "additionalProperties" not in schema:
                schema["additionalProperties"] = False
            for value in schema.values():
                close(value)
        elif isinstance(schema, list):
            for value in schema:
                close(value)

    close(strict["components"]["schemas"])
    close(strict["channels"][CHANNEL]["messages"])
    return strict


class Checker:
    """Validates frames against the message payloads of the document, by the message key."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.root = _strict(document)
        self.checked: dict[str, int] = {}

    def check(self, key: str, frame: dict[str, Any]) -> None:
        schema = {**self.root, "$ref": f"#/channels/{CHANNEL}/messages/{key}/payload"}
        errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(frame)]
        assert errors == [], f"{key}: {frame} does not match the document: {errors}"
        self.checked[key] = self.checked.get(key, 0) + 1

    def push(self, frame: dict[str, Any]) -> None:
        self.check(f"push_{frame['event'].replace('.', '_')}", frame)


class Session:
    """One client: every frame received is checked; replies are checked against the ack of
    the event they answer."""

    def __init__(self, ws: ClientConnection, checker: Checker) -> None:
        self.ws = ws
        self.checker = checker
        self.pushes: list[dict[str, Any]] = []

    async def send(self, event: str, data: Any = None, **envelope: Any) -> dict[str, Any]:
        ref = uuid.uuid4().hex[:12]
        await self.ws.send(orjson.dumps({"event": event, "id": ref, "data": data, **envelope}).decode())
        while True:
            frame = await recv_json(self.ws)
            if frame.get("ref") != ref:
                self.checker.push(frame)
                self.pushes.append(frame)
                continue
            key = "error" if frame["event"] == "error" else f"ack_{event.replace('.', '_')}"
            self.checker.check(key, frame)
            return frame

    async def next_push(self, event: str) -> dict[str, Any]:
        for index, frame in enumerate(self.pushes):
            if frame["event"] == event:
                return self.pushes.pop(index)
        while True:
            frame = await recv_json(self.ws)
            self.checker.push(frame)
            if frame["event"] == event:
                return frame
            self.pushes.append(frame)


async def _open(server: ServerProcess, token: str, checker: Checker) -> Session:
    ws = await connect(server, token)
    welcome = await recv_json(ws)
    assert welcome["event"] == "session.welcome"
    checker.push(welcome)
    return Session(ws, checker)


def test_openapi_schema_and_swagger_ui_are_served_without_external_assets(server: ServerProcess) -> None:
    status, content_type, body = _get(server, "/api/schema/")
    assert status == 200
    assert "openapi" in content_type
    schema = yaml.safe_load(body)
    assert {"/api/auth/token/", "/api/resources/", "/api/resources/{id}/"} <= set(schema["paths"])
    status, _, as_json = _get(server, "/api/schema/?format=json")
    assert status == 200
    assert json.loads(as_json) == schema

    status, content_type, page = _get(server, "/api/docs/")
    assert status == 200
    assert content_type.startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets
    assert [a for a in assets if "//" in a] == [], f"external assets: {assets}"
    bundle = next(a for a in assets if a.endswith("swagger-ui-bundle.js"))
    assert _get(server, bundle)[0] == 200
    assert "/api/schema/" in page


def test_asyncapi_json_and_protocol_page_are_served(server: ServerProcess) -> None:
    document = _document(server)
    assert document["asyncapi"] == "3.0.0"
    assert {op["title"] for op in document["operations"].values() if op["action"] == "send"} == set(EVENTS)
    status, content_type, page = _get(server, "/docs/protocol/")
    assert status == 200
    assert content_type.startswith("text/html")
    for name in EVENTS:
        assert f"<code>{name}</code>" in page
    assert "<code>session.welcome</code>" in page
    assert "4429" in page
    assert "limit_exceeded" in page
    assert "<script" not in page
    assert not re.findall(r'(?:src|href)="[^"#]*//', page)
    # The schemas are escaped into the page, never interpreted as markup.
    assert "&quot;$ref&quot;" in page


def test_the_frame_checker_refuses_undeclared_and_missing_keys(server: ServerProcess) -> None:
    """The conformance test below is not vacuous: an extra key, a missing stream offset or a
    wrong type fails it."""
    checker = Checker(_document(server))
    checker.check("push_flow_pause", {"event": "flow.pause", "data": {"retry_after_ms": 10}})
    bad = [
        ("push_flow_pause", {"event": "flow.pause", "data": {"retry_after_ms": 10, "extra": 1}}),
        ("push_flow_pause", {"event": "flow.pause", "data": {"retry_after_ms": "10"}}),
        (
            "push_message_new",
            {
                "event": "message.new",
                "data": {"id": None, "sender": {"id": 1, "username": "a"}, "text": "t", "ts": "x"},
            },
        ),
        ("ack_stream_subscribe", {"event": "ack", "ref": "1", "data": {"stream": "room:a", "offset": 0}}),
    ]
    for key, frame in bad:
        with pytest.raises(AssertionError, match="does not match the document"):
            checker.check(key, frame)


async def test_every_frame_of_a_full_session_matches_the_asyncapi_document(
    server: ServerProcess, e2e_db: E2EDatabase
) -> None:
    checker = Checker(_document(server))
    ids = e2e_db.user_ids
    alice = await _open(server, mint_token(ids["alice"], expires_in=600), checker)
    admin = await _open(server, mint_token(ids["admin"], expires_in=600), checker)
    room = f"room:specs-{uuid.uuid4().hex[:8]}"

    assert (await alice.send("ping"))["data"] == {}
    assert (await alice.send("ping", {"ts": 5}))["data"] == {"ts": 5}
    assert (await alice.send("echo", {"x": [1]}))["data"] == {"x": [1]}
    await alice.send("auth.refresh", {"token": mint_token(ids["alice"], expires_in=900)})
    await alice.send("stream.subscribe", {"stream": room, "presence": True})
    # Live only: other tests' direct messages to alice stay out of this one.
    await alice.send("stream.subscribe", {"stream": f"user:{ids['alice']}"})
    await alice.send("message.send", {"stream": room, "text": "hi <b>there</b>"})
    await alice.next_push("message.new")
    await alice.send("message.direct", {"to": "alice", "text": "to myself"})
    await alice.next_push("message.direct")
    await admin.send("stream.subscribe", {"stream": room, "presence": True})  # presence.state, then joins (issue 17)
    presence = await alice.send("stream.presence", {"stream": room, "meta": {"status": "here"}})
    assert {u["username"] for u in presence["data"]["users"]} == {"alice", "admin"}
    await alice.send("stream.signal", {"stream": room, "data": {"typing": True}})
    await admin.next_push("stream.signal")
    await alice.next_push("presence.join")
    history = await alice.send("stream.history", {"stream": room, "since": 0})
    for event in history["data"]["events"]:
        checker.push(event)

    status, _, created = http_json(
        "POST",
        f"{server.http_url}/api/resources/",
        {"data": {"a": 1}},
        {"Authorization": f"Bearer {mint_token(ids['alice'], expires_in=600)}"},
    )
    assert status == 201, created
    await alice.send("stream.subscribe", {"stream": f"resource:{created['id']}"})
    await alice.send("resource.get", {"id": created["id"]})
    await alice.send("resource.update", {"id": created["id"], "version": 1, "data": {"a": 2}})
    await alice.next_push("resource.updated")
    conflict = await alice.send("resource.update", {"id": created["id"], "version": 1, "data": {"a": 3}})
    assert conflict["data"]["code"] == "conflict"
    await alice.send("stream.unsubscribe", {"stream": room})

    # Errors carry their details (fields; expected below).
    assert (await alice.send("no.such"))["data"]["code"] == "unknown_event"
    assert (await alice.send("message.send", {"stream": room}))["data"]["fields"] == {"text": "required"}
    assert (await alice.send("admin.kick", {"username": "bob"}))["data"]["code"] == "forbidden"

    assert (await admin.send("admin.announce", {"text": "maintenance"}))["data"]["delivered_to"] >= 2
    await admin.next_push("system.announcement")
    await alice.next_push("system.announcement")
    assert (await admin.send("admin.kick", {"username": "bob"}))["data"] == {"closed": 0}
    # Last: once a connection uses seq, every later message must carry one.
    assert (await alice.send("echo", {}, seq=5))["event"] == "ack"
    assert (await alice.send("echo", {}, seq=9))["data"]["expected"] == 6

    acked = {key[4:].replace("_", ".") for key in checker.checked if key.startswith("ack_")}
    assert acked == set(EVENTS), f"events never acked in this test: {set(EVENTS) - acked}"
    assert {"push_session_welcome", "push_message_new", "push_message_direct", "push_resource_updated"} <= set(
        checker.checked
    )
    assert "push_system_announcement" in checker.checked
    assert "error" in checker.checked

    # auth.expiring, then the 4401 close, for a token that runs out mid-session.
    lifetime = scaled(5)  # long enough to be accepted on a busy machine
    short = await _open(server, mint_token(ids["bob"], expires_in=lifetime), checker)
    expiring = await short.next_push("auth.expiring")
    assert 0 < expiring["data"]["expires_in"] <= lifetime + 1
    code, reason, _ = await expect_close(short.ws)
    assert (code, reason) == (4401, "token_expired")


async def test_flow_control_pushes_match_the_asyncapi_document(
    server_factory: ServerFactory, e2e_db: E2EDatabase
) -> None:
    srv = server_factory(REALTIME_RATE_LIMIT="20")
    checker = Checker(_document(srv))
    alice = await _open(srv, mint_token(e2e_db.user_ids["alice"], expires_in=600), checker)
    for i in range(45):
        await alice.ws.send(orjson.dumps({"event": "echo", "id": f"m{i}", "data": {"i": i}}).decode())
    frames = [await recv_json(alice.ws) for _ in range(46)]
    pause = next(f for f in frames if f["event"] == "flow.pause")
    checker.push(pause)
    checker.check("error", next(f for f in frames if f["event"] == "error"))
    resume = await recv_json(alice.ws, timeout=pause["data"]["retry_after_ms"] / 1000 + 5)
    checker.push(resume)
    assert {"push_flow_pause", "push_flow_resume"} <= set(checker.checked)
