"""Property tests of ProtocolSession.receive_text (PROTOCOL.md sections 3 and 5).

Whatever text a client sends, the session answers with exactly one well-formed reply
(``ack`` or ``error``, always with ``ref``), carrying ``seq`` iff the message had a
readable one, and never raises.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime.client_events import protocol_table
from realtime.protocol.envelope import MAX_ID_LENGTH, MAX_SEQ
from realtime.protocol.sequence import REPLY_CACHE_SIZE
from realtime.protocol.session import Command, Immediate, ProtocolSession

FAST = settings(
    max_examples=250,
    deadline=None,
    database=None,  # no .hypothesis/ directory in the repo
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

EVENT_NAMES = ["ping", "echo", "auth.refresh", "message.send", "admin.kick", "", "PING", "__class__", "x" * 200]

# JSON values, including ones the server's parser must refuse (NaN, Infinity, integers
# beyond 64 bits become invalid or float) once serialised with json.dumps.
odd_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)  # includes lone surrogates
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([10**400, -(10**400), 2**63, 2**64, MAX_SEQ])
    | st.floats()
    | st.text(max_size=20)
    | odd_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8) | odd_text, children, max_size=4)
    ),
    max_leaves=20,
)
ids = st.text(min_size=0, max_size=MAX_ID_LENGTH + 3) | json_values
seqs = (
    st.integers(min_value=0, max_value=8)
    | st.integers(min_value=-3, max_value=MAX_SEQ + 3)
    | st.sampled_from([MAX_SEQ, MAX_SEQ + 1, 2**64, -1, True, False, 0.0, 1.0, "1", None, [1], {"seq": 1}])
    | json_values
)
datas = (
    st.none()
    | st.fixed_dictionaries({}, optional={"token": json_values, "ts": json_values, "text": json_values})
    | json_values
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "event": st.sampled_from(EVENT_NAMES) | json_values,
        "id": ids,
        "seq": seqs,
        "data": datas,
        "ref": json_values,
        "stream": json_values,
    },
)

# Mostly well-formed envelopes, so that sequences of frames reach handlers, gaps and retransmissions.
good_envelopes = st.fixed_dictionaries(
    {"event": st.sampled_from(["ping", "echo", "auth.refresh", "nope"])},
    optional={
        "id": st.text(min_size=1, max_size=MAX_ID_LENGTH),
        "seq": st.integers(min_value=0, max_value=8),
        "data": st.none() | st.fixed_dictionaries({}, optional={"token": st.text(max_size=5), "ts": json_scalars}),
    },
)

SPECIAL_TEXTS = [
    "",
    " ",
    "[" * 5000,
    "{" * 5000,
    '{"a":' * 5000,
    "[" * 1000 + "]" * 1000,
    '{"event":"echo","data":{"x":' + "[" * 1000 + "]" * 1000 + "}}",
    '{"event":"echo","data":{"x":' + "[" * 1025 + "]" * 1025 + "}}",
    "1e999",
    '{"event":"ping","seq":1e999}',
    '{"event":"ping","seq":' + "1" + "0" * 400 + "}",
    '{"event":"ping","data":{"ts":' + "9" * 400 + "}}",
    '{"event":"ping","data":{"ts":-1e999}}',
    '"\\ud800"',
    '{"event":"\\ud800"}',
    '{"event":"ping","id":"\\udfff"}',
    '{"event":"ping","id":"\\ud83d\\ude00","seq":0}',
    '{"event":"ping","seq":0,"seq":"x"}',
    '{"event":"ping","seq":"x","seq":0}',
    '{"event":"ping","seq":-0}',
    '{"event":"ping","seq":0e0}',
    '{"event":"ping","seq":9223372036854775807}',
    '{"event":"ping","seq":9223372036854775808}',
    '{"event":"ping","seq":18446744073709551616}',
    "{1: 2}",
    '{"event":"ping",}',
    "\ufeff{}",
    '{"event":"ping"}\x00',
    "\x00",
    "NaN",
    '{"event": NaN}',
    "\u2028\u2029",
]


def _dumps(value: Any, ensure_ascii: bool) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii)


@st.composite
def texts(draw: st.DrawFn) -> str:
    kind = draw(st.integers(min_value=0, max_value=7))
    if kind >= 6:
        return _dumps(draw(good_envelopes), draw(st.booleans()))
    if kind == 0:
        return draw(st.text(st.characters(codec=None, exclude_categories=()), max_size=60))
    if kind == 1:
        return draw(st.sampled_from(SPECIAL_TEXTS))
    if kind == 2:
        return _dumps(draw(json_values), draw(st.booleans()))
    text = _dumps(draw(envelopes), draw(st.booleans()))
    if kind == 5 and text:
        # corrupt a valid-looking envelope: cut it, or splice in a character
        cut = draw(st.integers(min_value=0, max_value=len(text)))
        if draw(st.booleans()):
            return text[:cut]
        return text[:cut] + draw(st.characters(codec=None, exclude_categories=())) + text[cut:]
    return text


def readable_seq(text: str) -> int | None:
    """The seq the contract says the reply must carry: a JSON object's integer seq in 0..2**63-1."""
    try:
        obj = orjson.loads(text)
    except (orjson.JSONDecodeError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    seq = obj.get("seq")
    if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq <= MAX_SEQ:
        return seq
    return None


def readable_ref(text: str) -> str | None:
    try:
        obj = orjson.loads(text)
    except (orjson.JSONDecodeError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    ref = obj.get("id")
    # U+0000 cannot be stored as an idempotency key: such an id is refused, not echoed (issue 13).
    return ref if isinstance(ref, str) and 1 <= len(ref) <= MAX_ID_LENGTH and "\x00" not in ref else None


def check_reply(text: str, *, expect_seq: int | None) -> dict[str, Any]:
    reply = json.loads(text)
    assert isinstance(reply, dict)
    assert reply["event"] in {"ack", "error"}
    assert "ref" in reply
    assert reply["ref"] is None or isinstance(reply["ref"], str)
    assert isinstance(reply["data"], dict)
    if reply["event"] == "error":
        assert isinstance(reply["data"]["code"], str)
        assert isinstance(reply["data"]["message"], str)
    if expect_seq is None:
        assert "seq" not in reply, reply
    else:
        assert reply.get("seq") == expect_seq, reply
    return reply


@FAST
@given(st.lists(texts(), min_size=1, max_size=6))
def test_receive_text_never_raises_and_always_replies(frames):
    """Frames: every client message gets exactly one reply, ack or error, carrying ref, and seq iff it had one"""
    session = ProtocolSession(protocol_table())
    sent: dict[int, str] = {}  # seq -> reply, to recognise retransmissions
    for text in frames:
        outcome = session.receive_text(text)
        seq = readable_seq(text)
        if isinstance(outcome, Command):
            assert outcome.seq == seq
            assert outcome.ref == readable_ref(text)
            reply_text = session.complete(outcome, {})
        else:
            assert isinstance(outcome, Immediate), outcome
            reply_text = outcome.reply
        reply = check_reply(reply_text, expect_seq=seq)
        if seq is not None and sent.get(seq) == reply_text:
            continue  # a retransmission answers with the first reply (and its ref)
        assert reply["ref"] == readable_ref(text)
        if seq is not None and (reply["event"] == "ack" or reply["data"]["code"] != "sequence_gap"):
            sent[seq] = reply_text


@FAST
@given(st.text(st.characters(codec=None, exclude_categories=()), max_size=200))
def test_arbitrary_unicode_is_answered_with_an_error(text):
    """Errors: empty_message / invalid_json / invalid_envelope -> arbitrary text never raises, stays open"""
    session = ProtocolSession(protocol_table())
    outcome = session.receive_text(text)
    reply_text = session.complete(outcome, {}) if isinstance(outcome, Command) else outcome.reply
    check_reply(reply_text, expect_seq=readable_seq(text))
    # the connection stays open: a ping still works (with the next seq if one was consumed)
    follow: dict[str, object] = {"event": "ping"}
    if session.sequence.expected is not None:
        follow["seq"] = session.sequence.expected
    after = session.receive_text(json.dumps(follow))
    assert isinstance(after, Command)


@FAST
@given(
    st.integers(min_value=1, max_value=5000),
    st.sampled_from(["[", "{", '{"a":', '{"event":"echo","data":{"x":', "[{}, "]),
)
def test_deep_nesting_never_raises(depth, opener):
    """Errors: invalid_json (or a normal reply) for deeply nested input, never an exception"""
    session = ProtocolSession(protocol_table())
    outcome = session.receive_text(opener * depth)
    assert isinstance(outcome, Immediate)
    assert check_reply(outcome.reply, expect_seq=None)["data"]["code"] == "invalid_json"


@FAST
@given(st.integers(min_value=0, max_value=MAX_SEQ - 200), st.integers(min_value=1, max_value=60))
def test_in_order_pings_are_acked_with_their_seq(start, count):
    """Ordering: Sequence numbers -> each in-order seq'd ping is acked with the same seq"""
    session = ProtocolSession(protocol_table())
    for seq in range(start, start + count):
        outcome = session.receive_text(json.dumps({"event": "ping", "id": f"p{seq}", "seq": seq}))
        assert isinstance(outcome, Command)
        reply = json.loads(session.complete(outcome, {}))
        assert reply == {"event": "ack", "ref": f"p{seq}", "seq": seq, "data": {}}


@FAST
@given(
    st.integers(min_value=0, max_value=2**40),
    st.integers(min_value=1, max_value=20),
    st.integers(min_value=1, max_value=2**40),
)
def test_skipping_seq_reports_expected(start, count, skip):
    """Ordering: Sequence numbers -> gap reports expected (and the skipped-to message is not processed)"""
    session = ProtocolSession(protocol_table())
    for seq in range(start, start + count):
        outcome = session.receive_text(json.dumps({"event": "ping", "seq": seq}))
        assert isinstance(outcome, Command)
        session.complete(outcome, {})
    expected = start + count
    outcome = session.receive_text(json.dumps({"event": "ping", "id": "skip", "seq": expected + skip}))
    assert isinstance(outcome, Immediate)
    reply = json.loads(outcome.reply)
    assert reply["event"] == "error"
    assert reply["ref"] == "skip"
    assert reply["seq"] == expected + skip
    assert reply["data"]["code"] == "sequence_gap"
    assert reply["data"]["expected"] == expected
    # resending from expected works
    assert isinstance(session.receive_text(json.dumps({"event": "ping", "seq": expected})), Command)


steps = st.one_of(
    st.just(("next", 0)),
    st.tuples(st.just("skip"), st.integers(min_value=1, max_value=5)),
    st.tuples(st.just("back"), st.integers(min_value=1, max_value=REPLY_CACHE_SIZE + 20)),
    st.just(("noseq", 0)),
)


@FAST
@given(st.integers(min_value=0, max_value=2**40), st.lists(steps, min_size=1, max_size=40), st.integers(0, 40))
def test_sequence_model(start, plan, warmup):
    """Ordering: Sequence numbers -> accept in order, gap reports expected, retransmit returns original reply,
    older than the cache -> sequence_gap, no seq on a seq'd connection -> invalid_envelope"""
    session = ProtocolSession(protocol_table())
    expected: int | None = None
    cache: dict[int, str] = {}
    plan = [("next", 0)] * warmup + plan
    for index, (kind, amount) in enumerate(plan):
        ref = f"m{index}"
        if kind == "noseq":
            seq = None
        elif expected is None:
            seq = start
        elif kind == "next":
            seq = expected
        elif kind == "skip":
            seq = expected + amount
        else:
            seq = max(expected - amount, 0)
        message: dict[str, Any] = {"event": "ping", "id": ref}
        if seq is not None:
            message["seq"] = seq
        outcome = session.receive_text(json.dumps(message))

        if seq is None:
            if expected is None:
                assert isinstance(outcome, Command)
                assert json.loads(session.complete(outcome, {})) == {"event": "ack", "ref": ref, "data": {}}
            else:
                assert isinstance(outcome, Immediate)
                reply = json.loads(outcome.reply)
                assert reply["data"]["code"] == "invalid_envelope"
                assert "seq" not in reply
        elif expected is None or seq == expected:
            assert isinstance(outcome, Command)
            reply_text = session.complete(outcome, {})
            assert json.loads(reply_text) == {"event": "ack", "ref": ref, "seq": seq, "data": {}}
            cache[seq] = reply_text
            expected = seq + 1
        elif seq < expected and seq >= start and seq >= expected - REPLY_CACHE_SIZE:
            assert isinstance(outcome, Immediate)
            assert outcome.reply == cache[seq]
        else:
            assert isinstance(outcome, Immediate)
            reply = json.loads(outcome.reply)
            assert reply["event"] == "error"
            assert reply["ref"] == ref
            assert reply["seq"] == seq
            assert reply["data"]["code"] == "sequence_gap"
            assert reply["data"]["expected"] == expected
