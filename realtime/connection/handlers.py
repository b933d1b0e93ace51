"""One ``async def`` per client event; each returns the ``ack`` data or raises a ProtocolError.

Handlers receive the connection (as the narrow :class:`Connection` protocol), the
validated data and the message ``id``. The event registry (``protocol/events.py``)
decides staff-only events before a handler runs; stream ownership is checked here.
``HANDLERS`` at the bottom is the only way a client event name reaches code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from django.utils import timezone

from accounts.selectors import user_get_by_id, user_get_by_username
from accounts.tokens import TokenRejected, access_token_verify, token_is_current
from realtime.conf import realtime_settings, server_id
from realtime.connection.sanitize import text_sanitize_async
from realtime.protocol.close_codes import CloseReason
from realtime.protocol.envelope import render_push
from realtime.protocol.errors import Forbidden, LimitExceeded, NotFound, ValidationFailed
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
from realtime.protocol.streams import StreamKind, StreamName
from realtime.selectors import aopen_sessions_elsewhere, aresource_exists, aresource_get
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


def iso_utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _sanitized(text: str) -> str:
    clean = await text_sanitize_async(text)
    if not clean.strip():
        raise ValidationFailed("data.text: empty once markup is removed", fields={"text": "empty after sanitizing"})
    return clean


def _readable(conn: Connection, raw: str) -> StreamName:
    name = StreamName.parse(raw)
    if not name.readable_by(conn.user_id):
        raise Forbidden(f"{name} belongs to another user")
    return name


async def ping(conn: Connection, data: PingData, ref: str | None) -> dict[str, Any]:
    return {} if data.ts is None else {"ts": data.ts}


async def echo(conn: Connection, data: dict[str, Any], ref: str | None) -> dict[str, Any]:
    return data


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


async def stream_subscribe(conn: Connection, data: StreamSubscribeData, ref: str | None) -> AckThen:
    name = _readable(conn, data.stream)
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
        # Subscribing creates the stream: only for resources that exist (section 11).
        if name.kind is StreamKind.RESOURCE and key not in hub.streams and not await aresource_exists(int(name.key)):
            raise NotFound(f"resource {name.key} does not exist")
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
    sub = hub.subscribe(state, conn, start)  # type: ignore[arg-type]
    conn.subscriptions[key] = sub
    ack = {"stream": key, "offset": head, "epoch": info.epoch, "recovered": recovered}
    return AckThen(ack, lambda: hub.activate(sub))


async def stream_unsubscribe(conn: Connection, data: StreamUnsubscribeData, ref: str | None) -> dict[str, Any]:
    key = str(StreamName.parse(data.stream))
    sub = conn.subscriptions.pop(key, None)
    if sub is not None:
        get_hub().detach(sub)
    return {"stream": key}


async def stream_history(conn: Connection, data: StreamHistoryData, ref: str | None) -> dict[str, object]:
    name = _readable(conn, data.stream)
    page: HistoryPage = await ahistory_page(str(name), data.since, data.limit, realtime_settings().max_reply_bytes)
    return page.ack(str(name))


def _ack_then_publish(appended: Appended, ack: dict[str, Any]) -> AckThen:
    hub = get_hub()
    return AckThen(ack, (lambda: hub.publish(appended.event)) if appended.created else (lambda: None))


def _room(raw: str) -> StreamName:
    """The room a ``message.send`` names (parsing is cached in ``StreamName.parse``)."""
    name = StreamName.parse(raw)
    if name.kind is not StreamKind.ROOM:
        raise ValidationFailed(
            "data.stream: message.send publishes to room:NAME streams", fields={"stream": "not a room"}
        )
    return name


async def message_send(conn: Connection, data: MessageSendData, ref: str | None) -> AckThen:
    name = _room(data.stream)
    appended = await amessage_publish(
        stream=name, event="message.new", sender=conn.user, client_id=ref, text=await _sanitized(data.text)
    )
    return _ack_then_publish(appended, {"stream": appended.event.stream, "offset": appended.event.offset})


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


async def resource_get(conn: Connection, data: ResourceGetData, ref: str | None) -> dict[str, Any]:
    resource = await aresource_get(data.id)
    return {"id": resource["id"], "version": resource["version"], "data": resource["data"]}


async def resource_update(conn: Connection, data: ResourceUpdateData, ref: str | None) -> AckThen:
    appended = await aresource_update(
        resource_id=data.id, version=data.version, data=data.data, user=conn.user, client_id=ref
    )
    pushed = appended.event.data
    return _ack_then_publish(appended, {"id": pushed["id"], "version": pushed["version"]})


async def admin_announce(conn: Connection, data: AdminAnnounceData, ref: str | None) -> AckThen:
    payload = {"text": await _sanitized(data.text), "from": user_ref(conn.user), "ts": iso_ms(timezone.now())}
    message = {"type": "push", "frame": render_push("system.announcement", payload)}
    hub = get_hub()
    elsewhere = await aopen_sessions_elsewhere(server_id()) if hub.multi_process else 0
    # Sent after the ack, so the sender's own copy does not overtake its reply.
    return AckThen({"delivered_to": hub.count_local() + elsewhere}, lambda: _broadcast(message))


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


HANDLERS: dict[str, Handler] = {
    "ping": ping,
    "echo": echo,
    "auth.refresh": auth_refresh,
    "stream.subscribe": stream_subscribe,
    "stream.unsubscribe": stream_unsubscribe,
    "stream.history": stream_history,
    "message.send": message_send,
    "message.direct": message_direct,
    "resource.get": resource_get,
    "resource.update": resource_update,
    "admin.announce": admin_announce,
    "admin.kick": admin_kick,
}
