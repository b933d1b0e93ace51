"""Publish from any Django code, in any process, and read a stream's position (issue 16).

``publish(stream, event, data, id=None)`` appends one event to the log and returns its offset:

- Inside the caller's transaction the event is appended in that transaction: the stream row's
  lock (``UPDATE ... RETURNING`` on its head) is held until the caller commits, so publishers
  of one stream are serialized and the offset becomes visible exactly when the caller's own
  writes do. A rollback publishes nothing and gives the offset back. Outside a transaction the
  publish commits at once. Fan-out always happens after commit (``transaction.on_commit``).
- Fan-out: in a server process, from a thread the server runs sync code in (a view under the
  ASGI server), through the process's hub; anywhere else (a WSGI worker, a Celery task,
  ``manage.py shell``) one ``fanout.event`` message to the stream's group on the channel layer
  of the stream's Redis (its shard, when ``REDIS_URL`` lists several) when a broker is
  configured; without one, every server's head tracking reads it from the log within about
  a second. A broker failure is logged and never reaches the caller: the event is
  committed and head tracking delivers it.
- ``id`` makes a retry safe: a second publish with the same id to the same stream returns the
  first one's offset and stores nothing. Server-side publishes have no sender, and NULL senders
  are distinct in the unique constraint on ``(sender, client_id)``, so the check is a lookup
  made while holding the stream row's lock, which serializes every publish of the stream.

``position(stream)`` is ``(head, epoch)``: read it before loading state, then subscribe with
``since=head, epoch=epoch``. Anything committed after the read has a higher offset, so it is
replayed; nothing falls between loading and subscribing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import sys
import time
from typing import Any

import orjson
from asgiref.sync import SyncToAsync, async_to_sync
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.db import connection, transaction

from realtime import namespaces
from realtime.models import Event, Stream
from realtime.namespaces import Namespace
from realtime.protocol.errors import NotFound, ValidationFailed
from realtime.protocol.json_safety import dotted, json_problem
from realtime.protocol.streams import StreamName
from realtime.streams.bus import BROKER_ERRORS
from realtime.streams.bus_shards import layer_alias, shard_of_stream
from realtime.streams.event_log import Appended, CommittedEvent, EventLog

__all__ = ["PublishRefused", "aposition", "apublish", "position", "positions", "publish"]

logger = logging.getLogger("realtime.publishing")

# Stored in client_id with a NULL sender. Clients' own ids always have their sender; the
# prefix keeps a deleted user's events (sender SET_NULL) out of the way of server ids.
SERVER_ID_PREFIX = "srv:"
MAX_ID_LENGTH = 64 - len(SERVER_ID_PREFIX)  # Event.client_id holds 64 characters
MAX_EVENT_LENGTH = 64  # Event.event
_EVENT_NAME = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")
# Clients dispatch on these: a published "error" or "stream.reset" would be misread.
_RESERVED_EVENTS = frozenset({"ack", "error"})
_RESERVED_PREFIXES = ("session.", "stream.", "system.", "presence.")
BUS_SEND_TIMEOUT = 1.0  # never hold the caller longer on a broker that does not answer


class PublishRefused(ValidationFailed, ValueError):
    """Bad input to :func:`publish` / :func:`position`: the message names the argument."""


def _refuse(field: str, reason: str) -> PublishRefused:
    return PublishRefused(f"{field}: {reason}", fields={field: reason})


def _resolve(stream: object) -> tuple[Namespace, StreamName]:
    """The stream's declared namespace (realtime/namespaces.py) and its parsed name."""
    if not isinstance(stream, str):
        raise _refuse("stream", "must be a string")
    try:
        return namespaces.resolve(stream)
    except ValidationFailed:
        declared = namespaces.namespaces()
        prefix, sep, _ = stream.partition(":")
        if sep and namespaces.get(prefix) is None:
            known = ", ".join(f"{ns.prefix}:" for ns in declared)
            reason = f"names an unknown stream namespace {prefix[:24]!r} (known: {known})"
        else:
            reason = "is not " + ", ".join(ns.pattern().shape for ns in declared)
        raise _refuse("stream", f"{stream[:80]!r} {reason}") from None


def _stream_name(stream: object) -> StreamName:
    return _resolve(stream)[1]


def _check(stream: object, event: object, data: object, id: object) -> tuple[Namespace, StreamName]:
    namespace, name = _resolve(stream)
    if not isinstance(event, str) or len(event) > MAX_EVENT_LENGTH or not _EVENT_NAME.fullmatch(event):
        raise _refuse("event", f"must be a dotted lowercase name of at most {MAX_EVENT_LENGTH} characters")
    if event in _RESERVED_EVENTS or event.startswith(_RESERVED_PREFIXES):
        raise _refuse("event", f"{event!r} is reserved for the protocol")
    if not isinstance(data, dict):
        raise _refuse("data", "must be a dict (a JSON object)")
    problem = json_problem(data)
    if problem is not None:
        path, reason = problem
        field = dotted(path, "data")
        raise PublishRefused(f"{field}: {reason}", fields={field: reason})
    limit = namespace.max_event_bytes
    if limit is not None and len(orjson.dumps(data)) > limit:
        raise _refuse("data", f"over the {limit}-byte limit of {namespace.prefix}: streams")
    if id is not None and (not isinstance(id, str) or not 0 < len(id) <= MAX_ID_LENGTH or "\x00" in id):
        raise _refuse("id", f"must be a non-empty string of at most {MAX_ID_LENGTH} characters without U+0000")
    return namespace, name


def _refuse_event_loop(function: str) -> None:
    # Django would refuse the query with a generic message; name the async twin instead.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"realtime.{function}() is synchronous: from async code use await realtime.a{function}(...)")


def _require_existing(namespace: Namespace, name: StreamName) -> None:
    # As stream.subscribe does (section 11): a stream its namespace says does not exist
    # (resource:ID of a missing resource) is never created.
    if namespace.exists is not None and not namespace.exists(name):
        raise NotFound(namespace.missing.format(stream=name, key=name.key))


def _append(name: StreamName, event: str, data: dict[str, Any], id: str | None) -> Appended:
    """Append in the current transaction (the caller's, or the savepoint ``publish`` opened)."""
    stream = str(name)
    if id is None:
        return EventLog.append_in_transaction(stream, event, data)
    EventLog.stream_info(stream)  # create it first: only an existing row can be locked
    # The lock every publisher of the stream takes before claiming an offset: held to commit,
    # it makes "look up the id, then insert" atomic for the stream on every database.
    stream_id = Stream.objects.select_for_update().values_list("pk", flat=True).get(name=stream)
    client_id = SERVER_ID_PREFIX + id
    found = (
        Event.objects.filter(stream_id=stream_id, sender__isnull=True, client_id=client_id)
        .only("offset", "event", "data")
        .first()
    )
    if found is not None:
        return Appended(CommittedEvent(stream, found.offset, found.event, found.data), created=False)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE realtime_stream SET head = head + 1 WHERE id = %s RETURNING head", [stream_id])
        offset = int(cursor.fetchone()[0])
    Event.objects.create(stream_id=stream_id, offset=offset, event=event, data=data, client_id=client_id)
    return Appended(CommittedEvent(stream, offset, event, data), created=True)


def publish(stream: str, event: str, data: dict[str, Any], *, id: str | None = None) -> int:
    """Append ``event`` with ``data`` to ``stream`` and return its offset; fan out after commit.

    Raises :class:`PublishRefused` (a ``ValueError``) naming the bad argument, or
    :class:`~realtime.protocol.errors.NotFound` for ``resource:ID`` of a missing resource;
    nothing is stored then.
    """
    _refuse_event_loop("publish")
    namespace, name = _check(stream, event, data, id)
    # A savepoint inside the caller's transaction: a failed append leaves it usable.
    with transaction.atomic():
        _require_existing(namespace, name)
        appended = _append(name, event, data, id)
        if appended.created:
            transaction.on_commit(functools.partial(_fan_out, appended.event))
    return appended.event.offset


async def apublish(stream: str, event: str, data: dict[str, Any], *, id: str | None = None) -> int:
    """:func:`publish` from async code (runs in Django's database thread; commits at once)."""
    offset: int = await database_sync_to_async(publish)(stream, event, data, id=id)
    return offset


def position(stream: str) -> tuple[int, str]:
    """``(offset, epoch)`` of ``stream`` now: subscribe with ``since=offset, epoch=epoch``
    after loading state, and every event committed after this read is replayed.

    Creates the stream (head 0, a new epoch) if it does not exist yet, as a subscribe does;
    ``resource:ID`` of a missing resource is :class:`~realtime.protocol.errors.NotFound`.
    """
    _refuse_event_loop("position")
    namespace, name = _resolve(stream)
    _require_existing(namespace, name)
    info = EventLog.stream_info(str(name))
    return info.head, info.epoch


def positions(streams: list[str]) -> dict[str, tuple[int, str]]:
    """:func:`position` of many streams of existing resources or rooms, in one query (the
    streams not created yet are created, one by one)."""
    names = [str(_stream_name(stream)) for stream in streams]
    found = {
        name: (head, epoch)
        for name, head, epoch in Stream.objects.filter(name__in=names).values_list("name", "head", "epoch")
    }
    for name in names:
        if name not in found:
            info = EventLog.stream_info(name)
            found[name] = (info.head, info.epoch)
    return found


async def aposition(stream: str) -> tuple[int, str]:
    """:func:`position` from async code."""
    result: tuple[int, str] = await database_sync_to_async(position)(stream)
    return result


# Fan-out ---------------------------------------------------------------------------------------


def _in_server_thread() -> bool:
    """Whether this thread is one the ASGI server runs sync code in (a view, ``sync_to_async``):
    then ``async_to_sync`` reaches the server's own loop and hub. A process is a server when it
    has loaded the ASGI application (``manage.py serve``, ``runserver``, in-process tests)."""
    app_module = str(getattr(settings, "ASGI_APPLICATION", "")).rpartition(".")[0]
    if not app_module or app_module not in sys.modules:
        return False
    # asgiref records the calling loop in this thread-local for every sync_to_async thread
    # (it is how async_to_sync finds its way back); a fork has its own pid.
    local = SyncToAsync.threadlocal
    return getattr(local, "main_event_loop", None) is not None and getattr(local, "main_event_loop_pid", None) == (
        os.getpid()
    )


def _fan_out(event: CommittedEvent) -> None:
    """After commit: tell the servers at once if this process can; never raises."""
    try:
        if _in_server_thread():
            from realtime.services import publish_from_sync

            publish_from_sync(event)
            return
        # The stream's shard (realtime/streams/bus_shards.py): the Redis its servers listen on.
        shards = len(getattr(settings, "REDIS_URLS", ())) or 1
        layer = get_channel_layer(layer_alias(shard_of_stream(event.stream, shards)))
        if layer is None or isinstance(layer, InMemoryChannelLayer):
            return  # one process, or none reachable: the servers' head tracking reads the log
        async_to_sync(_bus_send)(layer, event)
    except BROKER_ERRORS as exc:
        # Expected while the broker is away: one line, no traceback per publish.
        logger.warning(
            "publish committed; the broker did not take it: servers read it from the log",
            extra={"stream": event.stream, "offset": event.offset, "error": f"{type(exc).__name__}: {exc}"},
        )
    except Exception:
        logger.exception("publish committed; fan-out failed", extra={"stream": event.stream, "offset": event.offset})


async def _bus_send(layer: Any, event: CommittedEvent) -> None:
    # The message every hub sends (Hub.publish): servers deliver it as if a peer had published.
    message = {
        "type": "fanout.event",
        "origin": f"publisher:{os.getpid()}",
        "stream": event.stream,
        "offset": event.offset,
        "frame": event.frame,
        "published_at": time.time(),
    }
    await asyncio.wait_for(layer.group_send(StreamName.parse(event.stream).group, message), BUS_SEND_TIMEOUT)
