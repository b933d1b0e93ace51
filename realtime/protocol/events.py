"""The registry of client events: name -> data schema and who may call it.

Client event names are looked up here and nowhere else; they never reach
``getattr``. Checks that need the database (stream ownership) live in the
handlers; the permission here is what can be decided from the user alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from realtime.protocol.schemas import (
    AdminAnnounceData,
    AdminKickData,
    AuthRefreshData,
    ClientData,
    MessageDirectData,
    MessageSendData,
    PingData,
    ResourceGetData,
    ResourceUpdateData,
    StreamHistoryData,
    StreamSubscribeData,
    StreamUnsubscribeData,
)


class Permission(Enum):
    AUTHENTICATED = "authenticated"
    STAFF = "staff"


@dataclass(frozen=True, slots=True)
class EventSpec:
    name: str
    # None: ``data`` is any object and reaches the handler as the parsed dict.
    schema: type[ClientData] | None
    permission: Permission = Permission.AUTHENTICATED


EVENTS: dict[str, EventSpec] = {
    spec.name: spec
    for spec in (
        EventSpec("ping", PingData),
        EventSpec("echo", None),
        EventSpec("auth.refresh", AuthRefreshData),
        EventSpec("stream.subscribe", StreamSubscribeData),
        EventSpec("stream.unsubscribe", StreamUnsubscribeData),
        EventSpec("stream.history", StreamHistoryData),
        EventSpec("message.send", MessageSendData),
        EventSpec("message.direct", MessageDirectData),
        EventSpec("resource.get", ResourceGetData),
        EventSpec("resource.update", ResourceUpdateData),
        EventSpec("admin.announce", AdminAnnounceData, Permission.STAFF),
        EventSpec("admin.kick", AdminKickData, Permission.STAFF),
    )
}
