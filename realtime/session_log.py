"""The ConnectionSession rows: opened before the welcome, closed on disconnect, written in batches.

Opening a session is also where the handshake's token becomes a user: the token was
verified by ``JwtAuthMiddleware`` (no I/O), and the account is read here, in the same
trip to the database thread as the session row. Both go through a :class:`DbBatcher`,
so a burst of connections costs one user query, one multi-row insert and one commit
per batch instead of three round trips and a commit per connection. A session row is
committed before its welcome is sent, as before.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
import weakref
from dataclasses import dataclass

from django.db import connection, models, transaction
from django.utils import timezone

from accounts.models import User
from realtime.db_batch import DbBatcher
from realtime.models import ConnectionSession
from realtime.protocol.close_codes import CloseReason


@dataclass(frozen=True, slots=True)
class SessionOpen:
    session_id: uuid.UUID
    user_id: int
    server_id: str
    remote_addr: str
    origin: str
    user_agent: str


@dataclass(frozen=True, slots=True)
class SessionClose:
    session_id: uuid.UUID
    close_code: int | None
    close_reason: str
    messages_in: int
    messages_out: int


Opened = User | CloseReason  # the user, or why the handshake's token does not open a session


def _open_sessions(requests: list[SessionOpen]) -> list[Opened]:
    users = {user.pk: user for user in User.objects.filter(pk__in={r.user_id for r in requests})}
    results: list[Opened] = []
    rows: list[tuple[int, ConnectionSession]] = []  # with the index of the request's result
    for request in requests:
        user = users.get(request.user_id)
        if user is None:
            results.append(CloseReason.INVALID_TOKEN)
        elif not user.is_active:
            results.append(CloseReason.ACCOUNT_DISABLED)
        else:
            rows.append(
                (
                    len(results),
                    ConnectionSession(
                        id=request.session_id,
                        user_id=user.pk,
                        server_id=request.server_id[:200],
                        remote_addr=request.remote_addr[:64],
                        origin=request.origin[:255],
                        user_agent=request.user_agent[:512],
                    ),
                )
            )
            results.append(user)
    try:
        with transaction.atomic():
            ConnectionSession.objects.bulk_create([row for _, row in rows])
    except Exception:
        # One bad row (say, a user deleted since the query) must not fail the others.
        for position, row in rows:
            try:
                with transaction.atomic():
                    row.save(force_insert=True)
            except Exception:
                results[position] = CloseReason.INVALID_TOKEN
    return results


@functools.cache
def _close_sql() -> str:
    meta, quote = ConnectionSession._meta, connection.ops.quote_name

    def column(name: str) -> str:
        field = meta.get_field(name)
        assert isinstance(field, models.Field)
        return quote(field.column or name)

    names = ("disconnected_at", "close_code", "close_reason", "messages_in", "messages_out")
    assignments = ", ".join(f"{column(name)} = %s" for name in names)
    table = quote(meta.db_table)
    # Identifiers come from the model's metadata; every value is a parameter.
    return f"UPDATE {table} SET {assignments} WHERE {column('id')} = %s AND {column('disconnected_at')} IS NULL"  # noqa: S608


def _close_sessions(requests: list[SessionClose]) -> list[None]:
    # One statement executed for every row, one commit: an ORM update per row would be
    # compiled again each time, and a disconnect storm is when that costs the most.
    meta = ConnectionSession._meta
    when = meta.get_field("disconnected_at").get_db_prep_value(timezone.now(), connection)
    pk = meta.pk
    assert pk is not None
    params = [
        (
            when,
            r.close_code,
            r.close_reason[:123],
            r.messages_in,
            r.messages_out,
            pk.get_db_prep_value(r.session_id, connection),
        )
        for r in requests
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(_close_sql(), params)
    return [None] * len(requests)


class SessionLog:
    def __init__(self) -> None:
        self._opens: DbBatcher[SessionOpen, Opened] = DbBatcher(_open_sessions)
        self._closes: DbBatcher[SessionClose, None] = DbBatcher(_close_sessions)

    async def open(self, request: SessionOpen) -> Opened:
        return await self._opens.submit(request)

    async def close(self, request: SessionClose) -> None:
        await self._closes.submit(request)


_logs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SessionLog] = weakref.WeakKeyDictionary()


def session_log() -> SessionLog:
    """The running loop's session log (futures belong to one loop; tests run several)."""
    loop = asyncio.get_running_loop()
    log = _logs.get(loop)
    if log is None:
        log = _logs[loop] = SessionLog()
    return log
