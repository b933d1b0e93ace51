"""Access-token verification for the WebSocket handshake and ``auth.refresh``, and how a
token is tied to the state of its account.

A thin wrapper over simplejwt so that the rest of the code sees one result type and
one exception whose ``reason`` is already the wire close reason.

Revocation: every token carries ``tv``, the account's ``token_version`` when it was issued
(``accounts/serializers.py`` adds it at login; refreshes copy it). A password change bumps
the version (``accounts/models.py``), so every token issued before it stops matching the
user row. The row is read anyway wherever a token is accepted (the WebSocket handshake's
batched session query, ``auth.refresh``, the REST authentication, the refresh endpoint),
so the check costs no extra query, and no list of revoked access tokens is needed. A
token without the claim counts as version 0: it stays valid until the first password
change, as tokens issued before versions existed should.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from rest_framework_simplejwt.exceptions import ExpiredTokenError, TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken

from realtime.protocol.close_codes import CloseReason

TOKEN_VERSION_CLAIM = "tv"  # noqa: S105 - a claim name, not a secret


class TokenRejected(Exception):
    def __init__(self, reason: CloseReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


class Versioned(Protocol):
    token_version: int


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    expires_at: datetime
    token_version: int = 0


def token_version_of(payload: Any) -> int:
    """The ``tv`` claim of a verified token's payload; ValueError when it is not a small integer."""
    value = payload.get(TOKEN_VERSION_CLAIM, 0)
    if type(value) is not int or not 0 <= value < 2**31:
        raise ValueError(f"{TOKEN_VERSION_CLAIM}: not a token version")
    return value


def token_is_current(token_version: int, user: Versioned) -> bool:
    """Whether a token issued at ``token_version`` still speaks for ``user`` (no password change since)."""
    return token_version == user.token_version


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
        version = token_version_of(token.payload)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise TokenRejected(CloseReason.INVALID_TOKEN) from None
    return TokenClaims(user_id=user_id, expires_at=expires_at, token_version=version)
