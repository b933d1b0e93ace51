"""realtime.protocol.json_safety and its WebSocket door (PROTOCOL.md section 11, issue 13).

Anything the server accepts it can store, render, fan out and replay: a value passes
:func:`json_problem` only if orjson can write it wrapped in the frames that carry it, and
PostgreSQL can store it (no U+0000, no lone surrogate). What fails is named by its path.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime.client_events import protocol_table
from realtime.protocol.envelope import Envelope, Rejected, parse_envelope, render_ack, render_push
from realtime.protocol.errors import InvalidEnvelope, ValidationFailed
from realtime.protocol.json_safety import (
    KEY_NOT_STRING,
    LONE_SURROGATE,
    LONE_SURROGATE_KEY,
    MAX_JSON_DEPTH,
    NOT_FINITE,
    NOT_JSON,
    NUL,
    NUL_KEY,
    OUT_OF_RANGE,
    TOO_DEEP,
    dotted,
    json_problem,
)
from realtime.protocol.session import ProtocolSession
from tests.unit.protocol.helpers import reply_of

FAST = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def nested(depth: int, leaf: Any = None) -> Any:
    """``depth`` objects, one inside the other: ``{"a": {"a": ... leaf}}``."""
    value: Any = {} if leaf is None else {"a": leaf}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


# --- one reason per kind of poison, with its path ------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": {"b": "x\ud800"}}, (("a", "b"), LONE_SURROGATE)),
        ({"a": ["ok", "\udfff"]}, (("a", "1"), LONE_SURROGATE)),
        ({"a": {"k\udc00": 1}}, (("a",), LONE_SURROGATE_KEY)),
        ({"t": "a\x00b"}, (("t",), NUL)),
        ({"t": {"\x00": 1}}, (("t",), NUL_KEY)),
        ({"n": 2**64}, (("n",), OUT_OF_RANGE)),
        ({"n": -(2**63) - 1}, (("n",), OUT_OF_RANGE)),
        ({"n": [1, 10**30]}, (("n", "1"), OUT_OF_RANGE)),
        ({"f": float("nan")}, (("f",), NOT_FINITE)),
        ({"f": float("-inf")}, (("f",), NOT_FINITE)),
        ({1: "x"}, ((), KEY_NOT_STRING)),
        ({"s": {1, 2}}, (("s",), NOT_JSON)),
        ({"b": b"bytes"}, (("b",), NOT_JSON)),
        ("\x00", ((), NUL)),
    ],
)
def test_each_kind_of_poison_is_named_with_its_path(value: Any, expected: tuple[tuple[str, ...], str]) -> None:
    assert json_problem(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        {},
        [],
        None,
        {"n": 2**64 - 1, "m": -(2**63), "f": 1.5e308, "b": True, "z": None},
        {"emoji": "\U0001f600", "accents": "é", "cjk": "漢字", "escaped": "\\u0000"},
        nested(MAX_JSON_DEPTH),
        [[[]]],
    ],
)
def test_safe_values_pass(value: Any) -> None:
    assert json_problem(value) is None


def test_depth_limit_is_counted_in_containers_and_names_the_first_one_past_it() -> None:
    assert json_problem(nested(MAX_JSON_DEPTH, leaf=1)) is None  # a scalar adds no level
    path, reason = json_problem(nested(MAX_JSON_DEPTH + 1)) or ((), "")
    assert (path, reason) == (("a",) * MAX_JSON_DEPTH, TOO_DEEP)
    assert json_problem([[[[]]]], max_depth=3) == (("0", "0", "0"), TOO_DEEP)


def test_a_300_deep_value_stops_at_the_limit_without_recursion() -> None:
    """The 300-deep resource.update of issue 13, and one far beyond Python's recursion limit."""
    assert json_problem({"data": nested(300)}) == (("data",) + ("a",) * (MAX_JSON_DEPTH - 1), TOO_DEEP)
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    problem = json_problem(deep)
    assert problem is not None
    assert problem[1] == TOO_DEEP


def test_dotted_paths_are_bounded() -> None:
    assert dotted(()) == "data"
    assert dotted((), "data") == "data"
    assert dotted(("a", "0"), "data") == "data.a.0"
    assert dotted(("a", "b")) == "a.b"
    long = dotted(("k" * 150, "x" * 150))
    assert len(long) == 200
    assert long.endswith("…")


# --- the property: what passes can be rendered in every frame that carries it ---------------------

odd_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=8)  # NUL, lone surrogates
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30])
    | st.floats()
    | odd_text
)
values = st.recursive(
    scalars, lambda children: st.lists(children, max_size=3) | st.dictionaries(odd_text, children, max_size=3)
)


@FAST
@given(values)
def test_whatever_passes_renders_in_push_and_history_frames_and_holds_no_nul(value: Any) -> None:
    if json_problem(value) is not None:
        return
    push = render_push("resource.updated", {"id": 1, "data": value}, stream="resource:1", offset=1)
    history = render_ack("r", 3, {"stream": "resource:1", "events": [orjson.loads(push)]})
    assert "\\u0000" not in push.replace("\\\\", "")
    assert orjson.loads(history)["data"]["events"][0]["data"]["data"] == value or value != value


@FAST
@given(values)
def test_json_problem_never_raises_and_refuses_what_orjson_cannot_write(value: Any) -> None:
    problem = json_problem(value)
    try:
        orjson.dumps(value)
    except TypeError:
        assert problem is not None
    if problem is not None:
        assert isinstance(problem[0], tuple)
        assert isinstance(problem[1], str)


@FAST
@given(st.integers(min_value=MAX_JSON_DEPTH + 1, max_value=250))
def test_anything_deeper_than_the_limit_is_refused(depth: int) -> None:
    assert json_problem(nested(depth)) is not None


# --- the WebSocket door: parse_envelope ------------------------------------------------------------


def _rejected(text: str) -> Rejected:
    parsed = parse_envelope(text)
    assert isinstance(parsed, Rejected), parsed
    return parsed


def test_deep_data_is_validation_error_naming_the_field_and_keeping_id_and_seq() -> None:
    text = json.dumps({"event": "resource.update", "id": "r1", "seq": 4, "data": {"id": 1, "data": nested(300)}})
    rejected = _rejected(text)
    assert (rejected.ref, rejected.seq) == ("r1", 4)
    assert isinstance(rejected.error, ValidationFailed)
    field = "data" + ".a" * (MAX_JSON_DEPTH - 1)
    assert rejected.error.data["fields"] == {field: TOO_DEEP}
    assert rejected.error.message == f"data.{field}: {TOO_DEEP}"


def test_nul_in_message_text_is_validation_error_on_text() -> None:
    rejected = _rejected(json.dumps({"event": "message.send", "id": "m", "data": {"stream": "room:a", "text": "a\0"}}))
    assert isinstance(rejected.error, ValidationFailed)
    assert rejected.error.data["fields"] == {"text": NUL}
    assert rejected.error.message == "data.text: contains U+0000"


def test_nul_in_a_top_level_key_of_data_names_data() -> None:
    rejected = _rejected(json.dumps({"event": "echo", "data": {"\x00": 1}}))
    assert isinstance(rejected.error, ValidationFailed)
    assert rejected.error.data["fields"] == {"data": NUL_KEY}
    assert rejected.error.message == f"data: {NUL_KEY}"


def test_nul_in_id_is_invalid_envelope_and_is_not_echoed() -> None:
    rejected = _rejected(json.dumps({"event": "message.send", "id": "a\x00", "data": {}}))
    assert isinstance(rejected.error, InvalidEnvelope)
    assert rejected.error.message == "id: contains U+0000"
    assert rejected.ref is None


def test_lone_surrogate_is_refused_by_the_parser_and_big_integers_become_floats() -> None:
    """orjson does the rest of the door's work: no lone surrogate and no integer it cannot write
    ever reaches the handlers."""
    assert _rejected('{"event":"echo","data":{"t":"\\ud800"}}').error.code.value == "invalid_json"
    parsed = parse_envelope('{"event":"echo","data":{"n":18446744073709551616}}')
    assert isinstance(parsed, Envelope)
    assert isinstance(parsed.data["n"], float)


def test_session_answers_a_300_deep_echo_with_one_validation_error() -> None:
    session = ProtocolSession(protocol_table(), is_staff=False)
    reply = reply_of(session.receive_text(json.dumps({"event": "echo", "id": "e", "data": nested(300)})))
    assert (reply["event"], reply["ref"], reply["data"]["code"]) == ("error", "e", "validation_error")


deep_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=2) | st.dictionaries(odd_text, children, max_size=2),
    max_leaves=80,
)


@FAST
@given(deep_values, st.booleans())
def test_every_envelope_the_parser_accepts_holds_only_safe_data(value: Any, ascii_only: bool) -> None:
    """The parser's shortcut (no ``\\u0000`` escape and few brackets in the raw text) never lets
    through what the full walk refuses."""
    try:
        text = json.dumps({"event": "echo", "data": {"v": value}}, ensure_ascii=ascii_only)
    except (ValueError, UnicodeEncodeError):
        return
    parsed = parse_envelope(text)
    if isinstance(parsed, Envelope):
        assert json_problem(parsed.data) is None
        render_ack("r", None, parsed.data)  # and the echo's reply can be written


@FAST
@given(st.integers(min_value=1, max_value=120))
def test_the_parser_refuses_exactly_what_is_deeper_than_the_limit(depth: int) -> None:
    parsed = parse_envelope(json.dumps({"event": "echo", "data": nested(depth)}))
    assert isinstance(parsed, Rejected) == (depth > MAX_JSON_DEPTH)
