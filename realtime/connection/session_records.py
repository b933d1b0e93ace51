"""The ConnectionSession rows: opened before the welcome, closed on disconnect, written in batches.

Opening a session is also where the handshake's token becomes a user: the token was
verified by ``JwtAuthMiddleware`` (no I/O), and the account is read here, in the same
trip to the database thread as the session row. Both go through a :class:`DbBatcher`,
so a burst of connections costs one user query, one multi-row insert and one commit
per batch instead of three round trips and a commit per connection. A session row is
committed before its welcome is sent, as before.

The same trip counts each connecting user's open sessions on live servers (section 11,
``REALTIME_MAX_CONNECTIONS_PER_USER``): one indexed COUNT per batch. A database error is
raised to the caller (the consumer closes 1013 ``try_again_later``); only a row that
cannot be inserted for an integrity reason (its user was deleted) is ``invalid_token``.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from accounts.models import User
from accounts.tokens import token_is_current
from realtime.conf import realtime_settings
from realtime.loop.local import LoopLocal
from realtime.models import ConnectionSession
from realtime.ops.server_registry import servers_by_liveness
from realtime.protocol.close_codes import CloseReason
from realtime.streams.db_batch import DbBatcher


@dataclass(frozen=True, slots=True)
class SessionOpen:
    session_id: uuid.UUID
    user_id: int
    server_id: str
    remote_addr: str
    origin: str
    user_agent: str
    token_version: int = 0  # the handshake token's ``tv`` claim (accounts/tokens.py)


@dataclass(frozen=True, slots=True)
class SessionClose:
    session_id: uuid.UUID
    close_code: int | None
    close_reason: str
    messages_in: int
    messages_out: int


Opened = User | CloseReason  # the user, or why the handshake's token does not open a session


def _open_counts(user_ids: set[int], opening_on: set[str]) -> dict[int, int]:
    """Open sessions per user on the servers alive now (and those opening these), one indexed COUNT.

    Sessions left open by a server that died are not counted: a crash must not lock its
    users out until an audit closes them (``manage.py audit_connections``).
    """
    alive, _ = servers_by_liveness()
    alive |= opening_on
    rows = (
        ConnectionSession.objects.filter(user_id__in=user_ids, disconnected_at__isnull=True, server_id__in=alive)
        .order_by()
        .values_list("user_id")
        .annotate(open=models.Count("id"))
    )
    return dict(rows.values_list("user_id", "open"))


def _open_sessions(requests: list[SessionOpen]) -> list[Opened]:
    user_ids = {r.user_id for r in requests}
    users = {user.pk: user for user in User.objects.filter(pk__in=user_ids)}
    limit = realtime_settings().max_connections_per_user
    counts = _open_counts(set(users), {r.server_id for r in requests})
    results: list[Opened] = []
    rows: list[tuple[int, SessionOpen]] = []  # with the index of the request's result
    for request in requests:
        user = users.get(request.user_id)
        if user is None:
            results.append(CloseReason.INVALID_TOKEN)
        elif not user.is_active:
            results.append(CloseReason.ACCOUNT_DISABLED)
        elif not token_is_current(request.token_version, user):
            results.append(CloseReason.INVALID_TOKEN)  # issued before a password change
        elif counts.get(user.pk, 0) >= limit:
            results.append(CloseReason.TOO_MANY_CONNECTIONS)
        else:
            counts[user.pk] = counts.get(user.pk, 0) + 1  # the batch's earlier admissions count too
            rows.append((len(results), request))
            results.append(user)
    if not rows:
        return results
    now = timezone.now()
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(_insert_sql(), [_insert_params(request, now) for _, request in rows])
    except IntegrityError:
        # One bad row (say, a user deleted since the query) must not fail the others.
        for position, request in rows:
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute(_insert_sql(), _insert_params(request, now))
            except IntegrityError:
                results[position] = CloseReason.INVALID_TOKEN
    return results


_INSERTED = ("id", "user", "server_id", "remote_addr", "origin", "user_agent", "connected_at")
_CLOSED = ("disconnected_at", "close_code", "close_reason", "messages_in", "messages_out")


def _field(name: str) -> models.Field[Any, Any]:
    field = ConnectionSession._meta.get_field(name)
    assert isinstance(field, models.Field)
    return field


def _column(name: str) -> str:
    return connection.ops.quote_name(_field(name).column or name)


# Plain SQL for the two statements a connection costs: the ORM would compile them again
# for every row on the one database thread, and these run once per connection and
# disconnection. Identifiers come from the model's metadata; every value is a parameter.
@functools.cache
def _insert_sql() -> str:
    columns = [*_INSERTED, "close_reason", "messages_in", "messages_out"]
    table = connection.ops.quote_name(ConnectionSession._meta.db_table)
    placeholders = ", ".join(["%s"] * len(columns))
    return f"INSERT INTO {table} ({', '.join(map(_column, columns))}) VALUES ({placeholders})"  # noqa: S608


def _insert_params(request: SessionOpen, now: datetime) -> tuple[Any, ...]:
    values = (
        request.session_id,
        request.user_id,
        request.server_id[:200],
        request.remote_addr[:64],
        request.origin[:255],
        request.user_agent[:512],
        now,
    )
    prepared = [
        _field(name).get_db_prep_value(value, connection) for name, value in zip(_INSERTED, values, strict=True)
    ]
    return (*prepared, "", 0, 0)


@functools.cache
def _close_sql() -> str:
    table = connection.ops.quote_name(ConnectionSession._meta.db_table)
    assignments = ", ".join(f"{_column(name)} = %s" for name in _CLOSED)
    where = f"{_column('id')} = %s AND {_column('disconnected_at')} IS NULL"
    return f"UPDATE {table} SET {assignments} WHERE {where}"  # noqa: S608


def _close_sessions(requests: list[SessionClose]) -> list[None]:
    when = _field("disconnected_at").get_db_prep_value(timezone.now(), connection)
    session_id = _field("id")
    params = [
        (
            when,
            r.close_code,
            r.close_reason[:123],
            r.messages_in,
            r.messages_out,
            session_id.get_db_prep_value(r.session_id, connection),
        )
        for r in requests
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(_close_sql(), params)
    return [None] * len(requests)


class SessionLog:
    def __init__(self) -> None:
        self._opens: DbBatcher[SessionOpen, Opened] = DbBatcher(database_sync_to_async(_open_sessions))
        self._closes: DbBatcher[SessionClose, None] = DbBatcher(database_sync_to_async(_close_sessions))

    async def open(self, request: SessionOpen) -> Opened:
        return await self._opens.submit(request)

    async def close(self, request: SessionClose) -> None:
        await self._closes.submit(request)


_logs: LoopLocal[SessionLog] = LoopLocal(lambda loop: SessionLog())


def session_log() -> SessionLog:
    """The running loop's session log (futures belong to one loop; tests run several)."""
    return _logs.get()
