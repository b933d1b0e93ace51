"""The shape of a client event: name, data schema, staff-only, idempotent (issue 20).

The protocol core knows what an event *is*, not which events exist: the table of events
is built outside it (``realtime/client_events.py``, one declaration per event with its
handler) and handed to :class:`~realtime.protocol.session.ProtocolSession`. Names are
looked up in that table and nowhere else; they never reach ``getattr``. Checks that need
the database (stream ownership) live in the handlers; ``staff_only`` is what can be
decided from the user alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from pydantic import BaseModel

# Dotted lowercase segments, as in section 3; the replies' own names are never events.
EVENT_NAME = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")
MAX_EVENT_NAME_LENGTH = 64
RESERVED_EVENT_NAMES = frozenset({"ack", "error"})

# The client events of the contract (docs/protocol.md section 4): every one must be
# declared with its handler, or the registry refuses to start.
CONTRACT_EVENTS = frozenset(
    {
        "ping",
        "echo",
        "auth.refresh",
        "stream.subscribe",
        "stream.unsubscribe",
        "stream.history",
        "stream.presence",
        "stream.signal",
        "message.send",
        "message.direct",
        "resource.get",
        "resource.update",
        "admin.announce",
        "admin.kick",
    }
)


def event_name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a client event, or None when it can."""
    if not isinstance(name, str):
        return "must be a string"
    if len(name) > MAX_EVENT_NAME_LENGTH or not EVENT_NAME.fullmatch(name):
        return f"must be dotted lowercase ([a-z][a-z0-9_]* segments joined by '.'), at most {MAX_EVENT_NAME_LENGTH}"
    if name in RESERVED_EVENT_NAMES:
        return "is the name of a reply"
    return None


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One client event. ``schema`` None: ``data`` is any object and reaches the handler as
    the parsed dict. ``idempotent``: processing the same message twice (the client's retry
    of an ``id`` after a reconnect) has the effect of processing it once."""

    name: str
    schema: type[BaseModel] | None
    staff_only: bool = False
    idempotent: bool = False

    def __post_init__(self) -> None:
        problem = event_name_problem(self.name)
        if problem is not None:
            raise ValueError(f"client event name {self.name!r} {problem}")


def event_table(specs: Iterable[EventSpec]) -> Mapping[str, EventSpec]:
    """A read-only name -> spec table; a name given twice is refused."""
    table: dict[str, EventSpec] = {}
    for spec in specs:
        if spec.name in table:
            raise ValueError(f"client event {spec.name!r} is declared twice")
        table[spec.name] = spec
    return MappingProxyType(table)
