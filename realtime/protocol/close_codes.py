"""Close codes and reasons (PROTOCOL.md section 5), after websockets' ``frames.CloseCode``."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    SLOW_CONSUMER = 1013
    TRY_AGAIN_LATER = 1013  # the same code: the client reconnects with backoff either way
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    IDLE_TIMEOUT = 4408
    RATE_LIMITED = 4429
    TOO_MANY_CONNECTIONS = 4429


class CloseReason(StrEnum):
    GOING_AWAY = "going_away"
    MESSAGE_TOO_LARGE = "message_too_large"
    INTERNAL_ERROR = "internal_error"
    SERVICE_RESTART = "service_restart"
    SLOW_CONSUMER = "slow_consumer"
    TRY_AGAIN_LATER = "try_again_later"
    TOKEN_EXPIRED = "token_expired"
    MISSING_TOKEN = "missing_token"
    INVALID_TOKEN = "invalid_token"
    ACCOUNT_DISABLED = "account_disabled"
    KICKED = "kicked"
    IDLE_TIMEOUT = "idle_timeout"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_CONNECTIONS = "too_many_connections"


CLOSE_CODE_FOR: dict[CloseReason, CloseCode] = {
    CloseReason.GOING_AWAY: CloseCode.GOING_AWAY,
    CloseReason.MESSAGE_TOO_LARGE: CloseCode.MESSAGE_TOO_BIG,
    CloseReason.INTERNAL_ERROR: CloseCode.INTERNAL_ERROR,
    CloseReason.SERVICE_RESTART: CloseCode.SERVICE_RESTART,
    CloseReason.SLOW_CONSUMER: CloseCode.SLOW_CONSUMER,
    CloseReason.TRY_AGAIN_LATER: CloseCode.TRY_AGAIN_LATER,
    CloseReason.TOKEN_EXPIRED: CloseCode.UNAUTHORIZED,
    CloseReason.MISSING_TOKEN: CloseCode.UNAUTHORIZED,
    CloseReason.INVALID_TOKEN: CloseCode.UNAUTHORIZED,
    CloseReason.ACCOUNT_DISABLED: CloseCode.FORBIDDEN,
    CloseReason.KICKED: CloseCode.FORBIDDEN,
    CloseReason.IDLE_TIMEOUT: CloseCode.IDLE_TIMEOUT,
    CloseReason.RATE_LIMITED: CloseCode.RATE_LIMITED,
    CloseReason.TOO_MANY_CONNECTIONS: CloseCode.TOO_MANY_CONNECTIONS,
}

# Closes after which a client should reconnect and resume from its offsets.
RESUMABLE = frozenset(
    {
        CloseCode.GOING_AWAY,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.INTERNAL_ERROR,
        CloseCode.SERVICE_RESTART,
        CloseCode.SLOW_CONSUMER,
        CloseCode.RATE_LIMITED,
    }
)
