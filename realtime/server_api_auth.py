"""Who may call the server HTTP API (``realtime/server_api.py``), and how often.

``Authorization: Bearer <key>`` with a key of ``REALTIME_API_KEYS`` (compared in constant
time) or a staff user's access token; a non-staff token is 403, no or bad credentials 401
with ``WWW-Authenticate``. Each key (or staff user) may make ``REALTIME_SERVER_API_RATE``
requests per period, counted in Django's cache. ``ServerAPIView`` is the base of every
endpoint: authentication, permission, throttle and the bounded JSON parser in one place.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from typing import Any

from django.core.cache import cache
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from redis.exceptions import RedisError
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from accounts.authentication import JWTAuthentication
from realtime.api import BoundedJSONParser
from realtime.conf import realtime_settings
from realtime.server_api_serializers import ServerErrorSerializer

logger = logging.getLogger("realtime.server_api")

# Authentication ------------------------------------------------------------------------------


class ServerKey:
    """``request.auth`` of a call made with an API key: a fingerprint, never the key itself."""

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint

    def __repr__(self) -> str:
        return f"ServerKey({self.fingerprint})"


def _fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def matching_key(credential: str) -> str | None:
    """The configured key equal to ``credential``: every key is compared, each in constant time."""
    offered = credential.encode("utf-8", "replace")
    found = None
    for key in realtime_settings().api_keys:
        if hmac.compare_digest(key.encode(), offered):
            found = key
    return found


class APIKeyAuthentication(BaseAuthentication):
    """``Bearer <key>`` of ``REALTIME_API_KEYS``; a bearer shaped like a JWT is left to simplejwt."""

    def authenticate(self, request: Request) -> tuple[None, ServerKey] | None:
        scheme, _, credential = str(request.META.get("HTTP_AUTHORIZATION", "")).partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return None
        key = matching_key(credential)
        if key is not None:
            return None, ServerKey(_fingerprint(key))
        if credential.startswith("eyJ") and credential.count(".") == 2:
            return None  # an access token: JWTAuthentication checks it next
        raise AuthenticationFailed("not a valid API key or staff access token", code="invalid_credentials")

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="server-api"'


class IsServerCaller(BasePermission):
    message = "the server API takes an API key (REALTIME_API_KEYS) or a staff user's access token"

    def has_permission(self, request: Request, view: Any) -> bool:
        if isinstance(request.auth, ServerKey):
            return True
        user = request.user
        return bool(user is not None and user.is_authenticated and user.is_staff)


class ServerAPIKeyScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "realtime.server_api_auth.APIKeyAuthentication"
    name = "serverApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "Authorization: Bearer <key>, a key of REALTIME_API_KEYS",
        }


# Rate limit ----------------------------------------------------------------------------------

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ServerAPIThrottle(BaseThrottle):
    """``REALTIME_SERVER_API_RATE`` per key or staff user: a counter per window in the cache.

    The window opens at the caller's first request and lasts the rate's period. One atomic
    ``incr`` per request (Redis ``INCR`` across servers); a cache that fails lets calls through,
    as the login throttle does: a broker outage must not stop every service publishing.
    """

    def __init__(self) -> None:
        count, _, period = realtime_settings().server_api_rate.partition("/")
        self.limit, self.period = int(count), _PERIODS[period[0]]
        self.retry_after: int | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        auth = request.auth
        ident = f"key:{auth.fingerprint}" if isinstance(auth, ServerKey) else f"user:{request.user.pk}"
        counter = f"server_api:{ident}"
        now = time.time()
        try:
            cache.add(counter, 0, self.period)  # first: it expires no later than the start below
            cache.add(f"{counter}:start", now, self.period)
            try:
                count = cache.incr(counter)
            except ValueError:  # expired between add and incr
                cache.set(counter, count := 1, self.period)
            if count <= self.limit:
                return True
            start = cache.get(f"{counter}:start", now)
        except (RedisError, OSError):
            logger.warning("server API throttle unavailable; allowing the call", exc_info=True)
            return True
        self.retry_after = max(1, math.ceil(start + self.period - now))
        return False

    def wait(self) -> float | None:
        return self.retry_after


# Views ---------------------------------------------------------------------------------------

DENIED = {401: ServerErrorSerializer, 403: ServerErrorSerializer, 429: ServerErrorSerializer}


class ServerAPIView(APIView):
    authentication_classes = (APIKeyAuthentication, JWTAuthentication)
    permission_classes = (IsServerCaller,)
    throttle_classes = (ServerAPIThrottle,)
    parser_classes = (BoundedJSONParser,)
