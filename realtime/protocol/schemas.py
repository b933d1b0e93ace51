"""Declarative schemas for each client event's ``data`` (PROTOCOL.md section 4).

Inbound models ignore unknown keys (section 3) and are strict about types: ``"3"``
is not a version number. :func:`validation_fields` turns pydantic's errors into
the ``fields`` map of a ``validation_error``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_TEXT_LENGTH = 65_536
MAX_TOKEN_LENGTH = 8192


class ClientData(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class PingData(ClientData):
    ts: Any = None


class AuthRefreshData(ClientData):
    token: Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_LENGTH)]


# Stream names are checked in the handler against the declared namespaces
# (realtime/namespaces.py), which know the rules of each; here they only need to be strings.
StreamField = Annotated[str, Field(min_length=1, max_length=200)]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_LENGTH)]
Offset = Annotated[int, Field(ge=0, le=2**63 - 1)]
ResourceId = Annotated[int, Field(ge=1, le=2**63 - 1)]
MAX_HISTORY_LIMIT = 1000


class StreamSubscribeData(ClientData):
    stream: StreamField
    since: Offset | None = None
    epoch: Annotated[str, Field(max_length=64)] | None = None
    # Opt in to presence.state/join/leave and stream.signal pushes (presence-enabled streams).
    presence: bool = False


class StreamUnsubscribeData(ClientData):
    stream: StreamField


class StreamHistoryData(ClientData):
    stream: StreamField
    since: Offset
    limit: Annotated[int, Field(ge=1, le=MAX_HISTORY_LIMIT)] = 100


class MessageSendData(ClientData):
    stream: StreamField
    text: Text


class MessageDirectData(ClientData):
    to: Annotated[str, Field(min_length=1, max_length=150)]
    text: Text


class ResourceGetData(ClientData):
    id: ResourceId


class ResourceUpdateData(ClientData):
    id: ResourceId
    version: Annotated[int, Field(ge=1, le=2**31 - 1)]
    data: dict[str, Any]


class AdminAnnounceData(ClientData):
    text: Text


class AdminKickData(ClientData):
    username: Annotated[str, Field(min_length=1, max_length=150)]
    reason: Annotated[str, Field(max_length=100)] | None = None


class StreamPresenceData(ClientData):
    stream: StreamField
    # Set this user's presence metadata in the stream (a subscriber only); size checked in the handler.
    meta: dict[str, Any] | None = None


class StreamSignalData(ClientData):
    stream: StreamField
    data: Any  # any JSON value, at most SIGNAL_MAX_BYTES serialized (checked in the handler)


_REASONS = {
    "missing": "required",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "dict_type": "must be an object",
    "list_type": "must be an array",
    "bool_type": "must be a boolean",
    "string_too_short": "too short",
    "string_too_long": "too long",
    "string_pattern_mismatch": "invalid format",
    "greater_than_equal": "too small",
    "less_than_equal": "too large",
    "int_from_float": "must be an integer",
    "missing_argument": "required",
}


def validation_fields(exc: ValidationError) -> dict[str, str]:
    fields: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_input=False):
        path = ".".join(str(part) for part in error["loc"]) or "data"
        fields.setdefault(path, _REASONS.get(error["type"], error["msg"]))
    return fields
