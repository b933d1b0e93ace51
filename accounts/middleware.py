"""JwtAuthMiddleware: verifies the handshake's access token and puts its claims in the scope.

The token comes from ``Authorization: Bearer <access>`` or ``?token=<access>``
(browsers cannot set headers on a WebSocket). The middleware never rejects: it
records ``scope["auth_failure"]`` (a :class:`CloseReason`) and the consumer accepts
and closes with the matching code, because a close reason can only be sent after
the upgrade. On success it records ``scope["auth_claims"]``; the consumer reads the
account in the same database round trip that opens the session
(``realtime/connection/session_records.py``), where a deleted or disabled account is refused, and
compares the token's version with it (a password change revokes older tokens,
``accounts/tokens.py``).
Tokens are never logged.

Verification is pure computation, so the middleware is synchronous and returns the
inner application's coroutine instead of awaiting it: no frame of it, and no copy of
the scope, stays alive for the connection's lifetime (at 10,000 connections each would
cost megabytes). It writes its keys into the scope it was given: the server builds one
scope per connection, and nothing upstream reads these keys.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any
from urllib.parse import parse_qsl

from accounts.tokens import TokenRejected, access_token_verify
from realtime.protocol.close_codes import CloseReason

_BEARER = "bearer "


def token_from_scope(scope: dict[str, Any]) -> str | None:
    """The raw token, ``""`` when a credential was sent but is not a bearer token, None when absent."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            header = str(value.decode("latin-1")).strip()
            if header.lower().startswith(_BEARER):
                return header[len(_BEARER) :].strip()
            return ""
    query = scope.get("query_string", b"").decode("latin-1")
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "token":
            return str(value) or None
    return None


class JwtAuthMiddleware:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        scope["auth_claims"] = None
        scope["auth_failure"] = None
        raw = token_from_scope(scope)
        if raw is None:
            scope["auth_failure"] = CloseReason.MISSING_TOKEN
        else:
            try:
                scope["auth_claims"] = access_token_verify(raw)
            except TokenRejected as exc:
                scope["auth_failure"] = exc.reason
        result: Awaitable[None] = self.inner(scope, receive, send)
        return result
