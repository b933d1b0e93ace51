"""What a connection does once, at connect: open its session row (with the account checks
of ``session_records.py``) and render its ``session.welcome``."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from django.db import InterfaceError, OperationalError

from realtime.conf import RealtimeSettings, server_id
from realtime.connection.handlers import iso_utc
from realtime.connection.origin import scope_origin
from realtime.connection.session_records import SessionOpen, session_log
from realtime.protocol import PROTOCOL_VERSION, CloseReason, render_push

# The database is failing (restarting, unreachable, locked past the timeout), not the request.
DATABASE_FAULTS = (OperationalError, InterfaceError)


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return ""


async def open_session(scope: dict[str, Any], session_id: uuid.UUID, log: logging.LoggerAdapter[logging.Logger]) -> Any:
    """The account of an authenticated handshake, its session row written; or the
    :class:`CloseReason` to refuse it with (account disabled, token revoked, too many
    connections, the database unavailable)."""
    client = scope.get("client") or ("", 0)
    try:
        return await session_log().open(
            SessionOpen(
                session_id=session_id,
                user_id=scope["auth_claims"].user_id,
                server_id=server_id(),
                remote_addr=str(client[0]),
                origin=scope_origin(scope) or "",
                user_agent=_header(scope, b"user-agent"),
                token_version=scope["auth_claims"].token_version,
            )
        )
    except DATABASE_FAULTS as exc:
        # A database fault is not an authentication answer: the client retries later.
        log.error(
            "session could not be opened: database unavailable",
            extra={"event": "connect", "error": f"{type(exc).__name__}: {exc}"[:300]},
        )
        return CloseReason.TRY_AGAIN_LATER
    except Exception:
        log.exception("session could not be opened", extra={"event": "connect"})
        return CloseReason.INTERNAL_ERROR


def welcome_frame(session_id: str, user: Any, settings: RealtimeSettings, token_expires_at: datetime) -> str:
    return render_push(
        "session.welcome",
        {
            "session_id": session_id,
            "user": {"id": user.pk, "username": user.username, "is_staff": user.is_staff},
            "server": server_id(),
            "protocol": PROTOCOL_VERSION,
            "heartbeat_interval": _number(settings.heartbeat_interval),
            "idle_timeout": _number(settings.idle_timeout),
            "max_message_bytes": settings.max_message_bytes,
            "token_expires_at": iso_utc(token_expires_at),
        },
    )
