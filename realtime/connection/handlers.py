"""The contract's client events: one ``async def`` each, declared with :func:`client_event`.

Each returns the ``ack`` data or raises a ProtocolError. Handlers receive the connection
(as the narrow :class:`Connection` protocol), the validated data and the message ``id``.
The declaration gives the schema and staff-only flag, which the protocol session checks
before a handler runs; stream rules come from the stream's namespace
(``realtime/namespaces.py``). ``HANDLERS`` (the registry's live view, the contract's
events and every app's own) is the only way a client event name reaches code.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from channels.db import database_sync_to_async
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from accounts.selectors import user_get_by_id, user_get_by_username
from accounts.tokens import TokenRejected, access_token_verify, token_is_current
from realtime.client_events import client_event, registry
from realtime.conf import realtime_settings, server_id
from realtime.connection.sanitize import text_sanitize_async
from realtime.namespaces import Check, Namespace, resolve
from realtime.protocol.close_codes import CloseReason
from realtime.protocol.envelope import render_push
from realtime.protocol.errors import Forbidden, InternalError, LimitExceeded, NotFound, ProtocolError, ValidationFailed
from realtime.protocol.schemas import (
    AdminAnnounceData,
    AdminKickData,
    AuthRefreshData,
    MessageDirectData,
    MessageSendData,
    PingData,
    ResourceGetData,
    ResourceUpdateData,
    StreamHistoryData,
    StreamSubscribeData,
    StreamUnsubscribeData,
)
from realtime.protocol.streams import StreamName
from realtime.selectors import aopen_sessions_elsewhere, aresource_get
from realtime.services import amessage_publish, aresource_update, user_ref
from realtime.streams.event_log import Appended, iso_ms
from realtime.streams.fanout import Subscription, get_hub
from realtime.streams.history import HistoryPage, ahistory_page


class Connection(Protocol):
    user: Any
    user_id: int
    subscriptions: dict[str, Subscription]

    def extend_session(self, expires_at: datetime) -> None: ...

    async def close_with(self, reason: CloseReason) -> None: ...


@dataclass(frozen=True, slots=True)
class AckThen:
    """An ack with a follow-up that must start only after the ack is sent: a subscription's
    replay (async), or the fan-out of a publish (sync), so a publisher that is also a
    subscriber gets its ack before its own event."""

    data: dict[str, Any]
    then: Callable[[], Awaitable[None] | None]


Handler = Callable[[Connection, Any, str | None], Awaitable[Any]]

logger = logging.getLogger("realtime.connection")


def iso_utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _sanitized(text: str) -> str:
    clean = await text_sanitize_async(text)
    if not clean.strip():
        raise ValidationFailed("data.text: empty once markup is removed", fields={"text": "empty after sanitizing"})
    return clean


async def _allowed(namespace: Namespace, check: Check, what: str, user: Any, name: StreamName) -> bool:
    """Run a namespace's check; a ProtocolError passes, and so does a database fault (the
    consumer closes with try_again_later); anything else is a logged ``internal_error``."""
    try:
        if namespace.uses_database:
            return bool(await database_sync_to_async(check)(user, name))
        return bool(check(user, name))
    except (ProtocolError, OperationalError, InterfaceError):
        raise
    except Exception as exc:
        logger.exception("namespace check failed", extra={"event": what, "stream": str(name)})
        raise InternalError(f"the {what} check of {namespace.prefix}: streams failed") from exc


async def _readable(conn: Connection, raw: str) -> tuple[Namespace, StreamName]:
    namespace, name = resolve(raw)
    check = namespace.can_subscribe
    if check is not None and not await _allowed(namespace, check, "can_subscribe", conn.user, name):
        raise Forbidden(namespace.refusal.format(stream=name, key=name.key))
    return namespace, name


@client_event("ping", schema=PingData, idempotent=True)
async def ping(conn: Connection, data: PingData, ref: str | None) -> dict[str, Any]:
    return {} if data.ts is None else {"ts": data.ts}


@client_event("echo", idempotent=True)
async def echo(conn: Connection, data: dict[str, Any], ref: str | None) -> dict[str, Any]:
    return data


@client_event("auth.refresh", schema=AuthRefreshData, idempotent=True)
async def auth_refresh(conn: Connection, data: AuthRefreshData, ref: str | None) -> dict[str, Any]:
    try:
        claims = access_token_verify(data.token)
    except TokenRejected as exc:
        state = "expired" if exc.reason is CloseReason.TOKEN_EXPIRED else "invalid"
        raise ValidationFailed(f"data.token: {state}", fields={"token": state}) from None
    if claims.user_id != conn.user_id:
        raise Forbidden("the token belongs to another user")
    user = await user_get_by_id(claims.user_id)
    if user is None or not user.is_active:
        await conn.close_with(CloseReason.ACCOUNT_DISABLED)
        raise Forbidden("account disabled")
    if not token_is_current(claims.token_version, user):  # issued before a password change
        raise ValidationFailed("data.token: revoked", fields={"token": "revoked"})
    conn.extend_session(claims.expires_at)
    return {"token_expires_at": iso_utc(claims.expires_at)}


@client_event("stream.subscribe", schema=StreamSubscribeData, idempotent=True)
async def stream_subscribe(conn: Connection, data: StreamSubscribeData, ref: str | None) -> AckThen:
    namespace, name = await _readable(conn, data.stream)
    key = str(name)
    hub = get_hub()
    previous = conn.subscriptions.get(key)
    if previous is None:
        limit = realtime_settings().max_subscriptions
        if len(conn.subscriptions) >= limit:
            raise LimitExceeded(
                f"this connection already follows {limit} streams; unsubscribe first",
                limit="REALTIME_MAX_SUBSCRIPTIONS",
            )
        # Subscribing creates the stream: only when its namespace says it exists (section 11).
        exists = namespace.exists
        if exists is not None and key not in hub.streams and not await database_sync_to_async(exists)(name):
            raise NotFound(namespace.missing.format(stream=name, key=name.key))
    else:  # a re-subscribe replaces the old position
        del conn.subscriptions[key]
        hub.detach(previous)
    state, info = await hub.attach(name, conn, fresh=data.since is not None)  # type: ignore[arg-type]
    assert state.head is not None
    head = max(info.head, state.head)
    start, recovered = head, True
    if data.since is not None:
        recovered = (
            (data.epoch is None or data.epoch == info.epoch)
            and data.since <= head
            and data.since >= info.pruned_through
        )
        if recovered:
            start = data.since
    sub = hub.subscribe(state, conn, start, presence=data.presence)  # type: ignore[arg-type]
    conn.subscriptions[key] = sub
    ack = {"stream": key, "offset": head, "epoch": info.epoch, "recovered": recovered}
    return AckThen(ack, lambda: hub.activate(sub))


@client_event("stream.unsubscribe", schema=StreamUnsubscribeData, idempotent=True)
async def stream_unsubscribe(conn: Connection, data: StreamUnsubscribeData, ref: str | None) -> dict[str, Any]:
    key = str(StreamName.parse(data.stream))
    sub = conn.subscriptions.pop(key, None)
    if sub is not None:
        get_hub().detach(sub)
    return {"stream": key}


@client_event("stream.history", schema=StreamHistoryData, idempotent=True)
async def stream_history(conn: Connection, data: StreamHistoryData, ref: str | None) -> dict[str, object]:
    _, name = await _readable(conn, data.stream)
    page: HistoryPage = await ahistory_page(str(name), data.since, data.limit, realtime_settings().max_reply_bytes)
    return page.ack(str(name))


def _ack_then_publish(appended: Appended, ack: dict[str, Any]) -> AckThen:
    hub = get_hub()
    return AckThen(ack, (lambda: hub.publish(appended.event)) if appended.created else (lambda: None))


def _room(raw: str) -> StreamName:
    """The stream a ``message.send`` names: a room, or any namespace open to client publishes
    (parsing is cached in ``StreamName.parse``)."""
    return _publishable(raw)[1]


def _publishable(raw: str) -> tuple[Namespace, StreamName]:
    namespace, name = resolve(raw)
    if namespace.can_publish is None:
        raise ValidationFailed(
            f"data.stream: {namespace.prefix}: streams are published by the server only; "
            "message.send publishes to room:NAME and namespaces open to clients",
            fields={"stream": "not a room"},
        )
    return namespace, name


@client_event("message.send", schema=MessageSendData, idempotent=True)
async def message_send(conn: Connection, data: MessageSendData, ref: str | None) -> AckThen:
    namespace, name = _publishable(data.stream)
    assert namespace.can_publish is not None
    if not await _allowed(namespace, namespace.can_publish, "can_publish", conn.user, name):
        raise Forbidden(f"not allowed to publish to {name}")
    text = await _sanitized(data.text)
    limit = namespace.max_event_bytes
    if limit is not None and len(text.encode("utf-8", "surrogatepass")) > limit:
        raise ValidationFailed(
            f"data.text: over the {limit}-byte limit of {namespace.prefix}: streams", fields={"text": "too long"}
        )
    appended = await amessage_publish(stream=name, event="message.new", sender=conn.user, client_id=ref, text=text)
    return _ack_then_publish(appended, {"stream": appended.event.stream, "offset": appended.event.offset})


@client_event("message.direct", schema=MessageDirectData, idempotent=True)
async def message_direct(conn: Connection, data: MessageDirectData, ref: str | None) -> AckThen:
    recipient = await user_get_by_username(data.to)
    if recipient is None:
        raise NotFound(f"user {data.to[:150]} does not exist")
    appended = await amessage_publish(
        stream=StreamName.user(recipient.pk),
        event="message.direct",
        sender=conn.user,
        client_id=ref,
        text=await _sanitized(data.text),
    )
    return _ack_then_publish(appended, {"stream": appended.event.stream, "offset": appended.event.offset})


@client_event("resource.get", schema=ResourceGetData, idempotent=True)
async def resource_get(conn: Connection, data: ResourceGetData, ref: str | None) -> dict[str, Any]:
    resource = await aresource_get(data.id)
    return {"id": resource["id"], "version": resource["version"], "data": resource["data"]}


@client_event("resource.update", schema=ResourceUpdateData, idempotent=True)
async def resource_update(conn: Connection, data: ResourceUpdateData, ref: str | None) -> AckThen:
    appended = await aresource_update(
        resource_id=data.id, version=data.version, data=data.data, user=conn.user, client_id=ref
    )
    pushed = appended.event.data
    return _ack_then_publish(appended, {"id": pushed["id"], "version": pushed["version"]})


@client_event("admin.announce", schema=AdminAnnounceData, staff_only=True)
async def admin_announce(conn: Connection, data: AdminAnnounceData, ref: str | None) -> AckThen:
    payload = {"text": await _sanitized(data.text), "from": user_ref(conn.user), "ts": iso_ms(timezone.now())}
    message = {"type": "push", "frame": render_push("system.announcement", payload)}
    hub = get_hub()
    elsewhere = await aopen_sessions_elsewhere(server_id()) if hub.multi_process else 0
    # Sent after the ack, so the sender's own copy does not overtake its reply.
    return AckThen({"delivered_to": hub.count_local() + elsewhere}, lambda: _broadcast(message))


@client_event("admin.kick", schema=AdminKickData, staff_only=True)
async def admin_kick(conn: Connection, data: AdminKickData, ref: str | None) -> AckThen:
    target = await user_get_by_username(data.username)
    if target is None:
        raise NotFound(f"user {data.username[:150]} does not exist")
    hub = get_hub()
    elsewhere = await aopen_sessions_elsewhere(server_id(), user_id=target.pk) if hub.multi_process else 0
    closed = hub.count_local(user_id=target.pk) + elsewhere
    return AckThen({"closed": closed}, lambda: _broadcast({"type": "kick"}, user_id=target.pk))


def _broadcast(message: dict[str, Any], user_id: int | None = None) -> None:
    get_hub().broadcast(message, user_id=user_id)


# Every declared event, the contract's and the apps' (filled as declarations run).
HANDLERS: Mapping[str, Callable[[Any, Any, str | None], Awaitable[Any]]] = registry.handlers
