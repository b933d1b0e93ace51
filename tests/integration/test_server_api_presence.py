"""Operators see presence (issue 17) through the server HTTP API (issue 16) and the admin.

- ``GET /api/server/streams/STREAM/presence/``: the ``stream.presence`` answer; a stream
  whose namespace keeps no presence, or a bad name, is a 400 naming ``stream``.
- ``GET /api/server/users/ID/``: online status from the open sessions of live servers.
- Both take the server API's credentials and rate limit.
- The user admin's "online" column and filter, one query for the whole page.

Django's test client against the real URLconf, views and database; sessions come from real
WebSocket connections (the channels communicator) or rows written as servers write them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import orjson
import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import User
from realtime.models import ConnectionSession, ServerInstance

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "svc-presence-0123456789abcdefghijklmn"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(autouse=True)
def server_api(settings: Any) -> Iterator[None]:
    settings.REALTIME = dataclasses.replace(settings.REALTIME, api_keys=(KEY,))
    cache.clear()
    yield
    cache.clear()


def get(client: Client, path: str, headers: dict[str, str] | None = None) -> Any:
    return client.get(f"/api/server/{path}", headers=AUTH if headers is None else headers)


def user(username: str, **fields: Any) -> User:
    return User.objects.create_user(username=username, password="pw-123456789", **fields)


def server(server_id: str, *, silent_for: float = 0.0, stopped: bool = False) -> None:
    ServerInstance.objects.create(
        server_id=server_id,
        heartbeat_interval=10.0,
        last_heartbeat=timezone.now() - timedelta(seconds=silent_for),
        stopped_at=timezone.now() if stopped else None,
    )


def open_session(owner: User, server_id: str, *, closed: bool = False) -> None:
    ConnectionSession.objects.create(
        user=owner, server_id=server_id, disconnected_at=timezone.now() if closed else None
    )


# Credentials and rate limit ----------------------------------------------------------------------


def test_presence_endpoints_take_the_server_api_credentials(client: Client) -> None:
    """Issues 16/17, auth: both endpoints answer 401 without or with a wrong key (WWW-Authenticate),
    403 to a non-staff token, 200 to the key and to a staff token."""
    bob, admin = user("bob"), user("boss", is_staff=True)
    for path in ("streams/room:auth/presence/", f"users/{bob.pk}/"):
        missing = get(client, path, headers={})
        assert (missing.status_code, missing.headers["WWW-Authenticate"]) == (401, 'Bearer realm="server-api"')
        assert get(client, path, headers={"Authorization": f"Bearer {KEY}x"}).status_code == 401
        assert get(client, path, headers={"Authorization": f"Bearer {AccessToken.for_user(bob)}"}).status_code == 403
        assert get(client, path, headers={"Authorization": f"Bearer {AccessToken.for_user(admin)}"}).status_code == 200
        assert get(client, path).status_code == 200


def test_presence_endpoints_count_against_the_rate_limit(client: Client, settings: Any) -> None:
    """Issues 16/17, rate limit: the two endpoints share REALTIME_SERVER_API_RATE with the others:
    past it, 429 with Retry-After."""
    settings.REALTIME = dataclasses.replace(settings.REALTIME, server_api_rate="3/min")
    bob = user("bob")
    statuses = [get(client, path).status_code for path in ("streams/room:r/presence/", f"users/{bob.pk}/")]
    statuses.append(get(client, "streams/room:r/").status_code)
    limited = get(client, "streams/room:r/presence/")
    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1


# Stream presence ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "says"),
    [
        ("user:5", "user: streams do not track presence"),
        ("resource:1", "resource: streams do not track presence"),
        ("room:Bad", "expected room:NAME"),
        ("nope:x", "unknown stream namespace 'nope'"),
        ("room", "expected"),
    ],
)
def test_presence_of_a_stream_without_presence_is_400_naming_stream(client: Client, stream: str, says: str) -> None:
    """Issue 17, validation: a namespace that keeps no presence, or a bad name -> 400 {"stream": [...]}."""
    response = get(client, f"streams/{stream}/presence/")
    assert response.status_code == 400, response.content
    (message,) = response.json()["stream"]
    assert says in message
    assert list(response.json()) == ["stream"]


def test_presence_of_an_empty_stream_is_no_one(client: Client) -> None:
    """Issue 17, server API: a presence-enabled stream no one follows -> no users, not degraded."""
    response = get(client, "streams/room:empty/presence/")
    assert (response.status_code, response.json()) == (
        200,
        {"stream": "room:empty", "users": [], "degraded": False},
    )


async def _call(comm: Any, event: str, data: dict[str, Any]) -> dict[str, Any]:
    await comm.send_to(text_data=orjson.dumps({"event": event, "id": "r", "data": data}).decode())
    while True:
        frame: dict[str, Any] = orjson.loads(await comm.receive_from())
        if frame.get("ref") == "r":
            return frame


async def test_presence_answers_what_stream_presence_answers(communicator: Any) -> None:
    """Issue 17, server API: GET streams/STREAM/presence/ is the stream.presence answer: one member
    per user with their sessions added up and the meta they set, sorted by id."""
    dana = await sync_to_async(user)("dana")
    erin = await sync_to_async(user)("erin")
    comms = [communicator(dana), communicator(dana), communicator(erin)]
    for comm in comms:
        assert (await comm.connect())[0]
        assert orjson.loads(await comm.receive_from())["event"] == "session.welcome"
        assert (await _call(comm, "stream.subscribe", {"stream": "room:p"}))["event"] == "ack"
    answer = await _call(comms[2], "stream.presence", {"stream": "room:p", "meta": {"status": "away"}})
    response = await sync_to_async(get)(Client(), "streams/room:p/presence/")
    assert response.status_code == 200
    assert response.json() == answer["data"]
    assert response.json() == {
        "stream": "room:p",
        "users": [
            {"id": dana.pk, "username": "dana", "sessions": 2, "meta": None},
            {"id": erin.pk, "username": "erin", "sessions": 1, "meta": {"status": "away"}},
        ],
        "degraded": False,
    }
    for comm in comms:
        await comm.disconnect()


# User status -------------------------------------------------------------------------------------


def test_user_status_counts_open_sessions_on_live_servers_only(client: Client) -> None:
    """Issue 17, server API: GET users/ID/ -> online, sessions and servers from the open sessions
    of servers heartbeating on time; closed sessions, a silent server's and a stopped one's
    do not count; another user is offline."""
    server("live-b")
    server("live-a")
    server("silent", silent_for=60.0)
    server("stopped", stopped=True)
    dana, erin = user("dana"), user("erin")
    for where in ("live-b", "live-a", "live-a", "silent", "stopped", "gone"):
        open_session(dana, where)
    open_session(dana, "live-b", closed=True)
    open_session(erin, "silent")
    response = get(client, f"users/{dana.pk}/")
    assert (response.status_code, response.json()) == (
        200,
        {"id": dana.pk, "username": "dana", "online": True, "sessions": 3, "servers": ["live-a", "live-b"]},
    )
    assert get(client, f"users/{erin.pk}/").json() == {
        "id": erin.pk,
        "username": "erin",
        "online": False,
        "sessions": 0,
        "servers": [],
    }


@pytest.mark.parametrize("user_id", [987654, 2**63, 2**70])
def test_user_status_of_an_unknown_user_is_404(client: Client, user_id: int) -> None:
    """Issue 17, server API: an unknown user (ids past the database's range too) -> 404 not_found."""
    response = get(client, f"users/{user_id}/")
    assert (response.status_code, response.json()["code"]) == (404, "not_found")
    assert str(user_id) in response.json()["detail"]


# Admin -------------------------------------------------------------------------------------------


def test_admin_user_list_shows_online_and_filters_without_n_plus_1(client: Client) -> None:
    """Issue 17, admin: the user change list has an "online" column and filter (open sessions on
    live servers); its queries do not grow with the number of users listed."""
    server("live")
    server("silent", silent_for=60.0)
    admin = user("root", is_staff=True, is_superuser=True)
    dana, erin = user("dana"), user("erin")
    open_session(dana, "live")
    open_session(dana, "live")
    open_session(erin, "silent")
    client.force_login(admin)
    page = client.get("/admin/accounts/user/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "column-online" in html
    assert "column-open_sessions" in html
    assert "By online" in html  # the filter's heading
    assert "?online=yes" in html
    online = client.get("/admin/accounts/user/?online=yes")
    listed = {u.username for u in online.context["cl"].result_list}
    assert listed == {"dana"}
    assert [u.open_sessions for u in online.context["cl"].result_list] == [2]
    offline = client.get("/admin/accounts/user/?online=no")
    assert {u.username for u in offline.context["cl"].result_list} == {"root", "erin"}

    with CaptureQueriesContext(connection) as few:
        assert client.get("/admin/accounts/user/").status_code == 200
    for listed_user in User.objects.bulk_create([User(username=f"many{n}") for n in range(20)]):
        open_session(listed_user, "live")
    with CaptureQueriesContext(connection) as many:
        assert client.get("/admin/accounts/user/").status_code == 200
    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]
