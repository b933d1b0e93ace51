"""Session rows are opened and closed in batches (realtime/connection/session_records.py), real database."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async

from accounts.models import User
from realtime.connection.session_records import SessionClose, SessionLog, SessionOpen
from realtime.models import ConnectionSession
from realtime.protocol.close_codes import CloseReason
from realtime.streams.db_batch import DbBatcher

pytestmark = pytest.mark.django_db(transaction=True)


def _open(user_id: int, agent: str = "pytest") -> SessionOpen:
    return SessionOpen(uuid.uuid4(), user_id, "test:1", "127.0.0.1", "", agent)


async def test_a_burst_of_opens_is_one_batch_and_every_row_is_committed(alice: User, settings: Any) -> None:
    """Memory per connection / Connection scaling: 200 concurrent opens share batches; each gets its user."""
    settings.REALTIME = dataclasses.replace(settings.REALTIME, max_connections_per_user=1000)
    calls: list[int] = []
    log = SessionLog()
    run = log._opens._run

    async def counting(requests: list[SessionOpen]) -> Any:
        calls.append(len(requests))
        return await run(requests)

    log._opens._run = counting
    requests = [_open(alice.pk, f"agent-{i}") for i in range(200)]
    results = await asyncio.gather(*(log.open(r) for r in requests))
    assert all(isinstance(user, User) and user.pk == alice.pk for user in results)
    assert sum(calls) == 200
    assert len(calls) < 10  # batched, not one trip per connection
    rows = await sync_to_async(lambda: set(ConnectionSession.objects.values_list("user_agent", flat=True)))()
    assert rows == {f"agent-{i}" for i in range(200)}


async def test_unknown_and_disabled_accounts_are_refused_without_a_row(alice: User) -> None:
    """Security: a token for a deleted user or a disabled account opens no session."""
    bob = await sync_to_async(User.objects.create_user)(username="bob", password="pw-bob-1234567", is_active=False)
    log = SessionLog()
    results = await asyncio.gather(log.open(_open(alice.pk)), log.open(_open(bob.pk)), log.open(_open(10**9)))
    assert isinstance(results[0], User)
    assert list(results[1:]) == [CloseReason.ACCOUNT_DISABLED, CloseReason.INVALID_TOKEN]
    owners = await sync_to_async(lambda: list(ConnectionSession.objects.values_list("user_id", flat=True)))()
    assert owners == [alice.pk]


async def test_closes_record_code_reason_and_counts_once(alice: User) -> None:
    """Connection: Disconnect -> the row gets its close code, reason and message counts; a second close is a no-op."""
    log = SessionLog()
    opens = [_open(alice.pk) for _ in range(3)]
    await asyncio.gather(*(log.open(r) for r in opens))
    await asyncio.gather(
        *(log.close(SessionClose(r.session_id, 1000 + i, f"reason-{i}", i, 2 * i)) for i, r in enumerate(opens))
    )
    await log.close(SessionClose(opens[0].session_id, 4000, "late", 99, 99))
    rows = await sync_to_async(
        lambda: {
            row.id: (row.close_code, row.close_reason, row.messages_in, row.messages_out, row.disconnected_at is None)
            for row in ConnectionSession.objects.all()
        }
    )()
    assert rows == {r.session_id: (1000 + i, f"reason-{i}", i, 2 * i, False) for i, r in enumerate(opens)}


async def test_a_failed_batch_fails_each_waiter_and_the_next_batch_still_runs() -> None:
    """Bad input never loses the others: a batch that raises reaches every waiter; later ones still run."""
    fail = True

    def run(requests: list[int]) -> list[int]:
        if fail:
            raise RuntimeError("database gone")
        return [r * 2 for r in requests]

    batcher: DbBatcher[int, int] = DbBatcher(database_sync_to_async(run))
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    fail = False
    assert await asyncio.gather(*(batcher.submit(i) for i in range(3))) == [0, 2, 4]


async def test_connections_per_user_at_the_limit_and_one_more_within_and_across_batches(
    alice: User, settings: Any
) -> None:
    """Section 11 REALTIME_MAX_CONNECTIONS_PER_USER: one batch admits up to the limit (its own
    admissions count), the rest get too_many_connections with no row; a closed session frees a place;
    another user's sessions do not count."""
    settings.REALTIME = dataclasses.replace(settings.REALTIME, max_connections_per_user=3)
    dora = await sync_to_async(User.objects.create_user)(username="dora", password="pw-dora-1234567")
    log = SessionLog()
    first = [_open(alice.pk) for _ in range(5)]
    results = await asyncio.gather(*(log.open(r) for r in first), log.open(_open(dora.pk)))
    assert [isinstance(r, User) for r in results] == [True, True, True, False, False, True]
    assert results[3:5] == [CloseReason.TOO_MANY_CONNECTIONS] * 2
    assert await log.open(_open(alice.pk)) is CloseReason.TOO_MANY_CONNECTIONS
    await log.close(SessionClose(first[0].session_id, 1000, "", 0, 0))
    assert isinstance(await log.open(_open(alice.pk)), User)
    assert await log.open(_open(alice.pk)) is CloseReason.TOO_MANY_CONNECTIONS
    count = await sync_to_async(
        lambda: ConnectionSession.objects.filter(user=alice, disconnected_at__isnull=True).count()
    )()
    assert count == 3


async def test_sessions_of_a_dead_server_do_not_count_against_the_limit(alice: User, settings: Any) -> None:
    """Section 11: open rows left by a server that stopped heartbeating do not lock its users out."""
    from datetime import timedelta

    from django.utils import timezone

    from realtime.models import ServerInstance

    settings.REALTIME = dataclasses.replace(settings.REALTIME, max_connections_per_user=2)
    long_ago = timezone.now() - timedelta(hours=1)
    await sync_to_async(ServerInstance.objects.create)(server_id="dead:1", last_heartbeat=long_ago)
    await sync_to_async(ServerInstance.objects.create)(server_id="live:1")
    log = SessionLog()
    for server in ("dead:1", "dead:1", "live:1"):
        request = SessionOpen(uuid.uuid4(), alice.pk, server, "127.0.0.1", "", "pytest")
        await sync_to_async(_insert_row)(request)
    assert isinstance(await log.open(_open(alice.pk)), User)  # live:1's one + this one = 2
    assert await log.open(_open(alice.pk)) is CloseReason.TOO_MANY_CONNECTIONS


def _insert_row(request: SessionOpen) -> None:
    ConnectionSession.objects.create(id=request.session_id, user_id=request.user_id, server_id=request.server_id)


async def test_a_database_fault_at_open_is_raised_not_reported_as_a_bad_token(alice: User) -> None:
    """Issue 14: a failing insert (here: the table is gone) is an exception for the caller, which
    closes 1013 try_again_later, never CloseReason.INVALID_TOKEN."""
    from django.db import DatabaseError, connection

    def drop() -> None:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE realtime_connectionsession RENAME TO realtime_cs_away")

    def restore() -> None:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE realtime_cs_away RENAME TO realtime_connectionsession")

    await database_sync_to_async(drop)()
    try:
        with pytest.raises(DatabaseError):
            await SessionLog().open(_open(alice.pk))
    finally:
        await database_sync_to_async(restore)()
