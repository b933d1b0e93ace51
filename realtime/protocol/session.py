"""ProtocolSession: the protocol state of one connection, with no I/O (after websockets' Protocol).

The consumer feeds it every frame. :meth:`ProtocolSession.receive_text` settles
everything that needs no database (parse errors, unknown events, permissions,
schema validation, ``seq`` gaps and retransmissions) and returns either an
:class:`Immediate` reply or a :class:`Command` for a handler. The consumer then
renders the handler's outcome with :meth:`complete` or :meth:`fail`, which also
records the reply for retransmissions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from realtime.protocol.envelope import Envelope, Rejected, parse_envelope, render_ack, render_error
from realtime.protocol.errors import (
    Forbidden,
    InternalError,
    InvalidEnvelope,
    LimitExceeded,
    ProtocolError,
    SequenceGap,
    UnknownEvent,
    UnsupportedFrame,
    ValidationFailed,
)
from realtime.protocol.events import EventSpec
from realtime.protocol.schemas import validation_fields
from realtime.protocol.sequence import SequenceTracker, SeqVerdict

# The setting that bounds the retransmission cache's bytes (section 11), named in its error.
REPLY_CACHE_LIMIT = "REALTIME_MAX_REPLY_BYTES"


@dataclass(frozen=True, slots=True)
class Command:
    spec: EventSpec
    ref: str | None
    seq: int | None
    data: Any  # the validated schema instance, or the raw dict when the event has no schema

    @property
    def event(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class Immediate:
    """A reply decided without a handler; ``error`` and the envelope fields are for logging."""

    reply: str
    error: ProtocolError | None = None
    event: str | None = None
    ref: str | None = None
    seq: int | None = None


@dataclass(slots=True)
class ProtocolSession:
    """``events`` is the table of client events this connection accepts (injected: the
    protocol core holds none of its own)."""

    events: Mapping[str, EventSpec]
    is_staff: bool = False
    sequence: SequenceTracker = field(default_factory=SequenceTracker)

    def receive_text(self, text: str) -> Command | Immediate:
        parsed = parse_envelope(text)
        ref, seq = (parsed.ref, parsed.seq) if isinstance(parsed, Rejected) else (parsed.id, parsed.seq)

        if seq is not None:
            verdict = self.sequence.check(seq)
            if verdict is SeqVerdict.RETRANSMIT:
                return Immediate(self.sequence.cached_reply(seq))
            if verdict is SeqVerdict.EVICTED:
                # Processed already (so not again), but its reply no longer fits in the cache.
                evicted = LimitExceeded(
                    f"seq {seq} was processed; its reply was dropped from the retransmission cache for size",
                    limit=REPLY_CACHE_LIMIT,
                    processed=True,
                )
                return Immediate(render_error(evicted, ref, seq), evicted, _event_of(parsed), ref, seq)
            if verdict is not SeqVerdict.ACCEPT:
                assert self.sequence.expected is not None
                gap = SequenceGap(expected=self.sequence.expected)
                return Immediate(render_error(gap, ref, seq), gap, _event_of(parsed), ref, seq)
        elif self.sequence.in_use and isinstance(parsed, Envelope):
            expected = self.sequence.expected
            error = InvalidEnvelope(f"seq: required once the connection uses seq (expected {expected})")
            return Immediate(render_error(error, ref), error, parsed.event, ref)

        if isinstance(parsed, Rejected):
            return self._refuse(parsed.error, None, ref, seq)
        return self._command(parsed)

    def refuse_unprocessed(self, text: str, error: ProtocolError) -> Immediate:
        """Answer ``error`` without processing the message; its ``seq`` is not consumed.

        Used for ``rate_limited``: the client resends from the next expected ``seq``.
        """
        parsed = parse_envelope(text)
        ref, seq = (parsed.ref, parsed.seq) if isinstance(parsed, Rejected) else (parsed.id, parsed.seq)
        return Immediate(render_error(error, ref, seq), error, _event_of(parsed), ref, seq)

    def receive_bytes(self) -> Immediate:
        # A binary frame carries no envelope, so it has no ref or seq to answer with.
        error = UnsupportedFrame()
        return Immediate(render_error(error), error)

    def complete(self, command: Command, ack_data: Any) -> str:
        try:
            reply = render_ack(command.ref, command.seq, ack_data)
        except TypeError:
            # orjson writes at most 254 levels of nesting but reads 1024; an echo of
            # deeper data must still get its one reply.
            error = ValidationFailed("data: nested too deeply to send back", fields={"data": "nested too deeply"})
            return self._refuse(error, command.event, command.ref, command.seq).reply
        return self._record(command.seq, reply)

    def fail(self, command: Command, exc: BaseException) -> str:
        error = exc if isinstance(exc, ProtocolError) else InternalError()
        return self._refuse(error, command.event, command.ref, command.seq).reply

    def _command(self, envelope: Envelope) -> Command | Immediate:
        spec = self.events.get(envelope.event)
        if spec is None:
            unknown = UnknownEvent(f"unknown event: {envelope.event[:64]}")
            return self._refuse(unknown, envelope.event[:64], envelope.id, envelope.seq)
        if spec.staff_only and not self.is_staff:
            forbidden = Forbidden(f"{spec.name} is for staff only")
            return self._refuse(forbidden, spec.name, envelope.id, envelope.seq)
        data: Any = envelope.data
        if spec.schema is not None:
            try:
                data = spec.schema.model_validate(envelope.data)
            except ValidationError as exc:
                fields = validation_fields(exc)
                message = "; ".join(f"data.{name}: {reason}" for name, reason in fields.items())
                invalid = ValidationFailed(message, fields=fields)
                return self._refuse(invalid, spec.name, envelope.id, envelope.seq)
        return Command(spec=spec, ref=envelope.id, seq=envelope.seq, data=data)

    def _refuse(self, error: ProtocolError, event: str | None, ref: str | None, seq: int | None) -> Immediate:
        return Immediate(self._record(seq, render_error(error, ref, seq)), error, event, ref, seq)

    def _record(self, seq: int | None, reply: str) -> str:
        if seq is not None:
            self.sequence.record(seq, reply)
        return reply


def _event_of(parsed: Envelope | Rejected) -> str | None:
    return parsed.event[:64] if isinstance(parsed, Envelope) else None
