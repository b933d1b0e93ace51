"""Close codes and what the client does after each (PROTOCOL.md section 5). Pure.

The values mirror ``realtime.protocol.close_codes``; they are repeated here so the client
ships without the server package (a unit test checks they agree).
"""

from __future__ import annotations

from enum import Enum, IntEnum


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    ABNORMAL = 1006  # no close frame: the network dropped or the server died
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    SLOW_CONSUMER = 1013
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    IDLE_TIMEOUT = 4408
    RATE_LIMITED = 4429


class State(str, Enum):  # noqa: UP042 - str mixin keeps `state == "open"` true on Python 3.11
    CONNECTING = "connecting"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class CloseAction(Enum):
    RECONNECT = "reconnect"  # with backoff, then resume every subscription
    REFRESH_TOKEN = "refresh_token"  # noqa: S105 - an action name, not a secret; ask token_provider for a fresh token, then reconnect
    STOP = "stop"  # closed for good: pending calls fail


TOKEN_EXPIRED = "token_expired"  # noqa: S105 - a close reason, not a secret


def close_action(
    code: int | None, reason: str | None, *, has_token_provider: bool, reconnect_on_idle: bool
) -> CloseAction:
    """Decide what follows a close with ``code``/``reason`` (None: the connection just dropped)."""
    if code is None:
        return CloseAction.RECONNECT
    if code == CloseCode.NORMAL:
        return CloseAction.STOP
    if code == CloseCode.UNAUTHORIZED:
        if reason == TOKEN_EXPIRED and has_token_provider:
            return CloseAction.REFRESH_TOKEN
        return CloseAction.STOP
    if code == CloseCode.FORBIDDEN:
        return CloseAction.STOP
    if code == CloseCode.IDLE_TIMEOUT:
        return CloseAction.RECONNECT if reconnect_on_idle else CloseAction.STOP
    # 1001, 1006, 1009, 1011, 1012, 1013, 4429 and anything unknown: the session can resume.
    return CloseAction.RECONNECT


def stop_code(code: int | None, reason: str | None) -> str:
    """The RealtimeError code that pending calls fail with after a close that stops the client."""
    if reason:
        return reason
    if code == CloseCode.NORMAL:
        return "connection_closed"
    return f"closed_{code}"
