"""Session rows are opened and closed in batches (realtime/session_log.py), real database."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async

from accounts.models import User
from realtime.db_batch import DbBatcher
from realtime.models import ConnectionSession
from realtime.protocol.close_codes import CloseReason
from realtime.session_log import SessionClose, SessionLog, SessionOpen

pytestmark = pytest.mark.django_db(transaction=True)


def _open(user_id: int, agent: str = "pytest") -> SessionOpen:
    return SessionOpen(uuid.uuid4(), user_id, "test:1", "127.0.0.1", "", agent)


async def test_a_burst_of_opens_is_one_batch_and_every_row_is_committed(alice: User) -> None:
    """Memory per connection / Connection scaling: 200 concurrent opens share batches; each gets its user."""
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
