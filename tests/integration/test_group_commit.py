"""EventLog.append_batch and GroupCommit against the real database (issue 7's group commit)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from accounts.models import User
from realtime.models import Event
from realtime.protocol.errors import ValidationFailed
from realtime.streams.event_log import Appended, AppendRequest, EventLog
from realtime.streams.group_commit import GroupCommit

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


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def test_a_publish_that_cannot_be_stored_fails_alone_and_its_batch_commits_in_one_transaction() -> None:
    """Issue 13 / Concurrent messages: U+0000 (PostgreSQL refuses it in jsonb) and 300 levels of
    nesting (orjson cannot write it) in two publishes of one group-committed batch. Each of them
    gets validation_error naming the field; the 20 others commit together, in one INSERT of one
    transaction (one created_at), not one transaction each as before."""
    commit = GroupCommit()
    requests = [AppendRequest("room:poison-batch", "message.new", {"text": f"ok {n}"}) for n in range(20)]
    requests.insert(7, AppendRequest("room:poison-batch", "message.new", {"text": "bad\x00"}))
    requests.insert(12, AppendRequest("room:poison-batch", "message.new", {"deep": _nested(300)}))
    results = await asyncio.gather(*(commit.append(r) for r in requests), return_exceptions=True)

    deep, nul = results.pop(12), results.pop(7)
    assert isinstance(nul, ValidationFailed)
    assert nul.data["fields"] == {"text": "contains U+0000"}
    assert isinstance(deep, ValidationFailed)
    assert deep.data["fields"] == {"deep" + ".a" * 63: "nested too deep"}
    assert all(isinstance(r, Appended) for r in results), results
    assert sorted(r.event.offset for r in results if isinstance(r, Appended)) == list(range(1, 21))
    stamps = await sync_to_async(
        lambda: set(Event.objects.filter(stream__name="room:poison-batch").values_list("created_at", flat=True))
    )()
    assert len(stamps) == 1


def test_append_batch_is_all_or_nothing_and_a_literal_backslash_u0000_is_not_refused() -> None:
    """Issue 13: ``append_batch`` (no group commit) refuses a batch holding U+0000 whole; text that
    merely reads ``\\u0000`` (a backslash, then "u0000") looks like it in the JSON document and
    is stored anyway."""
    with pytest.raises(ValidationFailed) as refused:
        EventLog.append_batch(
            [
                AppendRequest("room:all-or-nothing", "message.new", {"text": "fine"}),
                AppendRequest("room:all-or-nothing", "message.new", {"text": "bad\x00"}),
            ]
        )
    assert refused.value.data["fields"] == {"text": "contains U+0000"}
    assert not Event.objects.filter(stream__name="room:all-or-nothing").exists()
    [stored] = EventLog.append_batch([AppendRequest("room:all-or-nothing", "message.new", {"text": "a \\u0000 b"})])
    assert stored.event.offset == 1
    assert EventLog.read_since("room:all-or-nothing", 0, 10)[0].data == {"text": "a \\u0000 b"}
