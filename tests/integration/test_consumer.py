"""RealtimeConsumer in-process through the full ASGI stack (origin guard, JWT middleware), real database."""

from __future__ import annotations

import orjson
import pytest
from asgiref.sync import sync_to_async

from accounts.models import User
from realtime.models import ConnectionSession

pytestmark = pytest.mark.django_db(transaction=True)


async def test_welcome_then_echo_and_session_row(alice: User, communicator) -> None:
    """Connection: Connect -> welcome first; the session is recorded with this server's id."""
    comm = communicator(alice, headers=[(b"user-agent", b"pytest")])
    connected, _ = await comm.connect()
    assert connected
    welcome = orjson.loads(await comm.receive_from())
    assert welcome["event"] == "session.welcome"
    await comm.send_to(text_data='{"event":"echo","id":"1","data":{"a":[1,2]}}')
    assert orjson.loads(await comm.receive_from()) == {"event": "ack", "ref": "1", "data": {"a": [1, 2]}}
    session = await ConnectionSession.objects.aget(pk=welcome["data"]["session_id"])
    assert (session.user_id, session.user_agent, session.disconnected_at) == (alice.pk, "pytest", None)
    await comm.disconnect(code=1000)
    session = await ConnectionSession.objects.aget(pk=session.pk)
    assert (session.close_code, session.messages_in, session.messages_out) == (1000, 1, 2)
    assert session.disconnected_at is not None


async def test_missing_token_accepts_then_closes_4401(communicator) -> None:
    """Security: No auth token -> accepted, then closed 4401 missing_token with nothing sent before."""
    comm = communicator()
    connected, _ = await comm.connect()
    assert connected
    assert await comm.receive_output() == {"type": "websocket.close", "code": 4401, "reason": "missing_token"}
    assert await sync_to_async(ConnectionSession.objects.count)() == 0


async def test_inactive_user_closes_4403(alice: User, communicator) -> None:
    """Security: Invalid token (account disabled) -> 4403 account_disabled."""
    alice.is_active = False
    await alice.asave()
    comm = communicator(alice)
    await comm.connect()
    assert await comm.receive_output() == {"type": "websocket.close", "code": 4403, "reason": "account_disabled"}


async def test_disallowed_origin_is_denied_before_auth(alice: User, communicator) -> None:
    """Security: Origin validation -> the origin guard refuses before any token work."""
    comm = communicator(alice, headers=[(b"origin", b"http://evil.example")])
    connected, _ = await comm.connect()
    assert not connected


async def test_unknown_event_is_refused_without_a_handler(alice: User, communicator) -> None:
    """Message: Unknown event type -> refused from the registry, before any handler runs."""
    comm = communicator(alice)
    await comm.connect()
    await comm.receive_from()
    await comm.send_to(text_data='{"event":"nope.nope","id":"x"}')
    reply = orjson.loads(await comm.receive_from())
    assert (reply["ref"], reply["data"]["code"]) == ("x", "unknown_event")
    await comm.disconnect()
