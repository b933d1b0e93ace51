"""EventLog: the database log that is the source of truth for every stream (PROTOCOL.md section 6).

Offsets are assigned inside the publishing transaction by incrementing the stream's
``head`` row (``UPDATE ... RETURNING``): the row lock serializes publishers of one
stream across every server process, and a rolled-back publish gives its offset
back, so committed offsets have no gaps. Functions here are synchronous and run in
Django's database thread; callers reach them through ``sync_to_async``.

No event stops a stream (issue 13). Appends refuse data that could not be stored or
rendered (:mod:`realtime.protocol.json_safety`) one request at a time, without failing
the rest of their batch. An event already in the log that cannot be rendered (a row an
older server accepted) is logged at ERROR with its stream and offset and shown to
subscribers as a ``system.skipped`` push at its offset, so offsets stay contiguous and
replay, history and the live gap fill move past it.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import orjson
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from realtime.models import Event, Stream
from realtime.protocol.envelope import render_push
from realtime.protocol.errors import InvalidEnvelope, ProtocolError, ValidationFailed
from realtime.protocol.json_safety import dotted, json_problem
from realtime.streams.event_log_sql import SQL

logger = logging.getLogger(__name__)

SKIPPED_EVENT = "system.skipped"
SKIPPED_DATA: dict[str, Any] = {"reason": "unrenderable"}


def iso_ms(moment: datetime) -> str:
    # isoformat truncates to the millisecond, as the contract wants, and costs less than strftime.
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


class _MillisecondStamp:
    """``iso_ms`` of now, formatted once per millisecond: under load many publishes share a
    millisecond, and every event's timestamp is made on the publish path."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = (-1, "")  # (milliseconds since the epoch, its text): one attribute, one store

    def __call__(self) -> str:
        ms = time.time_ns() // 1_000_000
        last = self._last
        if last[0] == ms:
            return last[1]
        seconds, millis = divmod(ms, 1000)
        text = iso_ms(datetime.fromtimestamp(seconds, UTC).replace(microsecond=millis * 1000))
        self._last = (ms, text)
        return text


now_iso_ms = _MillisecondStamp()


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
        """The push frame, rendered once and sent as-is to every subscriber; never raises."""
        try:
            return render_push(self.event, self.data, stream=self.stream, offset=self.offset)
        except TypeError:  # orjson.JSONEncodeError: too deep, a lone surrogate, a huge integer
            self.__dict__["skipped"] = True
            logger.error(
                "stored event cannot be rendered: subscribers get system.skipped at its offset",
                extra={"stream": self.stream, "offset": self.offset, "event": self.event},
            )
            return render_push(SKIPPED_EVENT, SKIPPED_DATA, stream=self.stream, offset=self.offset)

    @property
    def skipped(self) -> bool:
        """Whether :attr:`frame` is the ``system.skipped`` placeholder (renders the frame once)."""
        _ = self.frame  # rendering is what finds out
        return bool(self.__dict__.get("skipped"))

    def as_push(self) -> dict[str, Any]:
        if self.skipped:
            return {"event": SKIPPED_EVENT, "stream": self.stream, "offset": self.offset, "data": dict(SKIPPED_DATA)}
        return {"event": self.event, "stream": self.stream, "offset": self.offset, "data": self.data}

    @classmethod
    def unreadable(cls, stream: str, offset: int, event: str) -> CommittedEvent:
        """A stored row whose data could not even be decoded: skipped like an unrenderable one."""
        placeholder = cls(stream, offset, event, {})
        placeholder.__dict__["skipped"] = True
        logger.error(
            "stored event cannot be decoded: subscribers get system.skipped at its offset",
            extra={"stream": stream, "offset": offset, "event": event},
        )
        placeholder.__dict__["frame"] = render_push(SKIPPED_EVENT, SKIPPED_DATA, stream=stream, offset=offset)
        return placeholder


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
        refused = _refusal(AppendRequest(stream, event, data, key))
        if refused is not None:
            raise refused
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

        Plain SQL rather than the ORM, with the batch's rows and keys sent as one JSON
        document each: constant statements, two parameters, no per-value quoting in Python.
        The database thread is the publish bottleneck, so nothing is compiled or bound per
        row on it. Round trips: one idempotency
        lookup, one ``UPDATE`` per stream, one ``INSERT``.

        All or nothing: if a request's data cannot be stored (say U+0000, which PostgreSQL
        refuses), nothing is committed and the :class:`ProtocolError` refusing the first such
        request is raised. :meth:`append_each` commits the others instead.
        """
        try:
            return cls._append_batch(requests, screened=False)
        except _Unstorable:
            pass
        for request in requests:
            error = _refusal(request)
            if error is not None:
                raise error
        return cls._append_batch(requests, screened=True)

    @classmethod
    def append_each(cls, requests: list[AppendRequest]) -> list[Appended | ProtocolError]:
        """:meth:`append_batch`, except that a request whose data cannot be stored is answered
        with the :class:`ProtocolError` refusing it while the others still commit in one
        transaction (the group commit's path: one client's bad publish fails alone).

        The batch's document is checked before the ``INSERT`` (one substring search when all
        is well); if it fails, that transaction is rolled back, each request is checked on
        its own, and the rest go again in one transaction.
        """
        try:
            return list[Appended | ProtocolError](cls._append_batch(requests, screened=False))
        except _Unstorable:
            pass
        refused = {index: error for index, request in enumerate(requests) if (error := _refusal(request)) is not None}
        kept = [request for index, request in enumerate(requests) if index not in refused]
        committed = iter(cls._append_batch(kept, screened=True) if kept else [])
        return [refused[index] if index in refused else next(committed) for index in range(len(requests))]

    @classmethod
    def _append_batch(cls, requests: list[AppendRequest], *, screened: bool) -> list[Appended]:
        results: list[Appended | None] = [None] * len(requests)
        first_of_key: dict[tuple[int, str], int] = {}
        per_stream: dict[str, list[int]] = {}
        with transaction.atomic(), connection.cursor() as cursor:
            existing = _existing_many(cursor, [r.key for r in requests if r.key is not None])
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
            rows: list[tuple[Any, ...]] = []
            for stream in sorted(per_stream):
                indexes = per_stream[stream]
                stream_id, head = _claim(cursor, stream, len(indexes))
                offset = head - len(indexes)
                for index in indexes:
                    offset += 1
                    request = requests[index]
                    sender_id, client_id = request.key if request.key is not None else (None, None)
                    rows.append((stream_id, offset, request.event, request.data, sender_id, client_id))
                    results[index] = Appended(CommittedEvent(stream, offset, request.event, request.data), created=True)
            if rows:
                try:
                    document = _dumps(rows)
                except TypeError:  # orjson.JSONEncodeError: too deep, a lone surrogate, a huge integer
                    raise _Unstorable from None
                # orjson writes U+0000 as \u0000; the search also matches an escaped backslash
                # before "u0000", which the screened second attempt lets through.
                if not screened and "\\u0000" in document:
                    raise _Unstorable
                created_at = connection.ops.adapt_datetimefield_value(timezone.now())
                cursor.execute(SQL[connection.vendor].insert_events, [created_at, document])
        for index, request in enumerate(requests):
            if results[index] is None:
                assert request.key is not None
                original = results[first_of_key[request.key]]
                assert original is not None
                results[index] = Appended(original.event, created=False)
        return [result for result in results if result is not None]

    @staticmethod
    def read_since(stream: str, since: int, limit: int) -> list[CommittedEvent]:
        """Events with offset > ``since``, oldest first, at most ``limit``.

        Each row's data is decoded on its own (plain SQL, not the ORM's JSONField, which
        decodes inside the cursor loop), so one undecodable row is skipped, not the page.
        """
        with connection.cursor() as cursor:
            cursor.execute(SQL[connection.vendor].read_since, [stream, since, limit])
            rows = cursor.fetchall()
        events: list[CommittedEvent] = []
        for offset, name, data in rows:
            try:
                decoded = _loads(data)
            except orjson.JSONDecodeError:
                events.append(CommittedEvent.unreadable(stream, offset, name))
                continue
            events.append(CommittedEvent(stream, offset, name, decoded))
        return events


class _Unstorable(Exception):
    """Some request of a batch cannot be stored: roll back and check each request alone."""


def _refusal(request: AppendRequest) -> ProtocolError | None:
    """Why ``request`` cannot be stored and rendered, as the error its caller gets (else ``None``)."""
    if request.key is not None and "\x00" in request.key[1]:
        return InvalidEnvelope("id: contains U+0000")
    problem = json_problem(request.data)
    if problem is None:
        return None
    path, reason = problem
    field = dotted(path)
    return ValidationFailed(f"data.{field}: {reason}" if path else f"data: {reason}", fields={field: reason})


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _loads(value: Any) -> Any:
    # SQLite returns the column's text; Django's psycopg setup also loads jsonb as text.
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _claim(cursor: Any, stream: str, count: int) -> tuple[int, int]:
    """Advance ``stream``'s head by ``count``, creating the stream first if it is new;
    return ``(stream id, new head)``. The row lock it takes is held until commit."""
    update = "UPDATE realtime_stream SET head = head + %s WHERE name = %s RETURNING id, head"
    cursor.execute(update, [count, stream])
    row = cursor.fetchone()
    if row is None:
        # A concurrent creator's row wins (DO NOTHING waits for its commit); then claim on it.
        cursor.execute(
            "INSERT INTO realtime_stream (name, epoch, head, pruned_through, created_at)"
            " VALUES (%s, %s, 0, 0, %s) ON CONFLICT (name) DO NOTHING",
            [stream, _new_epoch(), connection.ops.adapt_datetimefield_value(timezone.now())],
        )
        cursor.execute(update, [count, stream])
        row = cursor.fetchone()
    return int(row[0]), int(row[1])


def _existing_many(cursor: Any, keys: list[tuple[int, str]]) -> dict[tuple[int, str], CommittedEvent]:
    """The logged events of these idempotency keys, in one query."""
    if not keys:
        return {}
    cursor.execute(SQL[connection.vendor].select_keys, [_dumps(list(dict.fromkeys(keys)))])
    return {
        (sender_id, client_id): CommittedEvent(stream, offset, event, _loads(data))
        for sender_id, client_id, stream, offset, event, data in cursor.fetchall()
    }
