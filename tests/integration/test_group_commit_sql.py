"""EventLog.append_batch's plain-SQL path against the real database (PostgreSQL in the suite).

The batch's rows and idempotency keys travel as one JSON document each; these tests pin
what that must not change: payloads stored and read back exactly (through the ORM too),
idempotency per (sender, id) across streams and batches, streams created on first use,
and one bad publish failing alone with the others' offsets still gapless.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from accounts.models import User
from realtime.models import Event, Stream
from realtime.protocol.errors import ValidationFailed
from realtime.streams.event_log import AppendRequest, EventLog
from realtime.streams.group_commit import GroupCommit

pytestmark = pytest.mark.django_db(transaction=True)

AWKWARD: dict[str, Any] = {
    "text": "quotes ' \" back\\slash %s %(x)s $[0] ?; DROP TABLE realtime_event; --\n\ttab",
    "unicode": "héllo ✓ 日本語 😀 \u2028",
    "nested": {"list": [1, 2.5, True, None, {"deep": []}], "empty": {}},
    "big": 2**62,
    "negative": -7,
}


@pytest.fixture
def users() -> tuple[User, User]:
    return User.objects.create_user("ann", password="x-long-password-1"), User.objects.create_user("bob")


def test_payloads_round_trip_exactly(users: tuple[User, User]) -> None:
    """Delivery guarantees: what a batch stores is read back unchanged, by history and by a retry."""
    ann, _ = users
    before = timezone.now()
    results = EventLog.append_batch(
        [
            AppendRequest("room:raw", "message.new", AWKWARD, key=(ann.pk, "awkward")),
            AppendRequest("room:raw", "message.direct", {"text": "plain"}),
        ]
    )
    assert [(r.event.offset, r.created) for r in results] == [(1, True), (2, True)]
    history = EventLog.read_since("room:raw", 0, 10)
    assert [(e.offset, e.event, e.data) for e in history] == [
        (1, "message.new", AWKWARD),
        (2, "message.direct", {"text": "plain"}),
    ]
    retry = EventLog.append_batch([AppendRequest("room:raw", "message.new", {"ignored": 1}, key=(ann.pk, "awkward"))])
    assert (retry[0].event.offset, retry[0].created, retry[0].event.data) == (1, False, AWKWARD)
    stored = Event.objects.order_by("offset").values_list("sender_id", "client_id", "created_at")
    assert [(sender, client) for sender, client, _ in stored] == [(ann.pk, "awkward"), (None, None)]
    assert all(before <= created <= timezone.now() + timedelta(seconds=1) for _, _, created in stored)
    stream = Stream.objects.get(name="room:raw")
    assert (stream.head, len(stream.epoch)) == (2, 16)


def test_idempotency_is_per_sender_and_across_streams(users: tuple[User, User]) -> None:
    """Delivery guarantees: an id the same user already published, on any stream, returns the
    original; the same id from another user is a new publish."""
    ann, bob = users
    EventLog.append_batch([AppendRequest("room:first", "message.new", {"n": 1}, key=(ann.pk, "k"))])
    results = EventLog.append_batch(
        [
            AppendRequest("room:second", "message.new", {"n": 2}, key=(ann.pk, "k")),
            AppendRequest("room:second", "message.new", {"n": 3}, key=(bob.pk, "k")),
            AppendRequest("room:second", "message.new", {"n": 4}, key=(bob.pk, "k")),
        ]
    )
    assert [(r.event.stream, r.event.offset, r.created) for r in results] == [
        ("room:first", 1, False),
        ("room:second", 1, True),
        ("room:second", 1, False),
    ]
    assert Event.objects.count() == 2
    assert Stream.objects.get(name="room:second").head == 1


def test_a_batch_of_only_retries_creates_no_stream(users: tuple[User, User]) -> None:
    """Delivery guarantees: a retried publish stores nothing and claims no offset anywhere."""
    ann, _ = users
    EventLog.append_batch([AppendRequest("room:a", "message.new", {"n": 1}, key=(ann.pk, "only"))])
    results = EventLog.append_batch([AppendRequest("room:elsewhere", "message.new", {"n": 1}, key=(ann.pk, "only"))])
    assert (results[0].event.stream, results[0].created) == ("room:a", False)
    assert not Stream.objects.filter(name="room:elsewhere").exists()


def test_large_batch_mixing_new_and_logged_keys(users: tuple[User, User]) -> None:
    """Group commit: 400 publishes of two users, half of them retries of logged ones, in one batch."""
    ann, bob = users
    logged = [
        AppendRequest("room:big", "message.new", {"n": n}, key=((ann, bob)[n % 2].pk, f"c-{n}")) for n in range(200)
    ]
    EventLog.append_batch(logged)
    fresh = [
        AppendRequest("room:big", "message.new", {"n": n}, key=((ann, bob)[n % 2].pk, f"c-{n}"))
        for n in range(200, 400)
    ]
    results = EventLog.append_batch([item for pair in zip(logged, fresh, strict=True) for item in pair])
    assert [r.event.offset for r in results[0::2]] == list(range(1, 201))
    assert [r.created for r in results[0::2]] == [False] * 200
    assert [r.event.offset for r in results[1::2]] == list(range(201, 401))
    assert [r.event.data["n"] for r in results[1::2]] == list(range(200, 400))
    assert Event.objects.filter(stream__name="room:big").count() == 400


async def test_one_unstorable_publish_does_not_fail_its_batch() -> None:
    """Group commit: a publish the database cannot store fails alone; the rest of its batch is
    committed with gapless offsets (the failed transaction gave its offsets back)."""
    commit = GroupCommit()
    requests = [AppendRequest("room:mixed", "message.new", {"n": n}) for n in range(5)]
    requests.insert(2, AppendRequest("room:mixed", "message.new", {"n": object()}))
    results = await asyncio.gather(*(commit.append(r) for r in requests), return_exceptions=True)
    assert isinstance(results[2], ValidationFailed)  # refused alone, with its field named (issue 13)
    assert results[2].data["fields"] == {"n": "not a JSON value"}
    good = [r for r in results if not isinstance(r, BaseException)]
    assert sorted(r.event.offset for r in good) == [1, 2, 3, 4, 5]
    head = await sync_to_async(lambda: Stream.objects.get(name="room:mixed").head)()
    assert head == 5
    assert await sync_to_async(Event.objects.filter(stream__name="room:mixed").count)() == 5
