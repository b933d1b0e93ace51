"""Request and response shapes of the server HTTP API (``realtime/server_api.py``, issue 16).

Requests are checked here only for shape: present, of the right JSON type, no field the
endpoint does not know (a misspelt ``payload`` for ``data`` is a 400, not an event without
data). What a stream name, an event name, data or an id may be is decided by
``realtime.publish`` itself, so the HTTP API and Django code refuse exactly the same input.
The response serializers describe the JSON for ``/api/schema/`` only.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from realtime.protocol.schemas import MAX_HISTORY_LIMIT

# Streams one publish-many request may name (each is one row lock held to the commit).
MAX_PUBLISH_STREAMS = 100


class StrictCharField(serializers.CharField):
    """A JSON string as sent: ``5`` is not ``"5"`` and spaces are kept."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        value: str = super().to_internal_value(data)
        return value


class ClosedSerializer(serializers.Serializer[Any]):
    """Refuses fields it does not declare, each named: ``{"payload": ["unknown field"]}``."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(str(key) for key in data if key not in self.fields)
            if unknown:
                raise serializers.ValidationError({key[:100]: ["unknown field"] for key in unknown[:10]})
        return super().to_internal_value(data)


# A field called ``data`` shadows Serializer.data only for type checkers (see realtime/api.py).
class PublishSerializer(ClosedSerializer):
    stream = StrictCharField(help_text="a stream of a declared namespace: room:NAME, user:ID, resource:ID, ...")
    event = StrictCharField(help_text="dotted lowercase name, at most 64 characters, not the protocol's own")
    data = serializers.DictField(help_text="a JSON object, at most REALTIME_MAX_MESSAGE_BYTES")  # type: ignore[assignment]
    id = StrictCharField(
        required=False, help_text="idempotency key, 1 to 60 characters: a retry returns the first offset"
    )


class PublishManySerializer(ClosedSerializer):
    streams = serializers.ListField(
        child=StrictCharField(),
        allow_empty=False,
        max_length=MAX_PUBLISH_STREAMS,
        help_text=f"1 to {MAX_PUBLISH_STREAMS} distinct streams",
    )
    event = StrictCharField()
    data = serializers.DictField()  # type: ignore[assignment]
    id = StrictCharField(required=False, help_text="idempotency key, applied per stream")

    def validate_streams(self, streams: list[str]) -> list[str]:
        seen: set[str] = set()
        for stream in streams:
            if stream in seen:
                raise serializers.ValidationError(f"{stream[:80]!r} is named twice")
            seen.add(stream)
        return streams


class DisconnectSerializer(ClosedSerializer):
    reason = serializers.ChoiceField(
        choices=["kicked", "account_disabled"],
        default="kicked",
        help_text="close reason; the close code is 4403 for both",
    )


class HistoryQuery(serializers.Serializer[Any]):  # query parameters: ?format= stays DRF's
    since = serializers.IntegerField(min_value=0, max_value=2**63 - 1, default=0)
    limit = serializers.IntegerField(min_value=1, max_value=MAX_HISTORY_LIMIT, default=100)


# Responses (documentation only) -------------------------------------------------------------


class PublishedSerializer(serializers.Serializer[Any]):
    stream = serializers.CharField()
    offset = serializers.IntegerField(help_text="the event's offset in the stream")
    epoch = serializers.CharField(help_text="the stream's epoch: subscribe with since and epoch")


class PublishedManySerializer(serializers.Serializer[Any]):
    results = PublishedSerializer(many=True, help_text="one per stream, in the request's order")


class DisconnectedSerializer(serializers.Serializer[Any]):
    user_id = serializers.IntegerField()
    sessions = serializers.IntegerField(help_text="open sessions told to close, on every server")


class HistoryPageSerializer(serializers.Serializer[Any]):
    stream = serializers.CharField()
    events = serializers.ListField(
        child=serializers.DictField(), help_text="push frames {event, stream, offset, data}, oldest first"
    )
    more = serializers.BooleanField(help_text="events after this page exist: ask again with since=last offset")


class StreamInfoSerializer(serializers.Serializer[Any]):
    stream = serializers.CharField()
    offset = serializers.IntegerField(help_text="the stream's head: the offset of its last event")
    epoch = serializers.CharField()
    subscribers_here = serializers.IntegerField(help_text="subscriptions on the server that answered")


class ServerErrorSerializer(serializers.Serializer[Any]):
    """A 401, 403, 404, 413 or 429: ``detail`` says what, ``code`` says which."""

    detail = serializers.CharField()
    code = serializers.CharField(required=False)
    limit = serializers.CharField(required=False, help_text="the setting a 413 exceeded")


class ServerFieldErrorsSerializer(serializers.Serializer[Any]):
    """A 400: each offending field maps to a list of messages (``streams.3`` for the fourth
    stream of publish-many); a body that is not JSON gets ``detail`` instead."""

    detail = serializers.CharField(required=False)
    stream = serializers.ListField(child=serializers.CharField(), required=False)
    streams = serializers.ListField(child=serializers.CharField(), required=False)
    event = serializers.ListField(child=serializers.CharField(), required=False)
    data = serializers.ListField(child=serializers.CharField(), required=False)  # type: ignore[assignment]
    id = serializers.ListField(child=serializers.CharField(), required=False)


class PresenceMemberSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    username = serializers.CharField()
    sessions = serializers.IntegerField(help_text="the user's subscriptions of the stream, on every server")
    meta = serializers.DictField(allow_null=True, help_text="the metadata the user set last, or null")


class StreamPresenceSerializer(serializers.Serializer[Any]):
    stream = serializers.CharField()
    users = PresenceMemberSerializer(many=True, help_text="one per user present, by id")
    degraded = serializers.BooleanField(help_text="the broker is away: only this server's members are known")


class UserStatusSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    username = serializers.CharField()
    online = serializers.BooleanField(help_text="the user has an open session on a live server")
    sessions = serializers.IntegerField(help_text="open sessions on live servers")
    servers = serializers.ListField(child=serializers.CharField(), help_text="the servers holding them, sorted")
