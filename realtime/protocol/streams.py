"""Stream names: ``PREFIX:KEY``, parsed against the declared namespaces (section 4, issue 16).

The protocol core owns the *syntax* only. A :class:`StreamSyntax` is a table of
:class:`StreamPattern` (a prefix and the pattern its keys match); the contract's three
(``room:``, ``user:``, ``resource:``) are the default. The namespace registry
(``realtime/namespaces.py``) builds the syntax of every declared namespace, with who may
subscribe and publish, and installs it with :func:`install_syntax` once apps are ready.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from realtime.protocol.errors import ValidationFailed

# A prefix and a key each fit the channel layer's group names ([a-zA-Z0-9_.-], under 100
# characters with "stream." and a dot): a namespace's own pattern can only narrow the key.
PREFIX = re.compile(r"[a-z][a-z0-9_]{0,19}")
KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_ID = r"[1-9][0-9]{0,18}"


class StreamKind(StrEnum):
    """The contract's namespaces; a parsed name of one of them carries the member as ``kind``."""

    ROOM = "room"
    USER = "user"
    RESOURCE = "resource"


@dataclass(frozen=True, slots=True)
class StreamPattern:
    """``prefix`` and the regular expression its keys must match in full; ``shape`` is how
    error messages spell it (``room:NAME ([a-z0-9_-]{1,64})``)."""

    prefix: str
    key: re.Pattern[str]
    shape: str

    @classmethod
    def of(cls, prefix: str, key_pattern: str, shape: str = "") -> StreamPattern:
        if not PREFIX.fullmatch(prefix):
            raise ValueError(f"stream prefix {prefix!r} must match {PREFIX.pattern}")
        try:
            compiled = re.compile(key_pattern)
        except re.error as exc:
            raise ValueError(f"key pattern of {prefix}: is not a regular expression: {exc}") from None
        return cls(prefix, compiled, shape or f"{prefix}:{key_pattern}")


CONTRACT_PATTERNS = (
    StreamPattern.of("room", r"[a-z0-9_-]{1,64}", "room:NAME ([a-z0-9_-]{1,64})"),
    StreamPattern.of("user", _ID, "user:ID"),
    StreamPattern.of("resource", _ID, "resource:ID"),
)


@dataclass(frozen=True, slots=True)
class StreamName:
    kind: str  # the prefix; a StreamKind member for the contract's namespaces
    key: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.key}"

    @property
    def group(self) -> str:
        """The channel-layer group of this stream (fits the layer's name rules and length limit)."""
        return f"stream.{self.kind}.{self.key}"

    @classmethod
    def parse(cls, value: object, field: str = "stream") -> StreamName:
        if not isinstance(value, str):
            raise ValidationFailed(f"data.{field}: must be a string", fields={field: "must be a string"})
        return _syntax.parse(value, field)

    def readable_by(self, user_id: int) -> bool:
        """Only user ID reads ``user:ID``; other streams are decided by their namespace."""
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


class StreamSyntax:
    """The stream names of a set of namespaces. Parsing is on every subscribe and publish and
    clients repeat a few names, so results are cached per syntax (docs/performance.md, profiling
    notes); a rejected name raises every time (exceptions are not cached)."""

    def __init__(self, patterns: Iterable[StreamPattern]) -> None:
        self.patterns: dict[str, StreamPattern] = {}
        for pattern in patterns:
            if pattern.prefix in self.patterns:
                raise ValueError(f"stream namespace {pattern.prefix}: is declared twice")
            self.patterns[pattern.prefix] = pattern
        self._kinds = {kind.value: kind for kind in StreamKind}
        self.parse = functools.lru_cache(maxsize=4096)(self._parse)

    def _parse(self, value: str, field: str) -> StreamName:
        prefix, sep, key = value.partition(":")
        pattern = self.patterns.get(prefix) if sep else None
        if pattern is None:
            known = ", ".join(f"{name}:" for name in self.patterns)
            reason = f"unknown stream namespace {prefix[:24]!r}" if sep else "expected PREFIX:KEY"
            raise ValidationFailed(f"data.{field}: {reason} (known: {known})", fields={field: "invalid stream name"})
        if KEY.fullmatch(key) is None or pattern.key.fullmatch(key) is None:
            raise ValidationFailed(f"data.{field}: expected {pattern.shape}", fields={field: "invalid stream name"})
        return StreamName(self._kinds.get(prefix, prefix), key)


_syntax = StreamSyntax(CONTRACT_PATTERNS)


def install_syntax(syntax: StreamSyntax) -> None:
    """Parse every later name with ``syntax`` (the namespace registry calls this once apps are ready)."""
    global _syntax
    _syntax = syntax


def current_syntax() -> StreamSyntax:
    return _syntax
