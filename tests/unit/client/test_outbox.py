"""The client's Outbox and FrameRouter as composed objects, each with a small owner of its own.

The owners here are real implementations of ``OutboxOwner`` and ``RouterOwner``, standing in
for ``RealtimeClient``: the two parts work without the client around them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from realtime_client.dispatch import FrameRouter
from realtime_client.errors import ClientClosed, RealtimeError, ServerError
from realtime_client.outbox import Outbox
from realtime_client.subscription import Subscription
from tests.unit.client.fakes import FakeSocket


class Owner:
    def __init__(self) -> None:
        self.stopped = False
        self.started = 0
        self.expiring = 0
        self.subscriptions: dict[str, Subscription] = {}

    def ensure_running(self) -> None:
        if self.stopped:
            raise ClientClosed()
        self.started += 1

    @property
    def is_open(self) -> bool:
        return not self.stopped

    def session_expiring(self) -> None:
        self.expiring += 1


def outcomes() -> tuple[list[tuple[Any, RealtimeError | None]], Any]:
    seen: list[tuple[Any, RealtimeError | None]] = []
    return seen, lambda ack, error: seen.append((ack, error))


async def test_outbox_sends_in_call_order_and_settles_replies_routed_to_it() -> None:
    """Calls: one reply per call, matched by id; a rate_limited refusal is sent again, not failed."""
    owner = Owner()
    outbox = Outbox(owner, ack_timeout=5.0, max_in_flight=8, id_prefix="t")
    router = FrameRouter(owner, outbox)
    seen, on_done = outcomes()
    first = outbox.new_call("ping", {}, None, on_done, resend=True)
    second = outbox.new_call("ping", {"n": 2}, "own-id", on_done, resend=True)
    assert owner.started == 2
    ws = FakeSocket()
    sender = asyncio.get_running_loop().create_task(outbox.send_loop(ws))  # type: ignore[arg-type]
    try:
        assert (await ws.next_sent(2))["id"] == "own-id"
        assert ws.sent[0]["id"] == first.id
        router.on_frame(f'{{"event":"error","ref":"{first.id}","data":{{"code":"rate_limited"}}}}')
        assert outbox.flow.paused
        assert seen == []
        router.on_frame('{"event":"ack","ref":"own-id","data":{"pong":true}}')
        assert seen == [({"pong": True}, None)]
        assert second.done
        assert (await ws.next_sent(3))["id"] == first.id  # the same id once the pause is over
        router.on_frame(f'{{"event":"error","ref":"{first.id}","data":{{"code":"forbidden"}}}}')
        assert isinstance(seen[1][1], ServerError)
        assert seen[1][1].code == "forbidden"
    finally:
        sender.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sender


async def test_outbox_refuses_calls_once_its_owner_stopped_and_stop_fails_pending_ones() -> None:
    """Client closed: pending calls fail with the close error; new ones raise it at once."""
    owner = Owner()
    outbox = Outbox(owner, ack_timeout=5.0, max_in_flight=8, id_prefix=None)
    seen, on_done = outcomes()
    outbox.new_call("ping", {}, None, on_done, resend=True)
    owner.stopped = True
    outbox.stop(ClientClosed())
    assert isinstance(seen[0][1], ClientClosed)
    assert not outbox.queue
    with pytest.raises(ClientClosed):
        outbox.new_call("ping", {}, None, on_done, resend=True)


def test_router_hands_auth_expiring_to_its_owner_and_every_push_to_on_push() -> None:
    """auth.expiring is the owner's to act on; on_push callbacks still see it, and a failing one is contained."""
    owner = Owner()
    router = FrameRouter(owner, Outbox(owner, ack_timeout=5.0, max_in_flight=8, id_prefix=None))
    pushed: list[str] = []

    def failing(frame: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    router.push_callbacks += [failing, lambda frame: pushed.append(frame["event"])]
    router.on_frame('{"event":"auth.expiring","data":{"expires_in":30}}')
    router.on_frame('{"event":"session.welcome","data":{}}')
    router.on_frame("not json")
    assert owner.expiring == 1
    assert pushed == ["auth.expiring"]
