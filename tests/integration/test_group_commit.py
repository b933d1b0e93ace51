"""EventLog.append_batch and GroupCommit against the real database (issue 7's group commit)."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from accounts.models import User
from realtime.event_log import AppendRequest, EventLog
from realtime.group_commit import GroupCommit
from realtime.models import Event

pytestmark = pytest.mark.django_db(transaction=True)


def test_batch_is_idempotent_within_itself_and_against_the_log() -> None:
    """Delivery guarantees: a repeated (sender, id) in one batch, or one already in the log, is stored once."""
    user = User.objects.create_user("batcher", password="x-long-password-1")
    first = EventLog.append_batch([AppendRequest("room:b", "message.new", {"n": 0}, key=(user.pk, "k0"))])
    assert (first[0].event.offset, first[0].created) == (1, True)
    results = EventLog.append_batch(
        [
            AppendRequest("room:b", "message.new", {"n": 1}, key=(user.pk, "k1")),
            AppendRequest("room:b", "message.new", {"n": 2}),
            AppendRequest("room:b", "message.new", {"n": 1}, key=(user.pk, "k1")),
            AppendRequest("room:b", "message.new", {"n": 0}, key=(user.pk, "k0")),
            AppendRequest("room:c", "message.new", {"n": 3}),
        ]
    )
    assert [(r.event.stream, r.event.offset, r.created) for r in results] == [
        ("room:b", 2, True),
        ("room:b", 3, True),
        ("room:b", 2, False),
        ("room:b", 1, False),
        ("room:c", 1, True),
    ]
    assert Event.objects.filter(stream__name="room:b").count() == 3


async def test_group_commit_batches_concurrent_publishes_in_order() -> None:
    """Ordering: Concurrent messages -> 200 concurrent publishes through GroupCommit get offsets
    1..200 and each resolves only after its batch committed (the row is readable)."""
    commit = GroupCommit()
    results = await asyncio.gather(
        *(commit.append(AppendRequest("room:gc", "message.new", {"n": n})) for n in range(200))
    )
    assert sorted(r.event.offset for r in results) == list(range(1, 201))
    assert [r.event.data["n"] for r in sorted(results, key=lambda r: r.event.offset)] == list(range(200))
    assert await sync_to_async(Event.objects.filter(stream__name="room:gc").count)() == 200
