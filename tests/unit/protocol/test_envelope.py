"""realtime.protocol.envelope: PROTOCOL.md section 3 (frames) and the error rows of section 5."""

from __future__ import annotations

import json

import pytest

from realtime.protocol.envelope import (
    MAX_ID_LENGTH,
    MAX_SEQ,
    Envelope,
    Rejected,
    parse_envelope,
    render_ack,
    render_error,
    render_push,
)
from realtime.protocol.errors import (
    EmptyMessage,
    ErrorCode,
    InvalidEnvelope,
    InvalidJson,
    SequenceGap,
    ValidationFailed,
)
from tests.unit.protocol.helpers import frame


def rejected(text: str) -> Rejected:
    parsed = parse_envelope(text)
    assert isinstance(parsed, Rejected), f"expected a rejection, got {parsed!r}"
    return parsed


def accepted(text: str) -> Envelope:
    parsed = parse_envelope(text)
    assert isinstance(parsed, Envelope), f"expected an envelope, got {parsed!r}"
    return parsed


# --- section 5: empty_message, invalid_json, invalid_envelope ---------------------------------


@pytest.mark.parametrize("text", ["", " ", "\n", "\t \r\n", "\u3000"])
def test_empty_or_whitespace_frame_is_empty_message(text):
    """Errors: empty or whitespace-only frame -> empty_message"""
    parsed = rejected(text)
    assert isinstance(parsed.error, EmptyMessage)
    assert parsed.error.code is ErrorCode.EMPTY_MESSAGE
    assert (parsed.ref, parsed.seq) == (None, None)


@pytest.mark.parametrize(
    "text",
    [
        "{",
        "not json",
        "{'event': 'ping'}",
        '{"event": "ping",}',
        "NaN",
        "Infinity",
        "1e999",
        "1" + "0" * 400,
        '"\\ud800"',
        "[" * 5000,
        '{"event": "ping"} trailing',
        "\x00",
    ],
)
def test_unparseable_text_is_invalid_json(text):
    """Errors: not parseable JSON -> invalid_json"""
    parsed = rejected(text)
    assert isinstance(parsed.error, InvalidJson)
    assert parsed.error.code is ErrorCode.INVALID_JSON
    assert (parsed.ref, parsed.seq) == (None, None)


@pytest.mark.parametrize("text", ["[]", '[{"event": "ping"}]', '"ping"', "42", "null", "true", "1.5"])
def test_json_that_is_not_an_object_is_invalid_envelope(text):
    """Errors: JSON but not an object -> invalid_envelope"""
    parsed = rejected(text)
    assert isinstance(parsed.error, InvalidEnvelope)
    assert parsed.error.code is ErrorCode.INVALID_ENVELOPE


def test_missing_event_is_invalid_envelope_and_keeps_id_and_seq():
    """Errors: event missing -> invalid_envelope; the reply still names the readable id and seq"""
    parsed = rejected(frame(id="c-1", seq=3, data={}))
    assert isinstance(parsed.error, InvalidEnvelope)
    assert "event" in parsed.error.message
    assert (parsed.ref, parsed.seq) == ("c-1", 3)


@pytest.mark.parametrize("event", [1, 1.5, True, None, [], {}, ["ping"]])
def test_event_not_a_string_is_invalid_envelope(event):
    """Errors: event missing or not a string -> invalid_envelope"""
    parsed = rejected(frame(event=event, id="c-2"))
    assert isinstance(parsed.error, InvalidEnvelope)
    assert parsed.ref == "c-2"


# --- section 3: id ------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 17, MAX_ID_LENGTH])
def test_id_of_1_to_64_chars_is_the_ref(length):
    """Frames: id optional string <= 64 chars; the reply carries it as ref"""
    ref = "x" * length
    assert accepted(frame(event="ping", id=ref)).id == ref


def test_id_length_counts_characters_not_bytes():
    """Frames: id <= 64 chars (characters, so 64 non-ASCII characters are fine)"""
    ref = "é" * MAX_ID_LENGTH
    assert accepted(frame(event="ping", id=ref)).id == ref


def test_absent_id_gives_null_ref():
    """Frames: id optional -> ref null"""
    assert accepted(frame(event="ping")).id is None


def test_null_id_is_treated_as_absent():
    """Frames: id optional (JSON null reads as absent)"""
    assert accepted(frame(event="ping", id=None)).id is None


@pytest.mark.parametrize("bad_id", ["", "x" * (MAX_ID_LENGTH + 1), 17, 1.5, True, False, [], {}, ["c-1"]])
def test_id_not_a_string_or_too_long_is_invalid_envelope(bad_id):
    """Frames: id not a string or too long -> invalid_envelope (id must be 1..64 chars)"""
    parsed = rejected(frame(event="ping", id=bad_id, seq=4))
    assert isinstance(parsed.error, InvalidEnvelope)
    assert "id" in parsed.error.message
    # an unusable id cannot be echoed as ref, but the readable seq is kept
    assert (parsed.ref, parsed.seq) == (None, 4)


# --- section 3: seq -----------------------------------------------------------------------------


@pytest.mark.parametrize("seq", [0, 1, 17, 2**32, MAX_SEQ])
def test_integer_seq_in_range_is_accepted(seq):
    """Frames: seq optional integer (0 .. 2**63-1)"""
    envelope = accepted(frame(event="ping", seq=seq))
    assert envelope.seq == seq
    assert type(envelope.seq) is int


def test_absent_seq_is_none():
    """Frames: seq optional"""
    assert accepted(frame(event="ping")).seq is None


@pytest.mark.parametrize(
    "raw_seq",
    [
        "-1",
        str(MAX_SEQ + 1),
        str(2**64 - 1),
        str(2**64),
        "1" + "0" * 30,
        "1.0",
        "1e2",
        "true",
        "false",
        '"3"',
        "[3]",
        "{}",
    ],
)
def test_seq_not_an_integer_in_range_is_invalid_envelope(raw_seq):
    """Frames: seq not an integer -> invalid_envelope (bools, floats, negatives, > 2**63-1 rejected)"""
    parsed = rejected('{"event": "ping", "id": "c-9", "seq": ' + raw_seq + "}")
    assert isinstance(parsed.error, InvalidEnvelope)
    assert "seq" in parsed.error.message
    assert (parsed.ref, parsed.seq) == ("c-9", None)


# --- section 3: data ----------------------------------------------------------------------------


def test_absent_data_reads_as_empty_object():
    """Frames: data absent is read as {}"""
    assert accepted(frame(event="ping")).data == {}


def test_null_data_reads_as_empty_object():
    """Frames: data null is read as {}"""
    assert accepted(frame(event="ping", data=None)).data == {}


@pytest.mark.parametrize("data", [[], [1], "x", "", 0, 1.5, True, False])
def test_non_object_data_is_invalid_envelope(data):
    """Frames: data any other non-object -> invalid_envelope"""
    parsed = rejected(frame(event="echo", id="c-3", seq=8, data=data))
    assert isinstance(parsed.error, InvalidEnvelope)
    assert "data" in parsed.error.message
    assert (parsed.ref, parsed.seq) == ("c-3", 8)


def test_object_data_is_kept_as_parsed():
    """Frames: data object is passed on unchanged"""
    data = {"stream": "room:lobby", "text": "hi", "nested": {"a": [1, 2.5, None, True]}}
    assert accepted(frame(event="message.send", data=data)).data == data


def test_unknown_top_level_keys_ignored():
    """Frames: unknown top-level keys are ignored"""
    envelope = accepted(frame(event="ping", id="c-4", seq=1, data={}, extra=1, stream="x", ref="nope"))
    assert envelope == Envelope(event="ping", id="c-4", seq=1, data={})


def test_contract_example_frame_parses():
    """Frames: the section 3 client example parses into its fields"""
    text = '{"event":"message.send","id":"c-17","seq":17,"data":{"stream":"room:lobby","text":"hi"}}'
    assert accepted(text) == Envelope(
        event="message.send", id="c-17", seq=17, data={"stream": "room:lobby", "text": "hi"}
    )


def test_leading_and_trailing_whitespace_around_json_is_fine():
    """Frames: a JSON object with surrounding whitespace is still one JSON object"""
    assert accepted('  \n{"event": "ping"}\n ').event == "ping"


# --- rendering (section 3 replies and pushes) ---------------------------------------------------


def test_render_ack_carries_ref_seq_and_data_in_contract_shape():
    """Frames: ack carries ref and seq when the message had one (section 3 example)"""
    text = render_ack("c-17", 17, {"stream": "room:lobby", "offset": 43})
    assert json.loads(text) == {
        "event": "ack",
        "ref": "c-17",
        "seq": 17,
        "data": {"stream": "room:lobby", "offset": 43},
    }
    assert "\n" not in text


def test_render_ack_without_seq_omits_seq_and_keeps_null_ref():
    """Frames: reply carries ref (the id, or null) and seq only when the message had one"""
    assert json.loads(render_ack(None, None, {})) == {"event": "ack", "ref": None, "data": {}}


def test_render_ack_with_seq_zero_keeps_seq():
    """Frames: seq 0 is a seq, so the reply carries it"""
    assert json.loads(render_ack("a", 0, {}))["seq"] == 0


def test_render_error_carries_code_message_and_fields():
    """Frames: error reply shape (section 3 example): code, message, fields"""
    error = ValidationFailed("data.text: field required", fields={"text": "required"})
    assert json.loads(render_error(error, "c-18")) == {
        "event": "error",
        "ref": "c-18",
        "data": {"code": "validation_error", "message": "data.text: field required", "fields": {"text": "required"}},
    }


def test_render_error_sequence_gap_carries_expected_and_seq():
    """Errors: sequence_gap -> data.expected is the next seq the server wants"""
    reply = json.loads(render_error(SequenceGap(expected=5), "c-9", 9))
    assert reply["ref"] == "c-9"
    assert reply["seq"] == 9
    assert reply["data"]["code"] == "sequence_gap"
    assert reply["data"]["expected"] == 5


def test_render_error_defaults_to_null_ref_and_no_seq():
    """Frames: an error for a message without id has ref null and no seq"""
    assert json.loads(render_error(EmptyMessage())) == {
        "event": "error",
        "ref": None,
        "data": {"code": "empty_message", "message": "empty message"},
    }


def test_render_push_with_stream_names_stream_and_offset_and_has_no_ref():
    """Frames: server pushes (no ref) name their stream and offset when they belong to one"""
    data = {"id": "c-17", "sender": {"id": 7, "username": "alice"}, "text": "hi", "ts": "2026-11-24T11:59:01.120Z"}
    reply = json.loads(render_push("message.new", data, stream="room:lobby", offset=43))
    assert reply == {"event": "message.new", "stream": "room:lobby", "offset": 43, "data": data}


def test_render_push_without_stream_has_only_event_and_data():
    """Frames: pushes that belong to no stream carry no stream/offset and no ref"""
    assert json.loads(render_push("flow.pause", {"retry_after_ms": 50})) == {
        "event": "flow.pause",
        "data": {"retry_after_ms": 50},
    }


def test_render_keeps_non_ascii_text_exactly():
    """Events: text without markup is kept exactly as sent (rendering does not alter it)"""
    text = "Tom & Jerry 2 < 3 \u00e9\u4e2d\U0001f600"
    assert json.loads(render_ack("r", None, {"text": text}))["data"]["text"] == text
