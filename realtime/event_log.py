"""EventLog: the database log that is the source of truth for every stream (PROTOCOL.md section 6).

Offsets are assigned inside the publishing transaction by incrementing the stream's
``head`` row (``UPDATE ... RETURNING``): the row lock serializes publishers of one
stream across every server process, and a rolled-back publish gives its offset
back, so committed offsets have no gaps. Functions here are synchronous and run in
Django's database thread; callers reach them through ``sync_to_async``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from django.db import IntegrityError, connection, transaction

from realtime.models import Event, Stream
from realtime.protocol.envelope import render_push


def iso_ms(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class StreamInfo:
    name: str
    epoch: str
    head: int
    pruned_through: int


@dataclass(frozen=True)
class CommittedEvent:
    stream: str
    offset: int
    event: str
    data: dict[str, Any]

    @cached_property
    def frame(self) -> str:
        """The push frame, rendered once and sent as-is to every subscriber."""
        return render_push(self.event, self.data, stream=self.stream, offset=self.offset)

    def as_push(self) -> dict[str, Any]:
        return {"event": self.event, "stream": self.stream, "offset": self.offset, "data": self.data}


@dataclass(frozen=True, slots=True)
class AppendRequest:
    stream: str
    event: str
    data: dict[str, Any]
    key: tuple[int, str] | None = None  # (sender id, client id): the idempotency key


@dataclass(frozen=True, slots=True)
class Appended:
    event: CommittedEvent
    created: bool  # False: an earlier publish with the same (sender, id) was returned


def _new_epoch() -> str:
    return secrets.token_hex(8)


class EventLog:
    @staticmethod
    def stream_info(name: str) -> StreamInfo:
        """The stream's state, creating it (head 0, a fresh epoch) on first use."""
        stream, _ = Stream.objects.get_or_create(name=name, defaults={"epoch": _new_epoch()})
        return StreamInfo(stream.name, stream.epoch, stream.head, stream.pruned_through)

    @staticmethod
    def _claim_offset(stream_id: int, count: int = 1) -> int:
        """Advance the stream's head by ``count``; return the new head (the last offset claimed)."""
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE realtime_stream SET head = head + %s WHERE id = %s RETURNING head",
                [count, stream_id],
            )
            row = cursor.fetchone()
        return int(row[0])

    @staticmethod
    def existing(sender_id: int, client_id: str) -> CommittedEvent | None:
        found = (
            Event.objects.filter(sender_id=sender_id, client_id=client_id)
            .select_related("stream")
            .only("offset", "event", "data", "stream__name")
            .first()
        )
        if found is None:
            return None
        return CommittedEvent(found.stream.name, found.offset, found.event, found.data)

    @classmethod
    def append(
        cls,
        stream: str,
        event: str,
        data: dict[str, Any],
        *,
        sender_id: int | None = None,
        client_id: str | None = None,
    ) -> Appended:
        """Commit one event and return it with its offset; idempotent on ``(sender_id, client_id)``.

        Must not run inside an outer transaction: the caller publishes after it returns,
        which is after the commit.
        """
        key = (sender_id, client_id) if sender_id is not None and client_id is not None else None
        for attempt in range(2):
            try:
                with transaction.atomic():
                    return cls.append_in_transaction(stream, event, data, key=key)
            except IntegrityError:
                # Two publishes with one idempotency key raced; the loser returns the winner's.
                if key is None or attempt:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def append_in_transaction(
        cls, stream: str, event: str, data: dict[str, Any], *, key: tuple[int, str] | None = None
    ) -> Appended:
        """The body of :meth:`append`, for callers that write more in the same transaction."""
        if key is not None:
            existing = cls.existing(*key)
            if existing is not None:
                return Appended(existing, created=False)
        stream_id = Stream.objects.get_or_create(name=stream, defaults={"epoch": _new_epoch()})[0].pk
        offset = cls._claim_offset(stream_id)
        Event.objects.create(
            stream_id=stream_id,
            offset=offset,
            event=event,
            data=data,
            sender_id=key[0] if key else None,
            client_id=key[1] if key else None,
        )
        return Appended(CommittedEvent(stream, offset, event, data), created=True)

    @classmethod
    def append_batch(cls, requests: list[AppendRequest]) -> list[Appended]:
        """Commit many events in one transaction (group commit); results in request order.

        Each stream's offsets are claimed with one ``UPDATE ... RETURNING`` for the whole
        batch, streams in name order so concurrent batches in other processes lock rows
        in the same order. Idempotency holds against the log and within the batch.
        """
        results: list[Appended | None] = [None] * len(requests)
        with transaction.atomic():
            existing = cls._existing_many([r.key for r in requests if r.key is not None])
            first_of_key: dict[tuple[int, str], int] = {}
            per_stream: dict[str, list[int]] = {}
            for index, request in enumerate(requests):
                key = request.key
                if key is not None and key in existing:
                    results[index] = Appended(existing[key], created=False)
                elif key is not None and key in first_of_key:
                    continue  # resolved below, once the first has its offset
                else:
                    per_stream.setdefault(request.stream, []).append(index)
                    if key is not None:
                        first_of_key[key] = index
            for stream in sorted(per_stream):
                indexes = per_stream[stream]
                stream_id = Stream.objects.get_or_create(name=stream, defaults={"epoch": _new_epoch()})[0].pk
                first = cls._claim_offset(stream_id, len(indexes)) - len(indexes) + 1
                rows = []
                for position, index in enumerate(indexes):
                    request = requests[index]
                    rows.append(
                        Event(
                            stream_id=stream_id,
                            offset=first + position,
                            event=request.event,
                            data=request.data,
                            sender_id=request.key[0] if request.key else None,
                            client_id=request.key[1] if request.key else None,
                        )
                    )
                    committed = CommittedEvent(stream, first + position, request.event, request.data)
                    results[index] = Appended(committed, created=True)
                Event.objects.bulk_create(rows)
        for index, request in enumerate(requests):
            if results[index] is None:
                assert request.key is not None
                original = results[first_of_key[request.key]]
                assert original is not None
                results[index] = Appended(original.event, created=False)
        return [result for result in results if result is not None]

    @staticmethod
    def _existing_many(keys: list[tuple[int, str]]) -> dict[tuple[int, str], CommittedEvent]:
        if not keys:
            return {}
        wanted = set(keys)
        rows = (
            Event.objects.filter(client_id__in={k[1] for k in keys}, sender_id__in={k[0] for k in keys})
            .select_related("stream")
            .only("offset", "event", "data", "sender_id", "client_id", "stream__name")
        )
        found: dict[tuple[int, str], CommittedEvent] = {}
        for row in rows:
            if row.sender_id is not None and row.client_id is not None and (row.sender_id, row.client_id) in wanted:
                found[(row.sender_id, row.client_id)] = CommittedEvent(row.stream.name, row.offset, row.event, row.data)
        return found

    @staticmethod
    def read_since(stream: str, since: int, limit: int) -> list[CommittedEvent]:
        """Events with offset > ``since``, oldest first, at most ``limit``."""
        rows = (
            Event.objects.filter(stream__name=stream, offset__gt=since)
            .order_by("offset")
            .values_list("offset", "event", "data")[:limit]
        )
        return [CommittedEvent(stream, offset, name, data) for offset, name, data in rows]
