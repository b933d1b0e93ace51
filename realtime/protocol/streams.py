"""Stream names and who may use them (PROTOCOL.md section 4)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import StrEnum

from realtime.protocol.errors import ValidationFailed

_ROOM_NAME = re.compile(r"[a-z0-9_-]{1,64}")
_ID = re.compile(r"[1-9][0-9]{0,18}")


class StreamKind(StrEnum):
    ROOM = "room"
    USER = "user"
    RESOURCE = "resource"


@dataclass(frozen=True, slots=True)
class StreamName:
    kind: StreamKind
    key: str

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.key}"

    @property
    def group(self) -> str:
        """The channel-layer group of this stream (fits the layer's name rules and length limit)."""
        return f"stream.{self.kind.value}.{self.key}"

    @classmethod
    def parse(cls, value: object, field: str = "stream") -> StreamName:
        if not isinstance(value, str):
            raise ValidationFailed(f"data.{field}: must be a string", fields={field: "must be a string"})
        return _parse(value, field)

    def readable_by(self, user_id: int) -> bool:
        """Only user ID reads ``user:ID``; rooms and resources are open to every authenticated user."""
        return self.kind != StreamKind.USER or self.key == str(user_id)

    @staticmethod
    def room(name: str) -> StreamName:
        return StreamName(StreamKind.ROOM, name)

    @staticmethod
    def user(user_id: int) -> StreamName:
        return StreamName(StreamKind.USER, str(user_id))

    @staticmethod
    def resource(resource_id: int) -> StreamName:
        return StreamName(StreamKind.RESOURCE, str(resource_id))


# Every subscribe and publish parses a name, and clients repeat a few names: the profile had
# parsing (regex, enum lookup) at 3-4 % of both paths. A StreamName is an immutable value,
# so results are cached; a rejected name raises every time (exceptions are not cached).
@functools.lru_cache(maxsize=4096)
def _parse(value: str, field: str) -> StreamName:
    kind, sep, key = value.partition(":")
    valid = sep == ":" and (
        (kind == StreamKind.ROOM and _ROOM_NAME.fullmatch(key) is not None)
        or (kind in (StreamKind.USER, StreamKind.RESOURCE) and _ID.fullmatch(key) is not None)
    )
    if not valid:
        raise ValidationFailed(
            f"data.{field}: expected room:NAME ([a-z0-9_-]{{1,64}}), user:ID or resource:ID",
            fields={field: "invalid stream name"},
        )
    return StreamName(StreamKind(kind), key)
