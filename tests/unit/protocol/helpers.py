"""Small helpers shared by the protocol unit tests: build frames, read replies."""

from __future__ import annotations

import json
from typing import Any

from realtime.protocol.session import Command, Immediate, ProtocolSession


def frame(**fields: Any) -> str:
    """A client text frame holding exactly ``fields`` as one JSON object."""
    return json.dumps(fields)


def reply_of(outcome: Command | Immediate) -> dict[str, Any]:
    """The parsed reply of an outcome that must be an :class:`Immediate`."""
    assert isinstance(outcome, Immediate), f"expected an immediate reply, got {outcome!r}"
    parsed = json.loads(outcome.reply)
    assert isinstance(parsed, dict)
    return parsed


def error_code(outcome: Command | Immediate) -> str:
    reply = reply_of(outcome)
    assert reply["event"] == "error", reply
    return str(reply["data"]["code"])


def ping(session: ProtocolSession, seq: int | None = None, ref: str | None = None) -> dict[str, Any]:
    """Send a ping and, when it becomes a command, complete it the way the ping handler does."""
    fields: dict[str, Any] = {"event": "ping"}
    if ref is not None:
        fields["id"] = ref
    if seq is not None:
        fields["seq"] = seq
    outcome = session.receive_text(frame(**fields))
    if isinstance(outcome, Command):
        reply: dict[str, Any] = json.loads(session.complete(outcome, {}))
        return reply
    return reply_of(outcome)
