"""Client envelopes in, server frames out (PROTOCOL.md section 3).

``parse_envelope`` never raises: it returns an :class:`Envelope` or a
:class:`Rejected` that carries the error and whatever ``id``/``seq`` could be read,
so the error reply can still name them. It is also the WebSocket door of
:mod:`~realtime.protocol.json_safety`: ``data`` that could not be stored, rendered or
replayed (too deep, U+0000, numbers out of range) is ``validation_error`` naming the
field, before any schema or handler sees it (orjson already refuses lone surrogates).
Rendering goes through orjson once per frame; a broadcast is rendered once and the same
text is sent to every subscriber.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from realtime.protocol.errors import EmptyMessage, InvalidEnvelope, InvalidJson, ProtocolError, ValidationFailed
from realtime.protocol.json_safety import MAX_JSON_DEPTH, NUL, dotted, json_problem

# The version a welcome announces; a client refuses a server whose major protocol differs.
PROTOCOL_VERSION = 1
MAX_ID_LENGTH = 64
MAX_SEQ = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Envelope:
    event: str
    id: str | None
    seq: int | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejected:
    error: ProtocolError
    ref: str | None = None
    seq: int | None = None


def _valid_id(value: object) -> bool:
    # The id is stored as the publish's idempotency key: U+0000 is refused by PostgreSQL.
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and "\x00" not in value


def _valid_seq(value: object) -> bool:
    # bool is an int subclass; `true` is not a sequence number.
    return type(value) is int and 0 <= value <= MAX_SEQ


def parse_envelope(text: str) -> Envelope | Rejected:
    if not text or text.isspace():
        return Rejected(EmptyMessage())
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return Rejected(InvalidJson(f"message is not valid JSON: {exc}"))
    if not isinstance(obj, dict):
        return Rejected(InvalidEnvelope("message must be a JSON object"))

    raw_id = obj.get("id")
    raw_seq = obj.get("seq")
    ref = raw_id if _valid_id(raw_id) else None
    seq = raw_seq if _valid_seq(raw_seq) else None

    event = obj.get("event")
    problem: str | None = None
    if event is None:
        problem = "event: required"
    elif not isinstance(event, str):
        problem = "event: must be a string"
    elif isinstance(raw_id, str) and "\x00" in raw_id:
        problem = f"id: {NUL}"
    elif raw_id is not None and ref is None:
        problem = f"id: must be a string of 1 to {MAX_ID_LENGTH} characters"
    elif raw_seq is not None and seq is None:
        problem = f"seq: must be an integer from 0 to {MAX_SEQ}"
    if problem is not None:
        return Rejected(InvalidEnvelope(problem), ref, seq)

    data = obj.get("data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        return Rejected(InvalidEnvelope("data: must be an object"), ref, seq)
    # orjson has already refused lone surrogates and non-finite numbers and read integers
    # beyond 64 bits as floats, so only depth and U+0000 remain; the raw text rules both out
    # for most frames in two C scans (brackets inside strings only make the count larger).
    suspect = "\\u0000" in text or text.count("{") + text.count("[") > MAX_JSON_DEPTH
    unsafe = json_problem(data) if suspect else None
    if unsafe is not None:
        path, reason = unsafe
        field = dotted(path)
        message = f"data.{field}: {reason}" if path else f"data: {reason}"
        return Rejected(ValidationFailed(message, fields={field: reason}), ref, seq)
    assert isinstance(event, str)
    return Envelope(event=event, id=ref, seq=seq, data=data)


def _dumps(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()


def render_ack(ref: str | None, seq: int | None, data: Any) -> str:
    frame: dict[str, Any] = {"event": "ack", "ref": ref}
    if seq is not None:
        frame["seq"] = seq
    frame["data"] = data
    return _dumps(frame)


def render_error(error: ProtocolError, ref: str | None = None, seq: int | None = None) -> str:
    frame: dict[str, Any] = {"event": "error", "ref": ref}
    if seq is not None:
        frame["seq"] = seq
    frame["data"] = error.payload()
    return _dumps(frame)


def render_push(event: str, data: Any, *, stream: str | None = None, offset: int | None = None) -> str:
    frame: dict[str, Any] = {"event": event}
    if stream is not None:
        frame["stream"] = stream
        frame["offset"] = offset
    frame["data"] = data
    return _dumps(frame)
