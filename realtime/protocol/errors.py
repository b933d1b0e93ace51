"""Error codes and the exceptions that carry them (PROTOCOL.md section 5).

Every failure that reaches a client is a :class:`ProtocolError`; one renderer
(:func:`realtime.protocol.envelope.render_error`) turns it into an ``error`` frame.
Anything else raised by a handler is reported as ``internal_error`` with no details.

    ProtocolError
    ├── EmptyMessage          empty_message
    ├── InvalidJson           invalid_json
    ├── InvalidEnvelope       invalid_envelope
    ├── UnsupportedFrame      unsupported_frame
    ├── UnknownEvent          unknown_event
    ├── ValidationFailed      validation_error  (+ fields)
    ├── Forbidden             forbidden
    ├── NotFound              not_found
    ├── Conflict              conflict          (+ current_version, current_data)
    ├── SequenceGap           sequence_gap      (+ expected)
    ├── RateLimited           rate_limited
    ├── LimitExceeded         limit_exceeded    (+ limit)
    └── InternalError         internal_error
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar


class ErrorCode(StrEnum):
    EMPTY_MESSAGE = "empty_message"
    INVALID_JSON = "invalid_json"
    INVALID_ENVELOPE = "invalid_envelope"
    UNSUPPORTED_FRAME = "unsupported_frame"
    UNKNOWN_EVENT = "unknown_event"
    VALIDATION_ERROR = "validation_error"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    SEQUENCE_GAP = "sequence_gap"
    RATE_LIMITED = "rate_limited"
    LIMIT_EXCEEDED = "limit_exceeded"
    INTERNAL_ERROR = "internal_error"


class ProtocolError(Exception):
    """A failure reported to the client as an ``error`` frame; the connection stays open."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL_ERROR
    default_message: ClassVar[str] = "internal error"

    def __init__(self, message: str | None = None, **data: Any) -> None:
        self.message = message or self.default_message
        self.data = data
        super().__init__(self.message)

    def payload(self) -> dict[str, Any]:
        return {"code": self.code.value, "message": self.message, **self.data}


class EmptyMessage(ProtocolError):
    code = ErrorCode.EMPTY_MESSAGE
    default_message = "empty message"


class InvalidJson(ProtocolError):
    code = ErrorCode.INVALID_JSON
    default_message = "message is not valid JSON"


class InvalidEnvelope(ProtocolError):
    code = ErrorCode.INVALID_ENVELOPE
    default_message = "message is not a valid envelope"


class UnsupportedFrame(ProtocolError):
    code = ErrorCode.UNSUPPORTED_FRAME
    default_message = "binary frames are not supported; send JSON text frames"


class UnknownEvent(ProtocolError):
    code = ErrorCode.UNKNOWN_EVENT
    default_message = "unknown event"


class ValidationFailed(ProtocolError):
    """``fields`` maps each offending field (dotted path inside ``data``) to a short reason."""

    code = ErrorCode.VALIDATION_ERROR
    default_message = "invalid data"

    def __init__(self, message: str | None = None, *, fields: dict[str, str]) -> None:
        super().__init__(message, fields=fields)


class Forbidden(ProtocolError):
    code = ErrorCode.FORBIDDEN
    default_message = "not allowed"


class NotFound(ProtocolError):
    code = ErrorCode.NOT_FOUND
    default_message = "not found"


class Conflict(ProtocolError):
    code = ErrorCode.CONFLICT
    default_message = "stale version"

    def __init__(self, *, current_version: int, current_data: Any) -> None:
        super().__init__(None, current_version=current_version, current_data=current_data)


class SequenceGap(ProtocolError):
    code = ErrorCode.SEQUENCE_GAP
    default_message = "sequence gap: resend from the expected seq"

    def __init__(self, *, expected: int) -> None:
        super().__init__(f"sequence gap: expected seq {expected}", expected=expected)


class RateLimited(ProtocolError):
    code = ErrorCode.RATE_LIMITED
    default_message = "rate limited: wait for flow.resume"


class LimitExceeded(ProtocolError):
    """A per-connection limit of section 11 would be passed; ``limit`` names its setting."""

    code = ErrorCode.LIMIT_EXCEEDED
    default_message = "limit exceeded"

    def __init__(self, message: str | None = None, *, limit: str, **data: object) -> None:
        super().__init__(message, limit=limit, **data)


class InternalError(ProtocolError):
    code = ErrorCode.INTERNAL_ERROR
    default_message = "internal error"
