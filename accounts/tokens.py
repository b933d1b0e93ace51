"""Access-token verification for the WebSocket handshake and ``auth.refresh``.

A thin wrapper over simplejwt so that the rest of the code sees one result type and
one exception whose ``reason`` is already the wire close reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from rest_framework_simplejwt.exceptions import ExpiredTokenError, TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken

from realtime.protocol.close_codes import CloseReason


class TokenRejected(Exception):
    def __init__(self, reason: CloseReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    expires_at: datetime


def access_token_verify(raw: str) -> TokenClaims:
    """Return the claims of a valid access token, or raise ``TokenRejected``."""
    try:
        token = AccessToken(raw)  # type: ignore[arg-type]  # simplejwt accepts the encoded str
    except ExpiredTokenError:
        raise TokenRejected(CloseReason.TOKEN_EXPIRED) from None
    except TokenError:
        raise TokenRejected(CloseReason.INVALID_TOKEN) from None
    try:
        user_id = int(token[api_settings.USER_ID_CLAIM])
        expires_at = datetime.fromtimestamp(int(token["exp"]), UTC)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise TokenRejected(CloseReason.INVALID_TOKEN) from None
    return TokenClaims(user_id=user_id, expires_at=expires_at)
