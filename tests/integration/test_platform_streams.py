"""Issue 16: a team's stream namespaces (tests/platform_app) over the full ASGI stack, and
``prune_events`` honouring each namespace's retention."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import orjson
import pytest
from channels.testing import WebsocketCommunicator
from django.core.management import call_command
from django.utils import timezone

import realtime
from accounts.models import User
from realtime.models import Event

pytestmark = pytest.mark.django_db(transaction=True)


async def _open(communicator: Any, user: User) -> WebsocketCommunicator:
    comm = communicator(user)
    connected, _ = await comm.connect()
    assert connected
    assert orjson.loads(await comm.receive_from())["event"] == "session.welcome"
    return comm


async def _call(comm: WebsocketCommunicator, event: str, data: dict[str, Any]) -> dict[str, Any]:
    await comm.send_to(text_data=orjson.dumps({"event": event, "id": "r", "data": data}).decode())
    reply: dict[str, Any] = orjson.loads(await comm.receive_from())
    return reply


async def test_subscribe_is_decided_by_the_namespace_callback(alice: User, communicator: Any) -> None:
    """can_subscribe (ORM, in the database thread): shared lists and the user's own are allowed,
    another user's list is forbidden with the namespace's message"""
    comm = await _open(communicator, alice)
    shared = await _call(comm, "stream.subscribe", {"stream": "todo:shared-home"})
    assert shared["event"] == "ack"
    assert shared["data"]["stream"] == "todo:shared-home"
    own = await _call(comm, "stream.subscribe", {"stream": f"todo:u{alice.pk}"})
    assert own["event"] == "ack"
    other = await _call(comm, "stream.subscribe", {"stream": f"todo:u{alice.pk + 1}"})
    assert other["data"] == {"code": "forbidden", "message": f"todo:u{alice.pk + 1} is another user's list"}
    history = await _call(comm, "stream.history", {"stream": f"todo:u{alice.pk + 1}", "since": 0})
    assert history["data"]["code"] == "forbidden"
    gone = await _call(comm, "stream.subscribe", {"stream": "todo:gone"})
    assert gone["data"] == {"code": "not_found", "message": "todo list gone was deleted"}
    await comm.disconnect()


async def test_a_failing_authorization_callback_is_internal_error_and_logged(
    alice: User, communicator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A can_subscribe that raises -> internal_error naming the check, traceback logged, connection kept"""
    comm = await _open(communicator, alice)
    with caplog.at_level(logging.ERROR, logger="realtime.connection"):
        reply = await _call(comm, "stream.subscribe", {"stream": "todo:boom"})
    assert reply["data"] == {"code": "internal_error", "message": "the can_subscribe check of todo: streams failed"}
    logged = [r for r in caplog.records if r.getMessage() == "namespace check failed"]
    assert logged
    assert logged[0].exc_info is not None
    assert (await _call(comm, "ping", {}))["event"] == "ack"
    await comm.disconnect()


async def test_an_unknown_namespace_is_a_validation_error(alice: User, communicator: Any) -> None:
    comm = await _open(communicator, alice)
    reply = await _call(comm, "stream.subscribe", {"stream": "chan:lobby"})
    assert reply["data"]["code"] == "validation_error"
    assert reply["data"]["fields"] == {"stream": "invalid stream name"}
    assert reply["data"]["message"].startswith("data.stream: unknown stream namespace 'chan' (known: room:, user:")
    await comm.disconnect()


async def test_client_publishing_follows_the_namespace(alice: User, communicator: Any) -> None:
    """can_publish: a server-only namespace refuses message.send; a client-publishable one
    accepts it unless its callback says no"""
    comm = await _open(communicator, alice)
    server_only = await _call(comm, "message.send", {"stream": "todo:shared-home", "text": "hi"})
    assert server_only["data"]["code"] == "validation_error"
    assert server_only["data"]["fields"] == {"stream": "not a room"}
    assert "todo: streams are published by the server only" in server_only["data"]["message"]
    sent = await _call(comm, "message.send", {"stream": "chat:general", "text": "hi"})
    assert sent["data"] == {"stream": "chat:general", "offset": 1}
    refused = await _call(comm, "message.send", {"stream": "chat:readonly", "text": "hi"})
    assert refused["data"] == {"code": "forbidden", "message": "not allowed to publish to chat:readonly"}
    await comm.disconnect()


def _age(stream: str, hours: float) -> None:
    Event.objects.filter(stream__name=stream).update(created_at=timezone.now() - timedelta(hours=hours))


def test_prune_events_honours_each_namespaces_retention(alice: User) -> None:
    """retention: room: follows REALTIME_RETENTION_HOURS (24 h), todo: keeps 48 h, chat: forever"""
    for stream in ("room:old", "room:new", "todo:shared-old", "todo:shared-mid", "chat:old"):
        realtime.publish(stream, "thing.done", {"n": 1})
    _age("room:old", 30)
    _age("todo:shared-mid", 30)
    _age("todo:shared-old", 50)
    _age("chat:old", 10_000)
    call_command("prune_events")
    left = set(Event.objects.values_list("stream__name", flat=True))
    assert left == {"room:new", "todo:shared-mid", "chat:old"}
    call_command("prune_events", "--hours", "0")  # overrides the setting, not a namespace's own
    assert set(Event.objects.values_list("stream__name", flat=True)) == {"todo:shared-mid", "chat:old"}
