"""Issue 16 / issue 20: a team's client events (tests/platform_app) over the full ASGI stack.

``todo.create`` and friends are declared with ``@realtime.client_event`` in the test app's
``realtime_streams.py``; they get validation errors, acks, staff checks, error handling and
``seq`` retransmission exactly like the contract's events."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from channels.testing import WebsocketCommunicator

from accounts.models import User
from realtime.models import Event

pytestmark = pytest.mark.django_db(transaction=True)


async def _open(communicator: Any, user: User) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    comm = communicator(user)
    connected, _ = await comm.connect()
    assert connected
    welcome: dict[str, Any] = orjson.loads(await comm.receive_from())
    assert welcome["event"] == "session.welcome"
    return comm, welcome


async def _call(comm: WebsocketCommunicator, message: dict[str, Any]) -> dict[str, Any]:
    await comm.send_to(text_data=orjson.dumps(message).decode())
    reply: dict[str, Any] = orjson.loads(await comm.receive_from())
    return reply


async def test_a_team_event_is_validated_handled_and_acked(alice: User, communicator: Any) -> None:
    """todo.create: validated against its schema, its handler publishes, the reply is an ack"""
    comm, _ = await _open(communicator, alice)
    ack = await _call(comm, {"event": "todo.create", "id": "t-1", "data": {"list": "shared-home", "title": "milk"}})
    assert ack == {"event": "ack", "ref": "t-1", "data": {"stream": "todo:shared-home", "offset": 1}}
    history = await _call(
        comm, {"event": "stream.history", "id": "h", "data": {"stream": "todo:shared-home", "since": 0}}
    )
    events = history["data"]["events"]
    assert [(e["event"], e["offset"], e["data"]) for e in events] == [
        ("todo.created", 1, {"title": "milk", "by": alice.pk})
    ]
    await comm.disconnect()


@pytest.mark.parametrize(
    ("data", "fields"),
    [
        ({"list": "shared-home"}, {"title": "required"}),
        ({"list": "shared-home", "title": 7}, {"title": "must be a string"}),
        ({"list": "Not A List", "title": "milk"}, {"list": "invalid format"}),
    ],
)
async def test_schema_errors_are_validation_errors_naming_the_field(
    alice: User, communicator: Any, data: dict[str, Any], fields: dict[str, str]
) -> None:
    """Bad input: schema errors of a team event -> validation_error naming the field"""
    comm, _ = await _open(communicator, alice)
    reply = await _call(comm, {"event": "todo.create", "id": "v", "data": data})
    assert reply["event"] == "error"
    assert reply["data"]["code"] == "validation_error"
    assert reply["data"]["fields"] == fields
    assert reply["data"]["message"].startswith(f"data.{next(iter(fields))}: ")
    assert await Event.objects.acount() == 0
    await comm.disconnect()


async def test_a_staff_only_team_event_is_forbidden_to_others(alice: User, communicator: Any) -> None:
    """staff_only=True -> forbidden before the handler runs; staff get the ack"""
    comm, _ = await _open(communicator, alice)
    reply = await _call(comm, {"event": "todo.purge", "id": "p"})
    assert (reply["event"], reply["data"]["code"]) == ("error", "forbidden")
    assert reply["data"]["message"] == "todo.purge is for staff only"
    await comm.disconnect()
    staff = await User.objects.acreate_user(username="root", password="pw-root-1234567", is_staff=True)
    comm, welcome = await _open(communicator, staff)
    reply = await _call(comm, {"event": "todo.purge", "id": "p"})
    # The handler sees the connection's id (ClientConnection.connection_id): the welcome's session id.
    assert reply["data"] == {"purged": True, "by": welcome["data"]["session_id"]}
    await comm.disconnect()


async def test_a_raising_handler_is_internal_error_logged_and_the_connection_stays(
    alice: User, communicator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler that raises -> internal_error, its traceback logged, the connection still usable"""
    comm, _ = await _open(communicator, alice)
    with caplog.at_level(logging.ERROR, logger="realtime.connection"):
        reply = await _call(comm, {"event": "todo.explode", "id": "boom"})
    assert reply == {"event": "error", "ref": "boom", "data": {"code": "internal_error", "message": "internal error"}}
    failed = [r for r in caplog.records if r.getMessage() == "handler failed"]
    assert failed
    assert failed[0].exc_info is not None
    assert "a bug in the team's handler" in str(failed[0].exc_info[1])
    assert (await _call(comm, {"event": "ping", "id": "after"}))["event"] == "ack"
    await comm.disconnect()


async def test_a_protocol_error_raised_by_a_team_handler_reaches_the_client(alice: User, communicator: Any) -> None:
    comm, _ = await _open(communicator, alice)
    reply = await _call(comm, {"event": "todo.get", "id": "g", "data": {"list": "nowhere"}})
    assert reply["data"] == {"code": "not_found", "message": "todo list nowhere does not exist"}
    await comm.disconnect()


async def test_an_undeclared_event_is_still_unknown_event(alice: User, communicator: Any) -> None:
    comm, _ = await _open(communicator, alice)
    reply = await _call(comm, {"event": "todo.delete", "id": "u"})
    assert (reply["ref"], reply["data"]["code"]) == ("u", "unknown_event")
    await comm.disconnect()


async def test_team_events_get_seq_retransmission_and_idempotent_ids(alice: User, communicator: Any) -> None:
    """idempotent: a retransmitted seq is answered from the reply cache without running the
    handler again; the same id sent again (a retry after reconnect) stores one event"""
    comm, _ = await _open(communicator, alice)
    message = {"event": "todo.create", "id": "once", "seq": 0, "data": {"list": "shared-a", "title": "x"}}
    first = await _call(comm, message)
    assert first["data"] == {"stream": "todo:shared-a", "offset": 1}
    assert await _call(comm, message) == first
    await comm.disconnect()
    comm, _ = await _open(communicator, alice)
    again = await _call(comm, {k: v for k, v in message.items() if k != "seq"})
    assert again["data"] == first["data"]
    assert await Event.objects.acount() == 1
    await comm.disconnect()
