"""Server HTTP API (issue 16): who may call it, how often, and that keys never reach a log.

Django's test client against the real URLconf, views, authentication and cache; the settings
are the production ones with ``REALTIME_API_KEYS`` / ``REALTIME_SERVER_API_RATE`` replaced.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import User
from realtime.conf import RealtimeSettings, SettingsError
from realtime.ops.structured_logging import JsonFormatter, RedactTokensFilter

pytestmark = pytest.mark.django_db

KEY = "svc-A_0123456789abcdefghijklmnopqrstuv"
OTHER_KEY = "svc-B_0123456789abcdefghijklmnopqrstuv"
PUBLISH = "/api/server/publish/"
BODY = {"stream": "room:auth", "event": "score.changed", "data": {"home": 1}}


@pytest.fixture(autouse=True)
def server_api(settings: Any) -> Iterator[None]:
    settings.REALTIME = dataclasses.replace(settings.REALTIME, api_keys=(KEY, OTHER_KEY))
    cache.clear()
    yield
    cache.clear()


def post(client: Client, authorization: str | None, body: Any = BODY, path: str = PUBLISH) -> Any:
    headers = {} if authorization is None else {"Authorization": authorization}
    return client.post(path, data=json.dumps(body), content_type="application/json", headers=headers)


def token(username: str, *, staff: bool, active: bool = True) -> str:
    user = User.objects.create_user(username=username, password="pw-123456789", is_staff=staff, is_active=active)
    return str(AccessToken.for_user(user))


def test_api_key_may_publish(client: Client) -> None:
    """Issue 16, auth: a key of REALTIME_API_KEYS in Authorization: Bearer is accepted (either key)."""
    for key in (KEY, OTHER_KEY):
        response = post(client, f"Bearer {key}")
        assert response.status_code == 200, response.content
    assert response.json()["offset"] == 2


def test_no_credentials_is_401_with_www_authenticate(client: Client) -> None:
    """Issue 16, auth: no credentials -> 401 with WWW-Authenticate, nothing published."""
    response = post(client, None)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="server-api"'
    assert "credentials" in response.json()["detail"]


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {KEY}x",  # one character more
        f"Bearer {KEY[:-1]}",  # one character less
        "Bearer not-a-key",
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ.forged",  # JWT-shaped, bad signature
        "Bearer ключ-не-тот",  # not ASCII: compared as bytes, still refused
    ],
)
def test_wrong_key_or_bad_token_is_401(client: Client, authorization: str) -> None:
    """Issue 16, auth: an unknown key or an invalid token -> 401 with WWW-Authenticate and a clear detail."""
    response = post(client, authorization)
    assert response.status_code == 401, response.content
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["detail"]


def test_other_schemes_are_not_keys(client: Client) -> None:
    """Issue 16, auth: only the Bearer scheme carries a key (Basic/Token with a valid key -> 401)."""
    for scheme in ("Token", "Basic", "Api-Key"):
        assert post(client, f"{scheme} {KEY}").status_code == 401


def test_staff_token_may_publish_and_non_staff_is_403(client: Client) -> None:
    """Issue 16, auth: a staff user's access token is accepted; a non-staff token is 403; inactive staff 401."""
    assert post(client, f"Bearer {token('boss', staff=True)}").status_code == 200
    response = post(client, f"Bearer {token('pleb', staff=False)}")
    assert response.status_code == 403
    assert "REALTIME_API_KEYS" in response.json()["detail"]
    assert post(client, f"Bearer {token('gone', staff=True, active=False)}").status_code == 401


def test_no_keys_configured_means_staff_tokens_only(client: Client, settings: Any) -> None:
    """Issue 16, auth: empty REALTIME_API_KEYS (the default) -> every key is refused, staff tokens still work."""
    settings.REALTIME = dataclasses.replace(settings.REALTIME, api_keys=())
    assert post(client, f"Bearer {KEY}").status_code == 401
    assert post(client, f"Bearer {token('boss', staff=True)}").status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/server/publish-many/"),
        ("post", "/api/server/users/1/disconnect/"),
        ("get", "/api/server/streams/room:auth/"),
        ("get", "/api/server/streams/room:auth/history/"),
    ],
)
def test_every_endpoint_needs_credentials(client: Client, method: str, path: str) -> None:
    """Issue 16, auth: every endpoint of /api/server/ is 401 without credentials and 403 for non-staff."""
    assert getattr(client, method)(path).status_code == 401
    user_token = token("pleb", staff=False)
    assert getattr(client, method)(path, headers={"Authorization": f"Bearer {user_token}"}).status_code == 403


def test_rate_limit_at_limit_and_one_past(client: Client, settings: Any) -> None:
    """Issue 16, rate limit: REALTIME_SERVER_API_RATE=3/min -> calls 1..3 pass, the 4th is 429 with
    Retry-After; another key has its own budget."""
    settings.REALTIME = dataclasses.replace(settings.REALTIME, server_api_rate="3/min")
    statuses = [post(client, f"Bearer {KEY}").status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    refused = post(client, f"Bearer {KEY}")
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "throttled" in refused.json()["detail"]
    assert post(client, f"Bearer {OTHER_KEY}").status_code == 200
    # Refused calls still count (the window is not extended), and reads are calls too.
    assert client.get("/api/server/streams/room:auth/", headers={"Authorization": f"Bearer {KEY}"}).status_code == 429


def test_rate_limit_counts_staff_users_apart(client: Client, settings: Any) -> None:
    """Issue 16, rate limit: a staff user's token has a budget of its own (per user, not per token)."""
    settings.REALTIME = dataclasses.replace(settings.REALTIME, server_api_rate="1/hour")
    boss = token("boss", staff=True)
    assert post(client, f"Bearer {boss}").status_code == 200
    assert post(client, f"Bearer {boss}").status_code == 429
    assert post(client, f"Bearer {KEY}").status_code == 200


def test_settings_read_keys_and_rate() -> None:
    """Issue 16, settings: REALTIME_API_KEYS is comma-separated; REALTIME_SERVER_API_RATE is N/period."""
    settings = RealtimeSettings.from_env(
        {"REALTIME_API_KEYS": f" {KEY} ,,{OTHER_KEY}", "REALTIME_SERVER_API_RATE": "5/s"}
    )
    assert settings.api_keys == (KEY, OTHER_KEY)
    assert settings.server_api_rate == "5/s"
    defaults = RealtimeSettings.from_env({})
    assert (defaults.api_keys, defaults.server_api_rate) == ((), "6000/min")


@pytest.mark.parametrize("bad", ["short-key", "a" * 23, "has space inside the key!!", "ü" * 30, "k" * 257])
def test_settings_refuse_bad_keys_without_echoing_them(bad: str) -> None:
    """Issue 16, settings: a key that is too short or has characters outside A-Z a-z 0-9 . _ ~ + / = -
    stops the server at start; the error names the key's position, never the key."""
    with pytest.raises(SettingsError, match="REALTIME_API_KEYS: key 2") as raised:
        RealtimeSettings.from_env({"REALTIME_API_KEYS": f"{KEY},{bad}"})
    assert bad not in str(raised.value)
    with pytest.raises(SettingsError, match="REALTIME_SERVER_API_RATE"):
        RealtimeSettings.from_env({"REALTIME_SERVER_API_RATE": "lots"})


def test_settings_repr_hides_keys() -> None:
    """Issue 16, keys never logged: printing the settings object does not print the keys."""
    assert KEY not in repr(RealtimeSettings.from_env({"REALTIME_API_KEYS": KEY}))


def _formatted(record: logging.LogRecord) -> str:
    RedactTokensFilter().filter(record)
    return JsonFormatter().format(record)


@pytest.mark.parametrize("key", [KEY, "~.+/=-_" + "Zz9" * 10])
def test_log_filter_redacts_api_keys_in_authorization_headers(key: str) -> None:
    """Issue 16, keys never logged: the log filter redacts a key after Bearer in the message, in a
    headers extra and in Django's request META, for every character a key may contain."""
    record = logging.LogRecord(
        "django.request", logging.WARNING, __file__, 1, "Unauthorized: %s", ("Authorization: Bearer " + key,), None
    )
    record.headers = {"Authorization": f"Bearer {key}"}
    record.meta = {"HTTP_AUTHORIZATION": f"bearer {key}"}
    line = _formatted(record)
    assert key not in line
    assert line.count("[redacted]") == 3
