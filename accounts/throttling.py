"""Login throttling (docs/protocol.md section 12): HTTP 429 after too many failed attempts for
one username (REALTIME_LOGIN_RATE) or from one client address (REALTIME_LOGIN_ADDRESS_RATE).

Only failures count (a wrong password, an unknown user): guessing is what the limit is
for, and an application or a test suite that signs in correctly and often, from one
address, must never be refused. A throttled address or username is refused even with the
right password until its window has room again.

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
    # Set by SimpleRateThrottle.__init__ from the rate (the type stubs do not declare them).
    num_requests: int
    duration: int

    def allow_request(self, request: Request, view: Any) -> bool:
        """Refuse while the window holds ``num_requests`` failures; record nothing here."""
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        try:
            self.history = self.cache.get(self.key, [])
        except (RedisError, OSError):
            logger.warning("login throttle unavailable; allowing the attempt", exc_info=True)
            return True
        self.now = self.timer()
        while self.history and self.history[-1] <= self.now - self.duration:
            self.history.pop()
        if len(self.history) >= self.num_requests:
            return bool(self.throttle_failure())
        return True

    def record_failure(self, request: Request, view: Any) -> None:
        """A failed login: one more entry in the window of this throttle's key."""
        if self.rate is None:
            return
        key = self.get_cache_key(request, view)
        if key is None:
            return
        now = self.timer()
        try:
            history = [moment for moment in self.cache.get(key, []) if moment > now - self.duration]
            self.cache.set(key, [now, *history], self.duration)
        except (RedisError, OSError):
            logger.warning("login throttle unavailable; a failed attempt was not counted", exc_info=True)


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
