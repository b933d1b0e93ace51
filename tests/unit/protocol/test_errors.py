"""realtime.protocol.errors: the error codes of PROTOCOL.md section 5 and their payloads."""

from __future__ import annotations

import inspect
import json

import pytest

from realtime.protocol import errors
from realtime.protocol.envelope import render_error
from realtime.protocol.errors import (
    Conflict,
    EmptyMessage,
    ErrorCode,
    Forbidden,
    InternalError,
    InvalidEnvelope,
    InvalidJson,
    NotFound,
    ProtocolError,
    RateLimited,
    SequenceGap,
    UnknownEvent,
    UnsupportedFrame,
    ValidationFailed,
)

CONTRACT_CODES = {
    "empty_message",
    "invalid_json",
    "invalid_envelope",
    "unsupported_frame",
    "unknown_event",
    "validation_error",
    "forbidden",
    "not_found",
    "conflict",
    "sequence_gap",
    "rate_limited",
    "limit_exceeded",
    "internal_error",
}

SIMPLE = [
    (EmptyMessage, "empty_message"),
    (InvalidJson, "invalid_json"),
    (InvalidEnvelope, "invalid_envelope"),
    (UnsupportedFrame, "unsupported_frame"),
    (UnknownEvent, "unknown_event"),
    (Forbidden, "forbidden"),
    (NotFound, "not_found"),
    (RateLimited, "rate_limited"),
    (InternalError, "internal_error"),
]


def all_error_classes() -> list[type[ProtocolError]]:
    return [
        obj
        for obj in vars(errors).values()
        if inspect.isclass(obj) and issubclass(obj, ProtocolError) and obj is not ProtocolError
    ]


def test_error_codes_are_exactly_the_contract_codes():
    """Errors: the error code column of section 5, as wire strings"""
    assert {code.value for code in ErrorCode} == CONTRACT_CODES


def test_each_code_has_exactly_one_exception():
    """Errors: every code in section 5 has one ProtocolError subclass"""
    codes = [cls.code for cls in all_error_classes()]
    assert sorted(codes) == sorted(ErrorCode)


@pytest.mark.parametrize(("cls", "code"), SIMPLE)
def test_simple_errors_payload_is_code_and_message(cls, code):
    """Errors: each error reply's data has code and a human message"""
    error = cls()
    assert isinstance(error, ProtocolError)
    assert error.code == code
    payload = error.payload()
    assert payload == {"code": code, "message": cls.default_message}
    assert payload["message"]


@pytest.mark.parametrize(("cls", "code"), SIMPLE)
def test_custom_message_replaces_default(cls, code):
    """Errors: an error names what went wrong in its message"""
    error = cls("event: required")
    assert error.payload() == {"code": code, "message": "event: required"}
    assert str(error) == "event: required"


def test_validation_error_names_each_field():
    """Errors: validation_error -> fields names each offending field"""
    error = ValidationFailed("data.text: required", fields={"text": "required", "stream": "must be a string"})
    assert error.payload() == {
        "code": "validation_error",
        "message": "data.text: required",
        "fields": {"text": "required", "stream": "must be a string"},
    }


def test_validation_error_requires_fields():
    """Errors: validation_error -> fields is always present"""
    with pytest.raises(TypeError):
        ValidationFailed("no fields")  # type: ignore[call-arg]


def test_sequence_gap_carries_expected():
    """Errors: sequence_gap -> data.expected is the next seq the server wants"""
    payload = SequenceGap(expected=42).payload()
    assert payload["code"] == "sequence_gap"
    assert payload["expected"] == 42
    assert "42" in payload["message"]


def test_conflict_carries_current_version_and_data():
    """Errors: conflict -> stale version (section 7), with the current version and data"""
    payload = Conflict(current_version=3, current_data={"title": "x"}).payload()
    assert payload == {
        "code": "conflict",
        "message": Conflict.default_message,
        "current_version": 3,
        "current_data": {"title": "x"},
    }


def test_base_protocol_error_is_internal_error():
    """Errors: internal_error -> anything without its own code"""
    assert ProtocolError().payload() == {"code": "internal_error", "message": "internal error"}


@pytest.mark.parametrize("cls", all_error_classes())
def test_every_error_renders_as_an_error_frame(cls):
    """Errors: every code reaches the client as one error frame with ref (connection stays open)"""
    kwargs: dict[str, object] = {}
    if cls is ValidationFailed:
        kwargs = {"fields": {"x": "required"}}
    elif cls is SequenceGap:
        kwargs = {"expected": 1}
    elif cls is Conflict:
        kwargs = {"current_version": 1, "current_data": None}
    elif cls is errors.LimitExceeded:
        kwargs = {"limit": "REALTIME_MAX_SUBSCRIPTIONS"}
    frame = json.loads(render_error(cls(**kwargs), "r"))
    assert frame["event"] == "error"
    assert frame["ref"] == "r"
    assert frame["data"]["code"] == cls.code.value


def test_error_codes_are_str_compatible():
    """Errors: ErrorCode values are the wire strings"""
    assert str(ErrorCode.SEQUENCE_GAP) == "sequence_gap"
    assert f"{ErrorCode.INVALID_JSON}" == "invalid_json"
