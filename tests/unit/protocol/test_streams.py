"""StreamName: parsing, access and channel-layer groups (PROTOCOL.md section 4).

Streams are ``room:NAME`` (NAME matches ``[a-z0-9_-]{1,64}``), ``user:ID`` (only user
ID may subscribe) and ``resource:ID`` (any authenticated user). Anything else is a
``validation_error`` naming the field.
"""

from __future__ import annotations

import re

import pytest
from channels.layers import BaseChannelLayer
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.protocol.errors import ErrorCode, ValidationFailed
from realtime.protocol.streams import StreamKind, StreamName

FAST = settings(max_examples=200, deadline=None, database=None)

# Channels' own rule for group names (channels.layers.BaseChannelLayer).
GROUP_NAME = re.compile(r"[a-zA-Z\d\-_.]+")
GROUP_MAX_LENGTH = 100  # names must be strictly shorter

room_names = st.from_regex(r"[a-z0-9_-]{1,64}", fullmatch=True)
ids = st.integers(min_value=1, max_value=10**19 - 1)
valid_streams = (
    room_names.map(lambda name: f"room:{name}") | ids.map(lambda i: f"user:{i}") | ids.map(lambda i: f"resource:{i}")
)


# --- parsing valid names ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kind", "key"),
    [
        ("room:lobby", StreamKind.ROOM, "lobby"),
        ("room:a", StreamKind.ROOM, "a"),
        ("room:0", StreamKind.ROOM, "0"),
        ("room:team_42-dev", StreamKind.ROOM, "team_42-dev"),
        ("room:-", StreamKind.ROOM, "-"),
        ("room:" + "x" * 64, StreamKind.ROOM, "x" * 64),
        ("user:7", StreamKind.USER, "7"),
        ("user:1234567890", StreamKind.USER, "1234567890"),
        ("resource:1", StreamKind.RESOURCE, "1"),
        ("resource:9001", StreamKind.RESOURCE, "9001"),
    ],
)
def test_parse_accepts_contract_names(raw, kind, key):
    """Streams: room:NAME, user:ID and resource:ID are accepted and split into kind and key"""
    name = StreamName.parse(raw)
    assert name.kind is kind
    assert name.key == key
    assert str(name) == raw


@FAST
@given(valid_streams)
def test_parse_round_trips_every_valid_name(raw):
    """Streams: every valid stream name parses, and renders back to exactly the same text"""
    name = StreamName.parse(raw)
    assert str(name) == raw
    assert StreamName.parse(str(name)) == name


def test_factories_equal_parsed_names():
    """Streams: the server-side constructors build the same names clients send"""
    assert StreamName.room("lobby") == StreamName.parse("room:lobby")
    assert StreamName.user(7) == StreamName.parse("user:7")
    assert StreamName.resource(12) == StreamName.parse("resource:12")
    assert str(StreamName.user(7)) == "user:7"
    assert str(StreamName.resource(12)) == "resource:12"


# --- parsing invalid names --------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "lobby",
        ":",
        "room",
        "room:",
        "room:" + "x" * 65,
        "room:Lobby",
        "room:LOBBY",
        "room:lob by",
        "room:lob.by",
        "room:lob/by",
        "room:a:b",
        "room:lobby\n",
        "room:\nlobby",
        "room: lobby",
        " room:lobby",
        "room:lobby ",
        "room:caf\u00e9",
        "room:\u0661\u0662",  # Arabic-Indic digits are not [0-9]
        "room:lobby\x00",
        "Room:lobby",
        "ROOM:lobby",
        "rooms:lobby",
        "channel:lobby",
        "room.lobby",
        "user:",
        "user:0",
        "user:07",
        "user:-7",
        "user:+7",
        "user:7.0",
        "user:1e3",
        "user:alice",
        "user:7\n",
        "user: 7",
        "user:\u0667",  # Arabic-Indic seven
        "user:\uff17",  # fullwidth seven
        "user:" + "9" * 20,
        "resource:",
        "resource:0",
        "resource:abc",
        "resource:1:2",
        "resource:01",
    ],
)
def test_parse_rejects_malformed_names(raw):
    """Streams: anything but room:NAME / user:ID / resource:ID -> validation_error naming the field"""
    with pytest.raises(ValidationFailed) as caught:
        StreamName.parse(raw)
    assert caught.value.code is ErrorCode.VALIDATION_ERROR
    assert caught.value.data["fields"] == {"stream": "invalid stream name"}
    assert caught.value.message.startswith("data.stream:")


@pytest.mark.parametrize("raw", [None, 7, 7.0, True, ["room:lobby"], {"stream": "room:lobby"}, b"room:lobby"])
def test_parse_rejects_non_strings(raw):
    """Streams: a stream that is not a string -> validation_error 'must be a string'"""
    with pytest.raises(ValidationFailed) as caught:
        StreamName.parse(raw)
    assert caught.value.code is ErrorCode.VALIDATION_ERROR
    assert caught.value.data["fields"] == {"stream": "must be a string"}
    assert caught.value.message == "data.stream: must be a string"


def test_parse_error_names_the_given_field():
    """Errors: validation_error fields name the offending field of data"""
    with pytest.raises(ValidationFailed) as caught:
        StreamName.parse("room:NOPE", field="to")
    assert caught.value.data["fields"] == {"to": "invalid stream name"}
    assert caught.value.message.startswith("data.to:")
    assert caught.value.payload()["code"] == "validation_error"


@FAST
@given(
    valid_streams
    | st.text(max_size=80)
    | st.tuples(st.sampled_from(["room:", "user:", "resource:"]), st.text(max_size=70)).map("".join)
)
def test_parse_accepts_exactly_the_contract_grammar(raw):
    """Streams: parse accepts a string iff it matches the section 4 grammar, and never raises anything else"""
    grammar = re.compile(r"room:[a-z0-9_-]{1,64}|(?:user|resource):[1-9][0-9]{0,18}")
    try:
        StreamName.parse(raw)
    except ValidationFailed:
        assert grammar.fullmatch(raw) is None
    else:
        assert grammar.fullmatch(raw) is not None


@FAST
@given(room_names, st.sampled_from(["", "\n", " ", "!", "A", ":x", "\u00e9"]), st.booleans())
def test_parse_rejects_room_names_with_extra_characters(name, extra, prefix):
    """Streams: NAME must match [a-z0-9_-] in full (no trailing newline or stray characters)"""
    raw = f"room:{extra}{name}" if prefix else f"room:{name}{extra}"
    if extra == "":
        assert StreamName.parse(raw).key == name
    else:
        with pytest.raises(ValidationFailed):
            StreamName.parse(raw)


# --- who may read -----------------------------------------------------------------


def test_user_stream_readable_only_by_its_user():
    """Security: Unauthorized access -> only user ID may subscribe to user:ID"""
    stream = StreamName.parse("user:7")
    assert stream.readable_by(7)
    assert not stream.readable_by(8)
    assert not stream.readable_by(70)
    assert not stream.readable_by(0)
    assert not stream.readable_by(-7)


@FAST
@given(ids, ids)
def test_user_stream_readable_iff_same_id(owner, reader):
    """Security: Unauthorized access -> user:ID is readable by exactly one user id"""
    assert StreamName.user(owner).readable_by(reader) is (owner == reader)
    assert StreamName.parse(f"user:{owner}").readable_by(reader) is (owner == reader)


@FAST
@given(room_names, ids, st.integers(min_value=1, max_value=2**63 - 1))
def test_rooms_and_resources_readable_by_everyone(room, resource, reader):
    """Streams: room:NAME and resource:ID are open to every authenticated user"""
    assert StreamName.parse(f"room:{room}").readable_by(reader)
    assert StreamName.parse(f"resource:{resource}").readable_by(reader)


def test_room_named_like_a_user_id_is_still_open():
    """Security: Unauthorized access -> the check is on the kind, not on a numeric key"""
    assert StreamName.parse("room:7").readable_by(8)
    assert not StreamName.parse("user:7").readable_by(8)


# --- channel-layer groups ---------------------------------------------------------


@FAST
@given(valid_streams)
def test_group_fits_channels_name_rules(raw):
    """Streams: every valid stream's group is a legal channels group name (charset, length < 100)"""
    group = StreamName.parse(raw).group
    assert GROUP_NAME.fullmatch(group) is not None
    assert len(group) < GROUP_MAX_LENGTH
    assert BaseChannelLayer().require_valid_group_name(group) is True


def test_longest_names_fit_the_group_limit():
    """Streams: the longest room and id names still give legal groups"""
    for raw in ("room:" + "z" * 64, "room:" + "-" * 64, "user:" + "9" * 19, "resource:" + "9" * 19):
        group = StreamName.parse(raw).group
        assert len(group) < GROUP_MAX_LENGTH
        assert BaseChannelLayer().require_valid_group_name(group) is True


@FAST
@given(valid_streams, valid_streams)
def test_group_is_one_to_one(a, b):
    """Delivery: distinct streams never share a group (no cross-stream delivery)"""
    assert (StreamName.parse(a).group == StreamName.parse(b).group) is (a == b)


def test_same_key_different_kind_have_different_groups():
    """Security: Unauthorized access -> user:7, room:7 and resource:7 are different groups"""
    groups = {StreamName.parse(f"{kind}:7").group for kind in ("room", "user", "resource")}
    assert len(groups) == 3
