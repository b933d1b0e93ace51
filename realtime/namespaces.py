"""Stream namespaces declared in Python (issue 16).

A namespace is a stream prefix with its rules: the pattern of its keys, who may subscribe,
who may publish from a client (or the server only), how long its history is kept, whether
it keeps presence, and its limits. Apps declare theirs in ``realtime_streams.py``, imported
when apps are ready (as ``admin.py`` is)::

    import realtime

    realtime.register_namespace(
        realtime.Namespace("todo", r"[1-9][0-9]{0,18}", can_subscribe=todo_list_member, retention=timedelta(days=7))
    )

``room:``, ``user:`` and ``resource:`` are declared the same way, in
``realtime/realtime_streams.py``. Once apps are ready the registry is frozen and its
syntax is installed in the protocol core, so every :meth:`StreamName.parse` knows exactly
the declared namespaces. :func:`resolve` is the one way from a client's or a caller's
string to ``(Namespace, StreamName)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from django.core.exceptions import ImproperlyConfigured

from realtime.protocol.streams import (
    CONTRACT_PATTERNS,
    StreamName,
    StreamPattern,
    StreamSyntax,
    install_syntax,
)
from realtime.streams.presence_view import install_presence_prefixes

__all__ = ["Namespace", "get", "namespaces", "register_namespace", "resolve"]

# (user, stream) -> allowed. May raise a ProtocolError (that error reaches the client).
Check = Callable[[Any, StreamName], bool]


def anyone(user: Any, stream: StreamName) -> bool:
    """Every authenticated user."""
    return True


@dataclass(frozen=True)
class Namespace:
    """One stream prefix and its rules.

    - ``prefix``: ``[a-z][a-z0-9_]{0,19}``; streams are ``prefix:KEY``.
    - ``key_pattern``: a regular expression KEY matches in full; keys are at most 64 of
      ``[A-Za-z0-9_.-]`` whatever the pattern says.
    - ``can_subscribe(user, stream) -> bool``: for ``stream.subscribe`` and ``stream.history``;
      None lets every authenticated user in. False is ``forbidden`` (``refusal`` is its
      message); a ProtocolError it raises reaches the client; anything else is
      ``internal_error``, logged. With ``uses_database`` (the default) the checks run in the
      connection's database thread and may use the ORM; without it they run on the event
      loop and must not block.
    - ``can_publish(user, stream) -> bool``: whether a client may publish with
      ``message.send``; None means the server only (``realtime.publish``), and clients get
      ``validation_error`` ``{"stream": "not a room"}``.
    - ``exists(stream) -> bool``: None means any key may be created by a subscribe or
      publish; otherwise a stream whose check is False is ``not_found`` (``missing`` is the
      message) and is never created. Always runs in the database thread.
    - ``retention``: how long ``prune_events`` keeps its events; None keeps them forever;
      ``"setting"`` follows ``REALTIME_RETENTION_HOURS`` (and ``--hours``).
    - ``presence``: whether the stream keeps presence (who is subscribed).
    - ``max_event_bytes``: the largest event data (UTF-8 JSON) a publish may carry; None: no
      limit of its own.
    """

    prefix: str
    key_pattern: str
    can_subscribe: Check | None = None
    can_publish: Check | None = None
    exists: Callable[[StreamName], bool] | None = None
    retention: timedelta | Literal["setting"] | None = "setting"
    presence: bool = False
    max_event_bytes: int | None = None
    uses_database: bool = True
    shape: str = ""
    refusal: str = "not allowed to subscribe to {stream}"
    missing: str = "{stream} does not exist"
    description: str = ""

    def __post_init__(self) -> None:
        self.pattern()  # refuses a bad prefix or pattern now, at declaration
        if isinstance(self.retention, timedelta) and self.retention <= timedelta(0):
            raise ImproperlyConfigured(f"namespace {self.prefix}: retention must be positive, or None for forever")
        if self.max_event_bytes is not None and self.max_event_bytes < 1:
            raise ImproperlyConfigured(f"namespace {self.prefix}: max_event_bytes must be at least 1")

    def pattern(self) -> StreamPattern:
        try:
            return StreamPattern.of(self.prefix, self.key_pattern, self.shape)
        except ValueError as exc:
            raise ImproperlyConfigured(str(exc)) from None

    @property
    def client_publishable(self) -> bool:
        return self.can_publish is not None


CONTRACT_PREFIXES = tuple(pattern.prefix for pattern in CONTRACT_PATTERNS)


class NamespaceRegistry:
    def __init__(self, required: tuple[str, ...] = CONTRACT_PREFIXES) -> None:
        self._required = required
        self._namespaces: dict[str, Namespace] = {}
        self.frozen = False
        self.syntax: StreamSyntax | None = None

    def register(self, namespace: Namespace) -> Namespace:
        if not isinstance(namespace, Namespace):
            raise ImproperlyConfigured(f"register_namespace takes a realtime.Namespace, not {type(namespace).__name__}")
        if self.frozen:
            raise ImproperlyConfigured(
                f"namespace {namespace.prefix}: declared after apps were ready: "
                "declare it in an app's realtime_streams.py"
            )
        if namespace.prefix in self._namespaces:
            raise ImproperlyConfigured(f"namespace {namespace.prefix}: is declared twice")
        self._namespaces[namespace.prefix] = namespace
        return namespace

    def freeze(self) -> StreamSyntax:
        """No more declarations; the contract's namespaces must be declared by now."""
        missing = [prefix for prefix in self._required if prefix not in self._namespaces]
        if missing:
            raise ImproperlyConfigured(f"stream namespaces of the contract not declared: {', '.join(missing)}")
        self.syntax = StreamSyntax(ns.pattern() for ns in self._namespaces.values())
        self.frozen = True
        return self.syntax

    def get(self, prefix: str) -> Namespace | None:
        return self._namespaces.get(prefix)

    def all(self) -> list[Namespace]:
        return list(self._namespaces.values())


registry = NamespaceRegistry()


def register_namespace(namespace: Namespace) -> Namespace:
    """Declare ``namespace`` (from an app's ``realtime_streams.py``); returns it."""
    return registry.register(namespace)


def freeze() -> None:
    """Called once by ``RealtimeConfig.ready``: the protocol then parses exactly these namespaces."""
    install_syntax(registry.freeze())
    install_presence_prefixes(frozenset(n.prefix for n in registry.all() if n.presence))


def get(prefix: str) -> Namespace | None:
    return registry.get(prefix)


def namespaces() -> list[Namespace]:
    return registry.all()


def resolve(name: object, field: str = "stream") -> tuple[Namespace, StreamName]:
    """The namespace and parsed name of ``name``; ``ValidationFailed`` naming ``field`` when
    it is not a string, names an unknown namespace, or its key breaks the pattern."""
    stream = StreamName.parse(name, field)
    namespace = registry.get(stream.kind)
    if namespace is None:  # parsed by a syntax installed before this registry was frozen
        raise ImproperlyConfigured(f"stream namespace {stream.kind}: is parsed but not declared")
    return namespace, stream
