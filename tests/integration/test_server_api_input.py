"""Server HTTP API (issue 16): what each endpoint does, and a clear error for every bad input.

"Done means: every new path of bad input has a test and a clear error": each row of
``BAD_PUBLISH`` and the tests after it is one such path, with the status and the field the
error must name. Django's test client, the real views and database.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.test import Client

from accounts.models import User
from realtime.models import Event, Resource
from realtime.server_api_serializers import MAX_PUBLISH_STREAMS

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "svc-input-0123456789abcdefghijklmnop"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_MESSAGE_BYTES = 2048


@pytest.fixture(autouse=True)
def server_api(settings: Any) -> Iterator[None]:
    settings.REALTIME = dataclasses.replace(settings.REALTIME, api_keys=(KEY,), max_message_bytes=MAX_MESSAGE_BYTES)
    cache.clear()
    yield
    cache.clear()


def post(client: Client, path: str, body: Any, raw: str | None = None) -> Any:
    data = raw if raw is not None else json.dumps(body)
    return client.post(f"/api/server/{path}", data=data, content_type="application/json", headers=AUTH)


def get(client: Client, path: str) -> Any:
    return client.get(f"/api/server/{path}", headers=AUTH)


def publish_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"stream": "room:in", "event": "score.changed", "data": {"home": 1}}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


# Publish ---------------------------------------------------------------------------------------


def test_publish_returns_offset_and_epoch_and_is_idempotent_by_id(client: Client) -> None:
    """Issue 16, publish: {stream, event, data, id?} -> {stream, offset, epoch}; the same id again
    returns the first offset and stores nothing."""
    first = post(client, "publish/", publish_body(id="goal-1"))
    assert first.status_code == 200, first.content
    assert first.json()["offset"] == 1
    assert first.json()["stream"] == "room:in"
    again = post(client, "publish/", publish_body(id="goal-1", data={"ignored": True}))
    assert again.json() == first.json()
    second = post(client, "publish/", publish_body())
    assert (second.json()["offset"], second.json()["epoch"]) == (2, first.json()["epoch"])
    assert Event.objects.filter(stream__name="room:in").count() == 2


BAD_PUBLISH = [
    # (what, body, status, field the error names)
    ("unknown field", publish_body(payload={"a": 1}), 400, "payload"),
    ("missing event", publish_body(event=...), 400, "event"),
    ("missing data", publish_body(data=...), 400, "data"),
    ("stream not a string", publish_body(stream=5), 400, "stream"),
    ("stream without a kind", publish_body(stream="lobby"), 400, "stream"),
    ("unknown stream kind", publish_body(stream="team:x"), 400, "stream"),
    ("room name with capitals", publish_body(stream="room:Lobby"), 400, "stream"),
    ("user:0", publish_body(stream="user:0"), 400, "stream"),
    ("event with a space", publish_body(event="score changed"), 400, "event"),
    ("event in capitals", publish_body(event="Score.Changed"), 400, "event"),
    ("event too long", publish_body(event="e" * 65), 400, "event"),
    ("event reserved", publish_body(event="stream.reset"), 400, "event"),
    ("event ack", publish_body(event="ack"), 400, "event"),
    ("data a list", publish_body(data=[1, 2]), 400, "data"),
    ("data a string", publish_body(data="x"), 400, "data"),
    ("data with U+0000", publish_body(data={"text": "a\x00b"}), 400, "data.text"),
    ("id empty", publish_body(id=""), 400, "id"),
    ("id not a string", publish_body(id=7), 400, "id"),
    ("id too long", publish_body(id="i" * 61), 400, "id"),
]


@pytest.mark.parametrize(("what", "body", "status", "field"), BAD_PUBLISH, ids=[row[0] for row in BAD_PUBLISH])
def test_publish_refuses_bad_input_naming_the_field(
    client: Client, what: str, body: Any, status: int, field: str
) -> None:
    """Issue 16, bad input: each refused publish is a 400 naming the field, and nothing is stored."""
    response = post(client, "publish/", body)
    assert response.status_code == status, response.content
    errors = response.json()
    assert list(errors) == [field], errors
    assert all(isinstance(message, str) and message for message in errors[field])
    assert not Event.objects.exists()


def test_publish_refuses_malformed_json_and_non_objects(client: Client) -> None:
    """Issue 16, bad input: a body that is not JSON, or JSON that is not an object -> 400 with a detail."""
    response = post(client, "publish/", None, raw='{"stream": "room:in",')
    assert response.status_code == 400
    assert response.json()["detail"].startswith("JSON parse error")
    deep = post(client, "publish/", None, raw="[" * 100_000 + "]" * 100_000)
    assert deep.status_code == 400
    assert "too deep" in deep.json()["detail"]
    listed = post(client, "publish/", [publish_body()])
    assert listed.status_code == 400
    assert "non_field_errors" in listed.json()
    form = client.post("/api/server/publish/", data={"stream": "room:in"}, headers=AUTH)
    assert form.status_code == 415


def test_publish_refuses_data_over_max_message_bytes_with_413(client: Client) -> None:
    """Issue 16, bad input: data larger than REALTIME_MAX_MESSAGE_BYTES -> 413 naming the setting;
    data of exactly the limit is published."""
    fill = MAX_MESSAGE_BYTES - len(orjson.dumps({"t": ""}))
    assert post(client, "publish/", publish_body(data={"t": "x" * fill})).status_code == 200
    response = post(client, "publish/", publish_body(data={"t": "x" * (fill + 1)}))
    assert response.status_code == 413
    assert response.json()["limit"] == "REALTIME_MAX_MESSAGE_BYTES"
    assert f"{MAX_MESSAGE_BYTES + 1} bytes" in response.json()["detail"]


def test_publish_to_missing_resource_is_404_and_creates_nothing(client: Client) -> None:
    """Issue 16, bad input: resource:ID of a resource that does not exist -> 404, as realtime.publish does."""
    response = post(client, "publish/", publish_body(stream="resource:999999"))
    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "detail": "resource 999999 does not exist"}
    resource = Resource.objects.create(data={})
    assert post(client, "publish/", publish_body(stream=f"resource:{resource.pk}")).status_code == 200


# Publish to many streams -------------------------------------------------------------------------


def test_publish_many_gives_one_result_per_stream_in_request_order(client: Client) -> None:
    """Issue 16, publish-many: {streams, event, data, id?} -> a result per stream in the request's order;
    with an id a retry returns the same offsets."""
    post(client, "publish/", publish_body(stream="room:b"))
    body = {"streams": ["room:c", "room:b", "room:a"], "event": "note.added", "data": {"n": 1}, "id": "n-1"}
    response = post(client, "publish-many/", body)
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [(r["stream"], r["offset"]) for r in results] == [("room:c", 1), ("room:b", 2), ("room:a", 1)]
    assert all(r["epoch"] for r in results)
    assert post(client, "publish-many/", body).json()["results"] == results
    assert Event.objects.count() == 4


def test_publish_many_is_all_or_nothing(client: Client) -> None:
    """Issue 16, publish-many: one refused stream (bad name, missing resource) -> nothing is published,
    and the error names streams.N."""
    bad_name = post(client, "publish-many/", {"streams": ["room:a", "room:b", "nope"], "event": "x", "data": {}})
    assert bad_name.status_code == 400
    assert list(bad_name.json()) == ["streams.2"]
    missing = post(client, "publish-many/", {"streams": ["room:a", "resource:999999"], "event": "x", "data": {}})
    assert missing.status_code == 404
    assert missing.json()["detail"] == "streams.1: resource 999999 does not exist"
    bad_event = post(client, "publish-many/", {"streams": ["room:a"], "event": "system.x", "data": {}})
    assert list(bad_event.json()) == ["event"]
    assert not Event.objects.exists()


@pytest.mark.parametrize(
    ("what", "body", "field"),
    [
        ("too many streams", {"streams": [f"room:r{i}" for i in range(MAX_PUBLISH_STREAMS + 1)]}, "streams"),
        ("no streams", {"streams": []}, "streams"),
        ("streams not a list", {"streams": "room:a"}, "streams"),
        ("a stream twice", {"streams": ["room:a", "room:a"]}, "streams"),
        ("a stream not a string", {"streams": ["room:a", 3]}, "streams"),
        ("unknown field", {"streams": ["room:a"], "stream": "room:b"}, "stream"),
    ],
)
def test_publish_many_refuses_bad_stream_lists(client: Client, what: str, body: dict[str, Any], field: str) -> None:
    """Issue 16, bad input: publish-many with more than MAX_PUBLISH_STREAMS (100), none, duplicates or
    non-strings -> 400 naming the field."""
    response = post(client, "publish-many/", {"event": "x", "data": {}, **body})
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert not Event.objects.exists()


def test_publish_many_refuses_large_data_with_413(client: Client) -> None:
    """Issue 16, bad input: publish-many data over REALTIME_MAX_MESSAGE_BYTES -> 413."""
    body = {"streams": ["room:a"], "event": "x", "data": {"t": "x" * MAX_MESSAGE_BYTES}}
    assert post(client, "publish-many/", body).status_code == 413


# Streams: info and history -----------------------------------------------------------------------


def test_stream_info_and_history_pages(client: Client) -> None:
    """Issue 16, channel info and history: head offset and epoch; pages in stream.history's shape
    with since, limit and more."""
    for n in range(5):
        post(client, "publish/", publish_body(stream="room:h", data={"n": n}))
    info = get(client, "streams/room:h/").json()
    assert (info["stream"], info["offset"], info["subscribers_here"]) == ("room:h", 5, 0)
    page = get(client, "streams/room:h/history/?since=1&limit=2").json()
    assert page["stream"] == "room:h"
    assert page["more"] is True
    assert [(e["event"], e["stream"], e["offset"], e["data"]) for e in page["events"]] == [
        ("score.changed", "room:h", 2, {"n": 1}),
        ("score.changed", "room:h", 3, {"n": 2}),
    ]
    rest = get(client, "streams/room:h/history/?since=3").json()
    assert ([e["offset"] for e in rest["events"]], rest["more"]) == ([4, 5], False)
    assert get(client, "streams/room:new/").json()["offset"] == 0


@pytest.mark.parametrize(
    ("query", "field"),
    [("since=-1", "since"), ("since=abc", "since"), ("limit=0", "limit"), ("limit=1001", "limit")],
)
def test_history_refuses_bad_since_and_limit(client: Client, query: str, field: str) -> None:
    """Issue 16, bad input: history since < 0 or not a number, limit outside 1..1000 -> 400 naming it."""
    response = get(client, f"streams/room:h/history/?{query}")
    assert response.status_code == 400
    assert list(response.json()) == [field]


@pytest.mark.parametrize("suffix", ["", "history/"])
def test_stream_endpoints_refuse_bad_names_and_missing_resources(client: Client, suffix: str) -> None:
    """Issue 16, bad input: a bad stream name in the path -> 400 naming stream; resource:ID of a missing
    resource -> 404."""
    bad = get(client, f"streams/room:Not%20Valid/{suffix}")
    assert bad.status_code == 400
    assert list(bad.json()) == ["stream"]
    missing = get(client, f"streams/resource:424242/{suffix}")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "resource 424242 does not exist"


# Disconnect --------------------------------------------------------------------------------------


def test_disconnect_unknown_user_is_404_and_bad_reason_400(client: Client) -> None:
    """Issue 16, bad input: disconnect of a user that does not exist -> 404; an unknown reason or
    field -> 400 naming it."""
    assert post(client, "users/999999/disconnect/", {}).status_code == 404
    assert post(client, f"users/{2**70}/disconnect/", {}).json()["code"] == "not_found"
    user = User.objects.create_user(username="dana", password="pw-123456789")
    bad = post(client, f"users/{user.pk}/disconnect/", {"reason": "because"})
    assert bad.status_code == 400
    assert list(bad.json()) == ["reason"]
    unknown = post(client, f"users/{user.pk}/disconnect/", {"code": 4000})
    assert unknown.status_code == 400
    assert list(unknown.json()) == ["code"]
    empty = client.generic("POST", f"/api/server/users/{user.pk}/disconnect/", headers=AUTH)  # no body, as curl -X POST
    assert (empty.status_code, empty.json()) == (202, {"user_id": user.pk, "sessions": 0})


async def test_disconnect_closes_the_users_sessions_4403(communicator: Any) -> None:
    """Issue 16, disconnect: every open session of the user closes with 4403 and the reason given
    (kicked, or account_disabled); another user's session stays open."""
    dana = await sync_to_async(User.objects.create_user)(username="dana", password="pw-123456789")
    erin = await sync_to_async(User.objects.create_user)(username="erin", password="pw-123456789")
    sessions = [communicator(dana), communicator(dana), communicator(erin)]
    for comm in sessions:
        assert (await comm.connect())[0]
        assert orjson.loads(await comm.receive_from())["event"] == "session.welcome"
    client = Client()
    response = await sync_to_async(post)(client, f"users/{dana.pk}/disconnect/", {"reason": "account_disabled"})
    assert (response.status_code, response.json()) == (202, {"user_id": dana.pk, "sessions": 2})
    for comm in sessions[:2]:
        assert await comm.receive_output() == {"type": "websocket.close", "code": 4403, "reason": "account_disabled"}
    await sessions[2].send_to(text_data='{"event":"ping","id":"p"}')
    assert orjson.loads(await sessions[2].receive_from())["event"] == "ack"
    await sessions[2].disconnect()
