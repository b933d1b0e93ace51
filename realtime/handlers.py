"""One ``async def`` per client event; each returns the ``ack`` data or raises a ProtocolError.

Handlers receive the connection (as the narrow :class:`Connection` protocol) and the
data already validated by the event's schema. The registry at the bottom is the
only way a client event name reaches code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from accounts.tokens import TokenRejected, access_token_verify
from realtime.protocol.close_codes import CloseReason
from realtime.protocol.errors import Forbidden, ValidationFailed
from realtime.protocol.schemas import AuthRefreshData, PingData


class Connection(Protocol):
    @property
    def user(self) -> Any: ...

    def extend_session(self, expires_at: datetime) -> None: ...

    async def close_with(self, reason: CloseReason) -> None: ...


Handler = Callable[[Connection, Any], Awaitable[Any]]


def iso_utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def ping(conn: Connection, data: PingData) -> dict[str, Any]:
    return {} if data.ts is None else {"ts": data.ts}


async def echo(conn: Connection, data: dict[str, Any]) -> dict[str, Any]:
    return data


async def auth_refresh(conn: Connection, data: AuthRefreshData) -> dict[str, Any]:
    from accounts.selectors import user_get_by_id

    try:
        claims = access_token_verify(data.token)
    except TokenRejected as exc:
        state = "expired" if exc.reason is CloseReason.TOKEN_EXPIRED else "invalid"
        raise ValidationFailed(f"data.token: {state}", fields={"token": state}) from None
    if claims.user_id != conn.user.pk:
        raise Forbidden("the token belongs to another user")
    user = await user_get_by_id(claims.user_id)
    if user is None or not user.is_active:
        await conn.close_with(CloseReason.ACCOUNT_DISABLED)
        raise Forbidden("account disabled")
    conn.extend_session(claims.expires_at)
    return {"token_expires_at": iso_utc(claims.expires_at)}


HANDLERS: dict[str, Handler] = {
    "ping": ping,
    "echo": echo,
    "auth.refresh": auth_refresh,
}
