"""Declared shapes of what the server sends: each push's ``data`` and each event's ``ack`` data.

The server renders these frames from plain dicts (``render_push`` / ``render_ack``); the
models here are the written contract of those dicts (PROTOCOL.md sections 2-4, 8, 9), used
to generate the AsyncAPI document (:mod:`realtime.protocol.asyncapi`). They are data only:
nothing on the hot path builds or validates them. ``tests/unit/test_asyncapi_registry.py``
checks that every push name rendered anywhere in ``realtime/`` and every client event of
``EVENTS`` has an entry here, so the document cannot silently miss one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from realtime.protocol.errors import ErrorCode


def _absent_unless_set(schema: dict[str, Any]) -> None:
    # These keys are left out of frames that do not carry them; they are never null.
    schema.pop("default", None)


def _detail(description: str) -> Any:
    return Field(default=None, description=description, json_schema_extra=_absent_unless_set)


class ServerData(BaseModel):
    # Outbound: documents the keys the server writes; unknown keys may be added later (section 3).
    model_config = ConfigDict(frozen=True, populate_by_name=True)


class UserRef(ServerData):
    id: int
    username: str


class WelcomeUser(UserRef):
    is_staff: bool


# -- pushes -------------------------------------------------------------------------------


class SessionWelcomeData(ServerData):
    session_id: str = Field(description="this session's id (UUID), also in logs and the admin")
    user: WelcomeUser
    server: str = Field(description="the server process's REALTIME_SERVER_ID")
    protocol: int = Field(description="protocol version")
    heartbeat_interval: float = Field(description="seconds between the server's transport pings")
    idle_timeout: float = Field(description="seconds without a client frame before close 4408")
    max_message_bytes: int
    token_expires_at: str = Field(description="ISO 8601 UTC, e.g. 2026-11-24T12:00:00Z")


class MessageData(ServerData):
    id: str | None = Field(description="the publisher's message id (its idempotency key), or null")
    sender: UserRef
    text: str
    ts: str = Field(description="commit time, ISO 8601 UTC with milliseconds")


class ResourceUpdatedData(ServerData):
    id: int
    version: int
    data: dict[str, Any]
    updated_by: UserRef


class AnnouncementData(ServerData):
    text: str
    from_: UserRef = Field(alias="from")
    ts: str


class AuthExpiringData(ServerData):
    expires_in: int = Field(description="seconds until the access token expires; send auth.refresh")


class FlowPauseData(ServerData):
    retry_after_ms: int


class EmptyData(ServerData):
    pass


class BrokerDownData(ServerData):
    broker: Literal["unavailable"]


class BrokerUpData(ServerData):
    broker: Literal["ok"]


class StreamResetData(ServerData):
    stream: str
    offset: int = Field(description="events up to this offset were skipped; reload, then follow from here")
    epoch: str
    recovered: Literal[False]


class SkippedData(ServerData):
    reason: Literal["unrenderable"]


class PresenceUser(UserRef):
    sessions: int = Field(description="the user's sessions subscribed to the stream, on every server")
    meta: dict[str, Any] | None = Field(description="what the user last set with stream.presence meta, or null")


class PresenceStateData(ServerData):
    stream: str
    users: list[PresenceUser] = Field(description="every member present now, by id")
    degraded: bool = Field(description="true while the broker is away: other servers' members may be stale")


class PresenceJoinData(ServerData):
    stream: str
    users: list[PresenceUser] = Field(description="members who joined (or changed their meta) in the last interval")


class PresenceLeaveData(ServerData):
    stream: str
    users: list[UserRef] = Field(description="members whose last session left in the last interval")


class SignalData(ServerData):
    stream: str
    from_: UserRef = Field(alias="from")
    data: Any = Field(description="the sender's payload, as sent (at most 1024 bytes as JSON)")


@dataclass(frozen=True, slots=True)
class PushSpec:
    name: str
    data: type[ServerData]
    description: str
    # True: the frame carries the stream's ``stream`` and ``offset`` at the top level.
    in_stream: bool = False


PUSHES: dict[str, PushSpec] = {
    spec.name: spec
    for spec in (
        PushSpec("session.welcome", SessionWelcomeData, "The first frame of every accepted connection."),
        PushSpec("message.new", MessageData, "A message published to a room stream.", in_stream=True),
        PushSpec("message.direct", MessageData, "A direct message, on the recipient's user:ID stream.", in_stream=True),
        PushSpec("resource.updated", ResourceUpdatedData, "A resource's new version, on resource:ID.", in_stream=True),
        PushSpec(
            "system.skipped",
            SkippedData,
            "Placeholder for a stored event that cannot be rendered: its offset is used, its data is lost.",
            in_stream=True,
        ),
        PushSpec(
            "stream.reset",
            StreamResetData,
            "The subscription missed events it cannot replay: reload the stream, as after recovered:false.",
        ),
        PushSpec(
            "presence.state",
            PresenceStateData,
            "Every member present in a presence-enabled stream: right after the subscribe ack, and when the "
            "broker is lost or back.",
        ),
        PushSpec("presence.join", PresenceJoinData, "Members who joined the stream, coalesced per interval."),
        PushSpec("presence.leave", PresenceLeaveData, "Members who left the stream, coalesced per interval."),
        PushSpec("stream.signal", SignalData, "An ephemeral signal from another subscriber: not stored, not replayed."),
        PushSpec("system.announcement", AnnouncementData, "An announcement from staff to every open session."),
        PushSpec("auth.expiring", AuthExpiringData, "Sent shortly before the access token expires."),
        PushSpec("flow.pause", FlowPauseData, "Sending too fast: wait before sending more (section 9)."),
        PushSpec("flow.resume", EmptyData, "Sending may resume."),
        PushSpec("system.degraded", BrokerDownData, "The broker is lost; events are still committed (section 8)."),
        PushSpec("system.recovered", BrokerUpData, "The broker is back; subscriptions catch up by themselves."),
    )
}


# -- acks ---------------------------------------------------------------------------------


class PingAck(ServerData):
    ts: Any = _detail("the ping's ts, when it had one")


class AuthRefreshAck(ServerData):
    token_expires_at: str


class SubscribeAck(ServerData):
    stream: str
    offset: int = Field(description="the stream's head when subscribed")
    epoch: str
    recovered: bool = Field(description="false: since/epoch could not be resumed, reload")


class UnsubscribeAck(ServerData):
    stream: str


class PushFrame(ServerData):
    event: str
    stream: str
    offset: int
    data: dict[str, Any]


class HistoryAck(ServerData):
    stream: str
    events: list[PushFrame] = Field(description="each exactly the push frame subscribers received, oldest first")
    more: bool


class PublishAck(ServerData):
    stream: str
    offset: int


class ResourceAck(ServerData):
    id: int
    version: int
    data: dict[str, Any]


class ResourceUpdateAck(ServerData):
    id: int
    version: int


class SignalAck(ServerData):
    stream: str


class AnnounceAck(ServerData):
    delivered_to: int


class KickAck(ServerData):
    closed: int


# None: the ack data is the request's data, whatever object it was.
ACKS: dict[str, type[ServerData] | None] = {
    "ping": PingAck,
    "echo": None,
    "auth.refresh": AuthRefreshAck,
    "stream.subscribe": SubscribeAck,
    "stream.unsubscribe": UnsubscribeAck,
    "stream.history": HistoryAck,
    "stream.presence": PresenceStateData,
    "stream.signal": SignalAck,
    "message.send": PublishAck,
    "message.direct": PublishAck,
    "resource.get": ResourceAck,
    "resource.update": ResourceUpdateAck,
    "admin.announce": AnnounceAck,
    "admin.kick": KickAck,
}


class ErrorData(ServerData):
    """An ``error`` reply's data: ``code`` and ``message``, plus the details its code carries
    (absent for the other codes)."""

    code: ErrorCode
    message: str
    fields: dict[str, str] | SkipJsonSchema[None] = _detail("validation_error: dotted field -> reason")
    expected: int | SkipJsonSchema[None] = _detail("sequence_gap: the next seq the server wants")
    limit: str | SkipJsonSchema[None] = _detail("limit_exceeded: the setting that was reached")
    processed: bool | SkipJsonSchema[None] = _detail(
        "limit_exceeded for a retransmission: the message was processed, only its cached reply is gone"
    )
    current_version: int | SkipJsonSchema[None] = _detail("conflict: the stored version")
    current_data: dict[str, Any] | SkipJsonSchema[None] = _detail("conflict: the stored data")
