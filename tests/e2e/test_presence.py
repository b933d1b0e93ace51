"""Presence and signals on one real server (issue 17): tabs, snapshots, joins and leaves,
metadata, signals and their limits, a client's resume after a network cut."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from realtime_client import RealtimeClient
from tests.conftest import scaled
from tests.e2e.helpers import ServerProcess, call, connect, obtain_tokens, recv_json
from tests.e2e.test_metrics import scrape
from tests.fault_proxy import FaultProxy
from tests.waiting import async_wait_until

pytestmark = pytest.mark.timeout(60)


def room() -> str:
    return f"room:presence-{uuid.uuid4().hex[:10]}"


async def session(server: ServerProcess, user: str) -> ClientConnection:
    ws = await connect(server, obtain_tokens(server, user)["access"])
    assert (await recv_json(ws))["event"] == "session.welcome"
    return ws


async def ask(ws: ClientConnection, event: str, data: dict[str, Any]) -> dict[str, Any]:
    """A call's reply, skipping the pushes that arrive before it."""
    ref = uuid.uuid4().hex[:12]
    await ws.send(json.dumps({"event": event, "id": ref, "data": data}))
    async with asyncio.timeout(scaled(5)):
        while True:
            frame = await recv_json(ws)
            if frame.get("ref") == ref:
                return frame


async def subscribe(ws: ClientConnection, stream: str) -> dict[str, Any]:
    """Subscribe asking for presence; returns the presence.state that follows the ack."""
    reply = await call(ws, {"event": "stream.subscribe", "id": "s", "data": {"stream": stream, "presence": True}})
    assert reply["event"] == "ack", reply
    state = await next_push(ws, "presence.state")
    data: dict[str, Any] = state["data"]
    return data


async def next_push(ws: ClientConnection, event: str, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(scaled(timeout)):
        while True:
            frame = await recv_json(ws, timeout=scaled(timeout))
            if frame["event"] == event:
                return frame


async def no_push(ws: ClientConnection, event: str, within: float = 0.8) -> None:
    try:
        async with asyncio.timeout(within):
            while True:
                frame = await recv_json(ws, timeout=within)
                assert frame["event"] != event, frame
    except TimeoutError:
        return


def ids(users: list[dict[str, Any]]) -> list[str]:
    return [u["username"] for u in users]


async def test_two_tabs_of_one_user_join_once_and_leave_with_the_last(server) -> None:
    """Issue 17, per user not per tab: alice's second tab sends no presence.join, closing her
    first tab no presence.leave; stream.presence counts her two sessions; she leaves with the last."""
    stream = room()
    bob = await session(server, "bob")
    state = await subscribe(bob, stream)
    assert ids(state["users"]) == ["bob"]
    assert state["degraded"] is False
    tab1, tab2 = await session(server, "alice"), await session(server, "alice")
    await subscribe(tab1, stream)
    joined = await next_push(bob, "presence.join")
    assert [(u["username"], u["sessions"]) for u in joined["data"]["users"]] == [("alice", 1)]
    state = await subscribe(tab2, stream)
    assert sorted(ids(state["users"])) == ["alice", "bob"]
    await no_push(bob, "presence.join")
    answer = await ask(bob, "stream.presence", {"stream": stream})
    assert answer["event"] == "ack"
    assert {u["username"]: u["sessions"] for u in answer["data"]["users"]} == {"alice": 2, "bob": 1}
    await tab1.close()
    await no_push(bob, "presence.leave")
    await tab2.close()
    left = await next_push(bob, "presence.leave")
    assert left["data"] == {"stream": stream, "users": [{"id": left["data"]["users"][0]["id"], "username": "alice"}]}
    await bob.close()


async def test_unsubscribe_leaves_and_metadata_is_announced(server) -> None:
    """Issue 17: stream.presence with meta sets the caller's metadata (a presence.join of the same
    member for the others); unsubscribing leaves; non-presence streams and non-subscribers are refused."""
    stream = room()
    alice, bob = await session(server, "alice"), await session(server, "bob")
    await subscribe(alice, stream)
    await subscribe(bob, stream)
    await next_push(alice, "presence.join")
    reply = await ask(bob, "stream.presence", {"stream": stream, "meta": {"status": "away"}})
    assert reply["event"] == "ack"
    assert {u["username"]: u["meta"] for u in reply["data"]["users"]}["bob"] == {"status": "away"}
    update = await next_push(alice, "presence.join")
    assert [(u["username"], u["meta"]) for u in update["data"]["users"]] == [("bob", {"status": "away"})]
    assert (await ask(bob, "stream.presence", {"stream": "resource:1"}))["data"]["code"] == "validation_error"
    big = {"x": "y" * 600}
    assert (await ask(bob, "stream.presence", {"stream": stream, "meta": big}))["data"]["code"] == "validation_error"
    other = room()
    refused = await ask(bob, "stream.presence", {"stream": other, "meta": {"a": 1}})
    assert refused["data"]["code"] == "forbidden"
    assert (await ask(bob, "stream.presence", {"stream": other}))["data"]["users"] == []
    await ask(bob, "stream.unsubscribe", {"stream": stream})
    left = await next_push(alice, "presence.leave")
    assert ids(left["data"]["users"]) == ["bob"]
    await alice.close()
    await bob.close()


async def test_signals_reach_the_others_once_and_are_limited(server_factory) -> None:
    """Issue 17, ephemeral signals: stream.signal reaches the other subscribers (the sender's
    other tab too) once, not the sender, and is not in the history; over 1 KB is refused with
    validation_error, a non-subscriber with forbidden, past REALTIME_SIGNAL_RATE limit_exceeded."""
    server = server_factory(REALTIME_SIGNAL_RATE="3")
    stream = room()
    alice, bob, bob2 = await session(server, "alice"), await session(server, "bob"), await session(server, "bob")
    for ws in (alice, bob, bob2):
        await subscribe(ws, stream)
    reply = await ask(bob, "stream.signal", {"stream": stream, "data": {"typing": True}})
    assert reply == {"event": "ack", "ref": reply["ref"], "data": {"stream": stream}}
    for ws in (alice, bob2):
        signal = await next_push(ws, "stream.signal")
        assert signal["data"]["from"]["username"] == "bob"
        assert signal["data"]["data"] == {"typing": True}
        assert "offset" not in signal
    await no_push(bob, "stream.signal", within=0.5)
    too_big = await ask(bob, "stream.signal", {"stream": stream, "data": "x" * 1100})
    assert too_big["data"]["code"] == "validation_error"
    outsider = await ask(alice, "stream.signal", {"stream": room(), "data": 1})
    assert outsider["data"]["code"] == "forbidden"
    codes = [(await ask(alice, "stream.signal", {"stream": stream, "data": n}))["event"] for n in range(6)]
    assert codes[:3] == ["ack"] * 3
    assert "error" in codes[3:]
    limited = await ask(alice, "stream.signal", {"stream": stream, "data": 9})
    assert limited["data"] == {
        "code": "limit_exceeded",
        "message": limited["data"]["message"],
        "limit": "REALTIME_SIGNAL_RATE",
    }
    history = await ask(alice, "stream.history", {"stream": stream, "since": 0})
    assert history["data"]["events"] == []
    for ws in (alice, bob, bob2):
        await ws.close()


async def test_a_client_resuming_after_a_network_cut_gets_the_current_members(server) -> None:
    """Issue 17, resumable: the Python client's presence map; the network is cut, bob leaves and
    admin joins meanwhile; on the resume the presence.state replaces the map: no stale member."""
    stream = room()
    proxy = await FaultProxy(server.host, server.port).start()
    tokens = {name: obtain_tokens(server, name)["access"] for name in ("alice", "bob", "admin")}
    try:
        async with (
            RealtimeClient(proxy.ws_url, token=tokens["alice"], backoff_initial=0.05, backoff_max=0.5) as alice,
            RealtimeClient(server.ws_url, token=tokens["bob"]) as bob,
            RealtimeClient(server.ws_url, token=tokens["admin"]) as admin,
        ):
            sub = await alice.subscribe(stream, presence=True)
            bob_sub = await bob.subscribe(stream, presence=True)
            await async_wait_until(lambda: names(sub.presence) == {"alice", "bob"}, timeout=10)
            proxy.refuse = True
            await proxy.cut()
            await bob_sub.unsubscribe()
            await admin.subscribe(stream)
            await asyncio.sleep(0.5)
            assert names(sub.presence) == {"alice", "bob"}  # cut off: nothing tells it yet
            proxy.refuse = False
            await async_wait_until(lambda: names(sub.presence) == {"alice", "admin"}, timeout=10)
            assert sub.resumes == 1
            assert sub.presence_degraded is False
    finally:
        await proxy.close()


def names(presence: dict[int, dict[str, Any]]) -> set[str]:
    return {u["username"] for u in presence.values()}


async def test_presence_and_signal_counts_in_metrics(server_factory) -> None:
    """Issue 17, operators: /metrics reports members and presence streams held by the server, the
    presence pushes sent and signals by outcome, with no per-stream or per-user label."""
    server = server_factory(REALTIME_SIGNAL_RATE="1")
    stream = room()
    alice, bob = await session(server, "alice"), await session(server, "bob")
    await subscribe(alice, stream)
    await subscribe(bob, stream)
    await next_push(alice, "presence.join")
    await ask(bob, "stream.signal", {"stream": stream, "data": 1})
    await ask(bob, "stream.signal", {"stream": stream, "data": 2})  # past the rate: dropped
    samples = scrape(server)
    assert samples["realtime_presence_members{}"] == 2
    assert samples["realtime_presence_streams{}"] == 1
    assert samples["realtime_presence_pushes_total{event=presence.join}"] >= 1
    assert samples["realtime_signals_total{outcome=sent}"] == 1
    assert samples["realtime_signals_total{outcome=rate_limited}"] == 1
    presence_labels = {
        key.split("{")[1] for key in samples if key.startswith(("realtime_presence", "realtime_signals"))
    }
    assert all("stream" not in labels and "user" not in labels for labels in presence_labels)
    await alice.close()
    await bob.close()


async def test_a_contract_client_that_did_not_ask_receives_only_the_contracts_frames(server) -> None:
    """Issue 17 beside the contract: a room subscriber that did not send ``"presence": true``
    gets no presence.state, presence.join/leave or stream.signal; the next frame after its ack
    is the next event of the room, while it still counts as present for those who asked."""
    stream = room()
    plain = await session(server, "alice")
    reply = await call(plain, {"event": "stream.subscribe", "id": "s", "data": {"stream": stream}})
    assert reply["event"] == "ack", reply
    bob = await session(server, "bob")
    state = await subscribe(bob, stream)
    assert "alice" in ids(state["users"])  # present, though she never asked for presence
    answer = await ask(bob, "stream.presence", {"stream": stream})
    assert sorted(ids(answer["data"]["users"])) == ["alice", "bob"]
    signal = await ask(bob, "stream.signal", {"stream": stream, "data": {"typing": True}})
    assert signal["event"] == "ack", signal
    sent = await ask(bob, "message.send", {"stream": stream, "text": "hello"})
    assert sent["event"] == "ack", sent
    frame = json.loads(await asyncio.wait_for(plain.recv(), scaled(5)))
    assert frame["event"] == "message.new", frame
    assert frame["data"]["text"] == "hello"
    await plain.close()
    await bob.close()
