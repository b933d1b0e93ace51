"""JwtAuthMiddleware: resolves the handshake's access token to ``scope["user"]``.

The token comes from ``Authorization: Bearer <access>`` or ``?token=<access>``
(browsers cannot set headers on a WebSocket). The middleware never rejects: it
records ``scope["auth_failure"]`` (a :class:`CloseReason`) and the consumer accepts
and closes with the matching code, because a close reason can only be sent after
the upgrade. Tokens are never logged.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from channels.middleware import BaseMiddleware

from accounts.selectors import user_get_by_id
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


class JwtAuthMiddleware(BaseMiddleware):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope = dict(scope)
        scope["user"] = None
        scope["auth_failure"] = None
        raw = token_from_scope(scope)
        if raw is None:
            scope["auth_failure"] = CloseReason.MISSING_TOKEN
        else:
            try:
                claims = access_token_verify(raw)
            except TokenRejected as exc:
                scope["auth_failure"] = exc.reason
            else:
                user = await user_get_by_id(claims.user_id)
                if user is None:
                    scope["auth_failure"] = CloseReason.INVALID_TOKEN
                elif not user.is_active:
                    scope["auth_failure"] = CloseReason.ACCOUNT_DISABLED
                else:
                    scope["user"] = user
                    scope["token_expires_at"] = claims.expires_at
        return await super().__call__(scope, receive, send)
