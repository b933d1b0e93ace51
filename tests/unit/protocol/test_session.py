"""realtime.protocol.session: one connection's protocol state, fed plain strings (STYLE.md 7.2).

Covers PROTOCOL.md section 3 (every message gets exactly one reply, ``ref``/``seq``) and the
section 5 error rows that need no database.
"""

from __future__ import annotations

import json

import pytest

from realtime.client_events import protocol_table
from realtime.protocol.errors import Conflict, ErrorCode, Forbidden, NotFound, ProtocolError, ValidationFailed
from realtime.protocol.events import EventSpec
from realtime.protocol.schemas import MAX_TOKEN_LENGTH, AuthRefreshData, PingData
from realtime.protocol.sequence import REPLY_CACHE_SIZE
from realtime.protocol.session import Command, Immediate, ProtocolSession
from tests.unit.protocol.helpers import error_code, frame, ping, reply_of

# The event table the server derives from its declarations (realtime/client_events.py).
EVENTS = protocol_table()


@pytest.fixture
def session() -> ProtocolSession:
    return ProtocolSession(EVENTS)


def command_of(outcome: Command | Immediate) -> Command:
    assert isinstance(outcome, Command), f"expected a command, got {outcome!r}"
    return outcome


def assert_stays_open(session: ProtocolSession, seq: int | None = None) -> None:
    """After an error the same session still processes messages ("connection stays open")."""
    assert ping(session, seq=seq, ref="after")["event"] == "ack"


# --- section 5 rows settled without a handler --------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_frame_is_empty_message_and_connection_stays_open(session, text):
    """Errors: empty_message -> empty or whitespace-only frame, connection stays open"""
    outcome = session.receive_text(text)
    reply = reply_of(outcome)
    assert reply == {
        "event": "error",
        "ref": None,
        "data": {"code": "empty_message", "message": reply["data"]["message"]},
    }
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.EMPTY_MESSAGE
    assert_stays_open(session)


@pytest.mark.parametrize("text", ["{", '{"event": "ping"', "ping", '{"event": "ping", "id": "c-1",}'])
def test_invalid_json_and_connection_stays_open(session, text):
    """Errors: Invalid JSON -> invalid_json, connection stays open"""
    outcome = session.receive_text(text)
    reply = reply_of(outcome)
    assert reply["event"] == "error"
    assert reply["ref"] is None
    assert "seq" not in reply
    assert reply["data"]["code"] == "invalid_json"
    assert_stays_open(session)


@pytest.mark.parametrize("text", ["[]", "1", '"ping"', "null", '{"id": "c-1"}', '{"event": 3, "id": "c-1"}'])
def test_invalid_envelope_and_connection_stays_open(session, text):
    """Errors: invalid_envelope -> JSON but not an object, event missing or not a string; stays open"""
    assert error_code(session.receive_text(text)) == "invalid_envelope"
    assert_stays_open(session)


def test_invalid_envelope_reply_carries_the_readable_id_as_ref(session):
    """Frames: every reply carries ref (the message's id) -- also for invalid_envelope"""
    reply = reply_of(session.receive_text(frame(id="c-5", data=[])))
    assert reply["ref"] == "c-5"
    assert reply["data"]["code"] == "invalid_envelope"


def test_binary_frame_is_unsupported_frame_and_connection_stays_open(session):
    """Errors: unsupported_frame -> binary frame, connection stays open"""
    outcome = session.receive_bytes()
    reply = reply_of(outcome)
    assert reply["event"] == "error"
    assert reply["ref"] is None
    assert "seq" not in reply
    assert reply["data"]["code"] == "unsupported_frame"
    assert_stays_open(session)


def test_binary_frame_does_not_disturb_seq(session):
    """Errors: unsupported_frame carries no seq and does not consume one"""
    assert ping(session, seq=0)["event"] == "ack"
    reply_of(session.receive_bytes())
    assert ping(session, seq=1) == {"event": "ack", "ref": None, "seq": 1, "data": {}}


@pytest.mark.parametrize("event", ["nope", "PING", "Ping", "ping ", "", "stream.", "message.sendx", "fanout.event"])
def test_unknown_event_and_connection_stays_open(session, event):
    """Errors: unknown_event -> event name not in section 4, connection stays open"""
    outcome = session.receive_text(frame(event=event, id="c-7"))
    reply = reply_of(outcome)
    assert reply["ref"] == "c-7"
    assert reply["data"]["code"] == "unknown_event"
    assert_stays_open(session)


def test_unknown_event_names_are_not_looked_up_as_attributes(session):
    """Style 7.2: client event names never reach getattr (dunder names are just unknown events)"""
    for event in ("__class__", "__init__", "receive_text", "complete", "_command", "__dict__"):
        assert error_code(session.receive_text(frame(event=event))) == "unknown_event"


def test_long_unknown_event_name_is_truncated_in_reply_and_log_fields(session):
    """Errors: unknown_event; the reply and log fields never echo an unbounded event name"""
    event = "x" * 100_000
    outcome = session.receive_text(frame(event=event))
    assert isinstance(outcome, Immediate)
    assert outcome.event is not None
    assert len(outcome.event) <= 64
    assert len(outcome.reply) < 1000


def test_unknown_top_level_keys_ignored(session):
    """Frames: unknown top-level keys are ignored"""
    cmd = command_of(session.receive_text(frame(event="ping", id="c-1", junk=[1, 2], stream="room:x", ref="z")))
    assert (cmd.event, cmd.ref, cmd.seq) == ("ping", "c-1", None)


# --- events: schema validation -----------------------------------------------------------------


def test_ping_becomes_command_with_validated_data(session):
    """Events: ping {} or {"ts":...} -> command for the ping handler"""
    cmd = command_of(session.receive_text(frame(event="ping", id="p-1", data={"ts": 123.5})))
    assert cmd.event == "ping"
    assert cmd.spec is EVENTS["ping"]
    assert isinstance(cmd.data, PingData)
    assert cmd.data.ts == 123.5
    assert cmd.ref == "p-1"


@pytest.mark.parametrize("text", ['{"event":"ping"}', '{"event":"ping","data":null}', '{"event":"ping","data":{}}'])
def test_ping_without_data_reads_data_as_empty(session, text):
    """Frames: data absent or null is read as {}"""
    cmd = command_of(session.receive_text(text))
    assert cmd.data.ts is None


def test_echo_passes_any_object_through(session):
    """Events: echo any object -> the same object reaches the handler"""
    data = {"a": [1, {"b": None}], "text": "hi", "n": 2**64 - 1}
    cmd = command_of(session.receive_text(frame(event="echo", data=data)))
    assert cmd.data == data


def test_auth_refresh_with_token_is_command(session):
    """Events: auth.refresh {"token"} -> command"""
    cmd = command_of(session.receive_text(frame(event="auth.refresh", data={"token": "abc", "ignored": 1})))
    assert isinstance(cmd.data, AuthRefreshData)
    assert cmd.data.token == "abc"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({}, "required"),
        ({"token": None}, "must be a string"),
        ({"token": 5}, "must be a string"),
        ({"token": ["abc"]}, "must be a string"),
        ({"token": ""}, "too short"),
        ({"token": "t" * (MAX_TOKEN_LENGTH + 1)}, "too long"),
    ],
)
def test_missing_or_wrong_type_field_is_validation_error_naming_the_field(session, data, reason):
    """Errors: validation_error -> data misses a required field or has a wrong type; fields names each"""
    outcome = session.receive_text(frame(event="auth.refresh", id="r-1", data=data))
    reply = reply_of(outcome)
    assert reply["event"] == "error"
    assert reply["ref"] == "r-1"
    assert reply["data"]["code"] == "validation_error"
    assert reply["data"]["fields"] == {"token": reason}
    assert "data.token" in reply["data"]["message"]
    assert isinstance(outcome.error, ValidationFailed)
    assert_stays_open(session)


def test_validation_error_reply_never_contains_the_rejected_token_value(session):
    """Handshake: tokens never appear in any log line (validation errors do not echo the input)"""
    secret = "s" * (MAX_TOKEN_LENGTH + 1)
    outcome = session.receive_text(frame(event="auth.refresh", data={"token": secret}))
    assert isinstance(outcome, Immediate)
    assert secret[:100] not in outcome.reply
    assert outcome.error is not None
    assert secret[:100] not in outcome.error.message


def test_staff_only_event_is_forbidden_for_non_staff():
    """Errors: forbidden -> staff-only event by a non-staff user, connection stays open"""
    events = {**EVENTS, "admin.announce": EventSpec("admin.announce", None, staff_only=True)}
    session = ProtocolSession(events, is_staff=False)
    reply = reply_of(session.receive_text(frame(event="admin.announce", id="a-1", seq=0, data={"text": "x"})))
    assert reply["event"] == "error"
    assert reply["ref"] == "a-1"
    assert reply["seq"] == 0
    assert reply["data"]["code"] == "forbidden"
    assert_stays_open(session, seq=1)


def test_staff_only_event_is_a_command_for_staff():
    """Events: admin.* staff only -> staff users get the command"""
    events = {**EVENTS, "admin.announce": EventSpec("admin.announce", None, staff_only=True)}
    session = ProtocolSession(events, is_staff=True)
    cmd = command_of(session.receive_text(frame(event="admin.announce", data={"text": "x"})))
    assert cmd.event == "admin.announce"


def test_new_session_is_not_staff():
    """Errors: forbidden (a session is non-staff unless told otherwise)"""
    assert ProtocolSession(EVENTS).is_staff is False


# --- complete / fail: exactly one reply, carrying ref and seq ----------------------------------


def test_complete_renders_ack_with_ref_and_seq(session):
    """Frames: every client message gets exactly one reply: ack carrying ref and seq"""
    cmd = command_of(session.receive_text(frame(event="ping", id="c-17", seq=17, data={"ts": 5})))
    reply = json.loads(session.complete(cmd, {"ts": 5}))
    assert reply == {"event": "ack", "ref": "c-17", "seq": 17, "data": {"ts": 5}}


def test_complete_without_id_or_seq_has_null_ref_and_no_seq(session):
    """Frames: reply carries ref (the id, or null) and seq only when the message had one"""
    cmd = command_of(session.receive_text(frame(event="ping")))
    assert json.loads(session.complete(cmd, {})) == {"event": "ack", "ref": None, "data": {}}


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (NotFound("no such resource"), "not_found"),
        (Forbidden("not yours"), "forbidden"),
        (ValidationFailed("data.token: expired", fields={"token": "expired"}), "validation_error"),
    ],
)
def test_fail_with_protocol_error_renders_its_code(session, exc, code):
    """Errors: handler ProtocolErrors map to their code in one place, with ref and seq"""
    cmd = command_of(session.receive_text(frame(event="echo", id="e-1", seq=3)))
    reply = json.loads(session.fail(cmd, exc))
    assert reply["event"] == "error"
    assert reply["ref"] == "e-1"
    assert reply["seq"] == 3
    assert reply["data"]["code"] == code
    assert reply["data"]["message"] == exc.message


def test_fail_with_conflict_carries_current_version_and_data(session):
    """Errors: conflict -> stale version, with the current version and data"""
    cmd = command_of(session.receive_text(frame(event="echo", id="e-2")))
    reply = json.loads(session.fail(cmd, Conflict(current_version=4, current_data={"a": 1})))
    assert reply["data"]["code"] == "conflict"
    assert reply["data"]["current_version"] == 4
    assert reply["data"]["current_data"] == {"a": 1}


@pytest.mark.parametrize("exc", [RuntimeError("db password is hunter2"), KeyError("secret"), ZeroDivisionError()])
def test_fail_with_non_protocol_error_is_internal_error_without_details(session, exc):
    """Errors: internal_error -> a bug; anything not a ProtocolError has no details"""
    cmd = command_of(session.receive_text(frame(event="echo", id="e-3", seq=0)))
    text = session.fail(cmd, exc)
    reply = json.loads(text)
    assert reply["ref"] == "e-3"
    assert reply["seq"] == 0
    assert reply["data"]["code"] == "internal_error"
    assert set(reply["data"]) == {"code", "message"}
    assert "hunter2" not in text
    assert "secret" not in text
    assert type(exc).__name__ not in text
    assert_stays_open(session, seq=1)


def test_protocol_error_subclass_without_own_code_is_internal_error(session):
    """Errors: exceptions map to codes in one place (base ProtocolError is internal_error)"""
    cmd = command_of(session.receive_text(frame(event="echo")))
    assert json.loads(session.fail(cmd, ProtocolError()))["data"]["code"] == "internal_error"


def test_echo_of_deeply_nested_object_gets_a_reply(session):
    """Events: echo any object -> ack with the same object; every message gets exactly one reply.

    The parser accepts nesting up to orjson's read limit (1024), but orjson refuses to
    *write* more than 254 levels: data nested deeper than the documented maximum (64) is
    refused at the door with one ``validation_error`` that keeps ``ref`` and ``seq`` (issue 13).
    """
    depth = 300
    data = {"x": json.loads("[" * depth + "]" * depth)}
    reply = reply_of(session.receive_text(frame(event="echo", id="deep", seq=0, data=data)))
    assert (reply["event"], reply["data"]["code"]) == ("error", "validation_error")
    assert reply["data"]["fields"] == {"x" + ".0" * 63: "nested too deep"}
    assert reply["ref"] == "deep"
    assert reply["seq"] == 0


# --- section 5: sequence numbers --------------------------------------------------------------


def test_seq_in_order_is_acked_with_same_seq(session):
    """Ordering: Sequence numbers -> each message carries previous seq + 1, ack carries its seq"""
    for seq in range(40, 60):
        assert ping(session, seq=seq, ref=f"c-{seq}") == {"event": "ack", "ref": f"c-{seq}", "seq": seq, "data": {}}


def test_seq_gap_reports_expected(session):
    """Ordering: Sequence numbers -> sequence_gap, data.expected is the next seq the server wants"""
    ping(session, seq=0)
    ping(session, seq=1)
    outcome = session.receive_text(frame(event="ping", id="c-5", seq=5))
    reply = reply_of(outcome)
    assert reply["event"] == "error"
    assert reply["ref"] == "c-5"
    assert reply["seq"] == 5
    assert reply["data"]["code"] == "sequence_gap"
    assert reply["data"]["expected"] == 2
    assert (outcome.ref, outcome.seq, outcome.event) == ("c-5", 5, "ping")
    assert_stays_open(session, seq=2)


def test_seq_gap_message_is_not_processed_and_resend_works(session):
    """Ordering: sequence_gap -> resend from expected (the skipped-to message is not processed)"""
    ping(session, seq=0)
    assert reply_of(session.receive_text(frame(event="ping", seq=3)))["data"]["expected"] == 1
    # the gap did not move the expected seq and was not cached as seq 3's reply
    for seq in (1, 2, 3):
        assert ping(session, seq=seq) == {"event": "ack", "ref": None, "seq": seq, "data": {}}


def test_seq_gap_on_invalid_message_reports_gap_first(session):
    """Ordering: sequence_gap -> a skipped-to message is not processed, even if it is invalid"""
    ping(session, seq=0)
    reply = reply_of(session.receive_text(frame(event="nope", seq=9)))
    assert reply["data"]["code"] == "sequence_gap"
    assert reply["data"]["expected"] == 1


def test_retransmit_returns_original_reply(session):
    """Ordering: a seq lower than expected is a retransmission and gets the reply it got the first time"""
    cmd = command_of(session.receive_text(frame(event="ping", id="c-0", seq=0, data={"ts": 1})))
    first = session.complete(cmd, {"ts": 1})
    ping(session, seq=1)
    # resend (even with different content): not processed again, same reply text
    outcome = session.receive_text(frame(event="echo", id="other", seq=0, data={"ts": 2}))
    assert isinstance(outcome, Immediate)
    assert outcome.reply == first
    assert ping(session, seq=2)["seq"] == 2


def test_retransmit_of_failed_message_returns_original_error(session):
    """Ordering: retransmission gets the reply it got the first time (also an error from fail())"""
    cmd = command_of(session.receive_text(frame(event="echo", id="c-0", seq=0)))
    first = session.fail(cmd, NotFound())
    outcome = session.receive_text(frame(event="echo", id="c-0", seq=0))
    assert isinstance(outcome, Immediate)
    assert outcome.reply == first


def test_retransmit_answers_for_the_last_100_messages(session):
    """Ordering: retransmission answered from cache for at least the last 100 messages"""
    replies = {seq: json.dumps(ping(session, seq=seq, ref=f"c-{seq}")) for seq in range(150)}
    for seq in range(150 - REPLY_CACHE_SIZE, 150):
        outcome = session.receive_text(frame(event="ping", id=f"c-{seq}", seq=seq))
        assert isinstance(outcome, Immediate)
        assert json.loads(outcome.reply) == json.loads(replies[seq])


def test_retransmission_older_than_cache_is_sequence_gap_with_expected(session):
    """Ordering: retransmission older than the 100-reply cache -> sequence_gap with expected"""
    for seq in range(150):
        ping(session, seq=seq)
    reply = reply_of(session.receive_text(frame(event="ping", id="old", seq=3)))
    assert reply["event"] == "error"
    assert reply["ref"] == "old"
    assert reply["seq"] == 3
    assert reply["data"]["code"] == "sequence_gap"
    assert reply["data"]["expected"] == 150
    # the stale message moved nothing
    assert ping(session, seq=150)["event"] == "ack"


def test_seq_below_first_seq_is_sequence_gap(session):
    """Ordering: a lower seq that was never processed -> sequence_gap with expected"""
    ping(session, seq=10)
    reply = reply_of(session.receive_text(frame(event="ping", seq=9)))
    assert reply["data"]["code"] == "sequence_gap"
    assert reply["data"]["expected"] == 11


def test_message_without_seq_after_seq_is_invalid_envelope(session):
    """Ordering: a message without seq on a connection that already uses seq -> invalid_envelope"""
    ping(session, seq=0)
    outcome = session.receive_text(frame(event="ping", id="noseq"))
    reply = reply_of(outcome)
    assert reply["event"] == "error"
    assert reply["ref"] == "noseq"
    assert "seq" not in reply
    assert reply["data"]["code"] == "invalid_envelope"
    # it did not consume a seq
    assert ping(session, seq=1)["event"] == "ack"


def test_messages_without_seq_before_seq_is_used_are_fine(session):
    """Frames: seq optional -> a connection may start using seq after unsequenced messages"""
    assert ping(session) == {"event": "ack", "ref": None, "data": {}}
    assert ping(session, seq=7)["seq"] == 7
    assert ping(session, seq=8)["seq"] == 8


@pytest.mark.parametrize(
    "text",
    [
        '{"event": 5, "seq": 0}',
        '{"seq": 0}',
        '{"event": "ping", "id": 12, "seq": 0}',
        '{"event": "ping", "seq": 0, "data": []}',
        '{"event": "nope", "seq": 0}',
        '{"event": "auth.refresh", "seq": 0, "data": {}}',
    ],
)
def test_rejected_message_with_readable_seq_consumes_it_and_caches_the_error(session, text):
    """Ordering: envelopes whose seq is readable consume it even when rejected; the error is cached"""
    outcome = session.receive_text(text)
    first = reply_of(outcome)
    assert first["event"] == "error"
    assert first["seq"] == 0
    assert isinstance(outcome, Immediate)
    # the next seq is 1, and resending 0 returns the same error text
    assert session.sequence.expected == 1
    again = session.receive_text(text)
    assert isinstance(again, Immediate)
    assert again.reply == outcome.reply
    assert ping(session, seq=1)["event"] == "ack"


@pytest.mark.parametrize("raw_seq", ['"1"', "1.0", "true", "-1", str(2**63), "null"])
def test_unreadable_seq_on_seq_connection_does_not_consume(session, raw_seq):
    """Frames: seq not an integer -> invalid_envelope (and it does not consume a seq)"""
    ping(session, seq=0)
    reply = reply_of(session.receive_text('{"event": "ping", "id": "bad", "seq": ' + raw_seq + "}"))
    assert reply["event"] == "error"
    assert reply["ref"] == "bad"
    assert "seq" not in reply
    assert reply["data"]["code"] == "invalid_envelope"
    assert ping(session, seq=1)["event"] == "ack"


@pytest.mark.parametrize("text", ["", "{", "[1]"])
def test_unsequenced_errors_on_seq_connection_do_not_consume(session, text):
    """Errors: empty_message / invalid_json / invalid_envelope carry no seq and leave seq alone"""
    ping(session, seq=0)
    reply = reply_of(session.receive_text(text))
    assert reply["event"] == "error"
    assert "seq" not in reply
    assert ping(session, seq=1)["event"] == "ack"


def test_immediate_carries_logging_fields(session):
    """Errors: internal fields for logging -> the error, event, ref and seq of an immediate reply"""
    outcome = session.receive_text(frame(event="auth.refresh", id="r-9", seq=4, data={}))
    assert isinstance(outcome, Immediate)
    assert isinstance(outcome.error, ValidationFailed)
    assert (outcome.event, outcome.ref, outcome.seq) == ("auth.refresh", "r-9", 4)


def test_sessions_do_not_share_sequence_state():
    """Frames: seq is per connection"""
    first, second = ProtocolSession(EVENTS), ProtocolSession(EVENTS)
    ping(first, seq=0)
    ping(first, seq=1)
    assert ping(second, seq=0)["event"] == "ack"
    assert ping(second)["data"]["code"] == "invalid_envelope"
    assert ping(first, seq=2)["event"] == "ack"


def test_retransmission_of_a_reply_evicted_for_size_is_limit_exceeded_and_not_processed():
    """Section 11 / issue 13: a seq whose cached reply was dropped for size is answered
    limit_exceeded naming REALTIME_MAX_REPLY_BYTES with processed: true, and not run again"""
    from realtime.protocol.sequence import SequenceTracker

    session = ProtocolSession(EVENTS, sequence=SequenceTracker(max_bytes=2000))
    for seq in (1, 2, 3):
        command = session.receive_text(
            json.dumps({"event": "echo", "id": f"e{seq}", "seq": seq, "data": {"b": "x" * 900}})
        )
        assert isinstance(command, Command)
        session.complete(command, command.data)
    again = session.receive_text(json.dumps({"event": "echo", "id": "e1", "seq": 1, "data": {}}))
    assert isinstance(again, Immediate)
    frame = json.loads(again.reply)
    assert (frame["event"], frame["ref"], frame["seq"]) == ("error", "e1", 1)
    assert frame["data"]["code"] == "limit_exceeded"
    assert (frame["data"]["limit"], frame["data"]["processed"]) == ("REALTIME_MAX_REPLY_BYTES", True)
    kept = session.receive_text(json.dumps({"event": "echo", "id": "e3", "seq": 3, "data": {}}))
    assert isinstance(kept, Immediate)
    assert json.loads(kept.reply)["data"] == {"b": "x" * 900}
