"""Client events declared in Python: one registry of name, schema, handler, staff-only and
idempotent (issues 16 and 20).

Every client event, the contract's and a project's own, is declared once with
:func:`client_event` on its handler::

    @client_event("todo.create", schema=TodoCreate, idempotent=True)
    async def todo_create(conn: ClientConnection, data: TodoCreate, ref: str | None) -> dict[str, Any]:
        ...

The protocol's event table (validation, unknown events, staff-only, the AsyncAPI
document, metric labels, the docs check) is derived from these declarations, so an event
without a handler cannot exist. Names and duplicates are checked when the declaration
runs; the contract's events must all be declared, and nothing can be added once apps are
ready (:meth:`EventRegistry.freeze`, called by ``RealtimeConfig.ready``). A project's
declarations live in its apps' ``realtime_events.py`` (or ``realtime_streams.py``), which
are imported then.

How a handler's outcome reaches the client: its return value is the ``ack`` data; a
:class:`~realtime.protocol.errors.ProtocolError` it raises is that error; any other
exception is ``internal_error``, logged with its traceback, and the connection stays open.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

from django.core.exceptions import ImproperlyConfigured
from pydantic import BaseModel

from realtime.protocol.events import CONTRACT_EVENTS, EventSpec

__all__ = ["ClientConnection", "ClientEvent", "EventRegistry", "client_event", "protocol_table", "registry"]


class ClientConnection(Protocol):
    """What a handler may use of the connection that sent the event."""

    @property
    def user(self) -> Any:
        """The authenticated user (a ``accounts.User``); ``user.is_staff`` is kept current."""

    @property
    def connection_id(self) -> str:
        """The session id of the welcome, and ``conn`` in the connection's log lines."""

    async def publish(self, stream: str, event: str, data: dict[str, Any], *, id: str | None = None) -> int:
        """``realtime.apublish``: append to ``stream`` (server side, no sender) and return the offset."""


Handler = Callable[[Any, Any, str | None], Awaitable[Any]]
H = TypeVar("H", bound=Handler)


@dataclass(frozen=True, slots=True)
class ClientEvent:
    spec: EventSpec
    handler: Handler


class EventRegistry:
    def __init__(self, required: frozenset[str] = CONTRACT_EVENTS) -> None:
        self._required = required
        self._events: dict[str, ClientEvent] = {}
        self._specs: dict[str, EventSpec] = {}
        self._handlers: dict[str, Handler] = {}
        self.frozen = False
        # Live read-only views: the consumer and the protocol see every declaration.
        self.specs: Mapping[str, EventSpec] = MappingProxyType(self._specs)
        self.handlers: Mapping[str, Handler] = MappingProxyType(self._handlers)

    def register(
        self,
        name: str,
        handler: Handler,
        *,
        schema: type[BaseModel] | None = None,
        staff_only: bool = False,
        idempotent: bool = False,
    ) -> ClientEvent:
        where = f"{getattr(handler, '__module__', '?')}.{getattr(handler, '__qualname__', handler)!s}"
        if self.frozen:
            raise ImproperlyConfigured(
                f"client event {name!r} ({where}) declared after apps were ready: "
                "declare events in an app's realtime_events.py"
            )
        try:
            spec = EventSpec(name, schema, staff_only=staff_only, idempotent=idempotent)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{exc} ({where})") from None
        if name in self._events:
            first = self._events[name].handler
            raise ImproperlyConfigured(
                f"client event {name!r} is declared twice: {where} and "
                f"{getattr(first, '__module__', '?')}.{getattr(first, '__qualname__', first)!s}"
            )
        if schema is not None and not (isinstance(schema, type) and issubclass(schema, BaseModel)):
            raise ImproperlyConfigured(f"client event {name!r}: schema must be a pydantic model class ({where})")
        if not inspect.iscoroutinefunction(handler):
            raise ImproperlyConfigured(f"client event {name!r}: the handler must be an async def ({where})")
        event = ClientEvent(spec, handler)
        self._events[name] = event
        self._specs[name] = spec
        self._handlers[name] = handler
        return event

    def freeze(self) -> None:
        """No more declarations; every contract event must have its handler by now."""
        missing = sorted(self._required - self._events.keys())
        if missing:
            raise ImproperlyConfigured(f"client events of the contract without a handler: {', '.join(missing)}")
        self.frozen = True

    def __contains__(self, name: object) -> bool:
        return name in self._events

    def __getitem__(self, name: str) -> ClientEvent:
        return self._events[name]

    def __iter__(self) -> Any:
        return iter(self._events)

    def __len__(self) -> int:
        return len(self._events)

    def builtin(self) -> Mapping[str, EventSpec]:
        """The events the realtime package itself declares: the contract that docs/protocol.md
        documents (a project's own events are documented by the project)."""
        return {
            name: event.spec
            for name, event in self._events.items()
            if str(getattr(event.handler, "__module__", "")).startswith("realtime.")
        }


registry = EventRegistry()


def client_event(
    name: str, *, schema: type[BaseModel] | None = None, staff_only: bool = False, idempotent: bool = False
) -> Callable[[H], H]:
    """Declare the client event ``name`` handled by the decorated ``async def (conn, data, ref)``.

    ``schema``: the pydantic model ``data`` is validated against (None: any object, passed
    as a dict); ``staff_only``: others get ``forbidden`` before the handler runs;
    ``idempotent``: the handler gives the same outcome when a client sends the same
    message again after a reconnect (published in the AsyncAPI document).
    """

    def declare(handler: H) -> H:
        registry.register(name, handler, schema=schema, staff_only=staff_only, idempotent=idempotent)
        return handler

    return declare


def protocol_table() -> Mapping[str, EventSpec]:
    """The event table the protocol validates against: derived from the declarations."""
    return registry.specs
