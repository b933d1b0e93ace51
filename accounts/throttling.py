"""Login throttling (PROTOCOL.md section 11): HTTP 429 after too many attempts for one
username (REALTIME_LOGIN_RATE) or from one client address (REALTIME_LOGIN_ADDRESS_RATE).

Counters live in Django's cache: Redis when REDIS_URL is set, so every server counts
against the same budget. Should the cache fail, login is not throttled rather than
refused: the broker being down must not lock every user out.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from redis.exceptions import RedisError
from rest_framework.exceptions import ParseError
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger("realtime.accounts")


class _LoginThrottle(SimpleRateThrottle):
    def allow_request(self, request: Request, view: Any) -> bool:
        try:
            return bool(super().allow_request(request, view))
        except (RedisError, OSError):
            logger.warning("login throttle unavailable; allowing the attempt", exc_info=True)
            return True


class LoginAddressThrottle(_LoginThrottle):
    scope = "login_address"

    def get_cache_key(self, request: Request, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LoginUsernameThrottle(_LoginThrottle):
    scope = "login_username"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        try:
            data = request.data
        except ParseError:
            return None  # the view answers 400; the address throttle still counted it
        username = data.get("username") if isinstance(data, dict) else None
        if not isinstance(username, str) or not username:
            return None  # the serializer refuses it; the address throttle still counts it
        # Hashed: a key of bounded length and alphabet whatever the client sent.
        ident = hashlib.sha256(username.strip().casefold().encode()).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": ident}
