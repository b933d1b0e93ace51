"""Presence and signals in the hub (issue 17), over a fake log and an in-process fake bus.

Two hubs share one fake channel layer (groups and per-channel inboxes, as the broker keeps
them), so cross-server behaviour is checked without sockets; the Redis store is covered
by the e2e tests (tests/e2e/test_presence_cluster.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from realtime.protocol.streams import StreamName
from realtime.streams import presence_sync
from realtime.streams.fanout import Hub, Subscription
from tests.unit.test_hub_delivery import FakeLog

FLUSH = 0.02


@pytest.fixture(autouse=True)
def fast_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    """Coalesce over 20 ms instead of 200 ms: the same logic, ten times fewer seconds."""
    monkeypatch.setattr(presence_sync, "FLUSH_INTERVAL", FLUSH)


class Layer:
    """One broker for several hubs: group members and each channel's inbox."""

    def __init__(self) -> None:
        self.groups: dict[str, set[str]] = {}
        self.inboxes: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.count = 0

    async def new_channel(self, prefix: str = "specific") -> str:
        self.count += 1
        name = f"{prefix}{self.count}"
        self.inboxes[name] = asyncio.Queue()
        return name

    async def group_add(self, group: str, channel: str) -> None:
        self.groups.setdefault(group, set()).add(channel)

    async def group_discard(self, group: str, channel: str) -> None:
        self.groups.get(group, set()).discard(channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        for channel in self.groups.get(group, set()):
            self.inboxes[channel].put_nowait(message)

    async def receive(self, channel: str) -> dict[str, Any]:
        return await self.inboxes[channel].get()


class User:
    def __init__(self, user_id: int, username: str) -> None:
        self.pk = user_id
        self.username = username


class Conn:
    """A session of ``user``: records every frame pushed to it."""

    password_hash = ""

    def __init__(self, user_id: int, name: str, session: str = "s") -> None:
        self.user_id = user_id
        self.user = User(user_id, name)
        self.session_key = f"{name}-{session}"
        self.frames: list[dict[str, Any]] = []

    def enqueue(self, frame: str) -> bool:
        self.frames.append(orjson.loads(frame))
        return True

    async def wait_for_room(self, frames: int, size: int = 0) -> bool:
        return True

    def replay_page_size(self) -> int:
        return 500

    def control(self, message: dict[str, Any]) -> None:
        pass

    def events(self, name: str) -> list[dict[str, Any]]:
        return [f["data"] for f in self.frames if f["event"] == name]

    def members(self) -> set[int]:
        """The presence map a client keeps from presence.state / join / leave."""
        present: set[int] = set()
        for frame in self.frames:
            ids = {u["id"] for u in frame.get("data", {}).get("users", [])}
            if frame["event"] == "presence.state":
                present = ids
            elif frame["event"] == "presence.join":
                present |= ids
            elif frame["event"] == "presence.leave":
                present -= ids
        return present


async def join(hub: Hub, conn: Conn, stream: str = "room:a", presence: bool = True) -> Subscription:
    state, _ = await hub.attach(StreamName.parse(stream), conn)
    sub = hub.subscribe(state, conn, 0, presence=presence)
    await hub.activate(sub)
    return sub


async def settle(intervals: float = 5) -> None:
    await asyncio.sleep(FLUSH * intervals)


@pytest.fixture
async def hub() -> Any:
    h = Hub(log=FakeLog(), layer=None)
    yield h
    await h.close()


async def test_a_subscriber_gets_the_snapshot_then_joins_and_leaves(hub: Hub) -> None:
    """Issue 17: presence.state right after subscribing (with itself), then presence.join /
    presence.leave of other users, per user."""
    ann, bob = Conn(1, "ann"), Conn(2, "bob")
    await join(hub, ann)
    assert ann.events("presence.state")[0]["users"] == [{"id": 1, "username": "ann", "sessions": 1, "meta": None}]
    bob_sub = await join(hub, bob)
    await settle()
    assert ann.members() == {1, 2}
    assert bob.members() == {1, 2}
    hub.detach(bob_sub)
    await settle()
    assert ann.members() == {1}
    assert ann.events("presence.leave") == [{"stream": "room:a", "users": [{"id": 2, "username": "bob"}]}]


async def test_a_subscriber_that_did_not_ask_gets_only_the_contracts_frames_but_is_present(hub: Hub) -> None:
    """Issue 17, contract kept: presence pushes and signals go only to subscriptions that asked
    (``"presence": true``); a contract client subscribed to a room receives none of them, yet
    it counts as present for the others."""
    ann, bob = Conn(1, "ann"), Conn(2, "bob")
    ann_sub = await join(hub, ann, presence=False)
    bob_sub = await join(hub, bob)
    await settle()
    assert bob.members() == {1, 2}
    hub.presence.signal(bob_sub, {"typing": True})
    await settle()
    hub.detach(bob_sub)
    await settle()
    assert ann.frames == []
    assert ann_sub.presence is False


async def test_two_tabs_of_one_user_are_one_member(hub: Hub) -> None:
    """Issue 17, per user not per tab: the second tab sends no join, the first tab's leave no
    leave; the user leaves with the last tab; sessions counts both tabs."""
    ann, tab1, tab2 = Conn(1, "ann"), Conn(2, "bob", "1"), Conn(2, "bob", "2")
    await join(hub, ann)
    first = await join(hub, tab1)
    await settle()
    second = await join(hub, tab2)
    await settle()
    assert len(ann.events("presence.join")) == 1
    assert (await hub.presence.snapshot("room:a"))["users"][1]["sessions"] == 2
    hub.detach(first)
    await settle()
    assert ann.events("presence.leave") == []
    assert ann.members() == {1, 2}
    hub.detach(second)
    await settle()
    assert ann.members() == {1}


async def test_a_join_and_leave_within_one_interval_cancel_out(hub: Hub) -> None:
    """Issue 17, coalescing: a member who comes and goes within one interval costs nobody a push."""
    ann = Conn(1, "ann")
    await join(hub, ann)
    await settle()
    before = len(ann.frames)
    for n in range(20):
        hub.detach(await join(hub, Conn(100 + n, f"u{n}")))
    await settle()
    assert ann.frames[before:] == []


async def test_a_storm_of_joins_is_one_push_per_subscriber(hub: Hub) -> None:
    """Issue 17, bounded cost: 200 members joining at once: each subscriber gets one presence.join
    listing the others, not one push per member (200 pushes in all, not 200 x 200)."""
    conns = [Conn(n, f"u{n}") for n in range(1, 201)]
    await asyncio.gather(*(join(hub, c) for c in conns))
    await settle()
    assert all(c.members() == set(range(1, 201)) for c in conns)
    assert hub.presence.pushes <= 2 * len(conns)


async def test_presence_only_in_presence_enabled_streams(hub: Hub) -> None:
    """Issue 17, opt-in: resource streams have no presence: no presence.state, no joins."""
    conn = Conn(1, "ann")
    await join(hub, conn, "resource:5")
    await settle()
    assert conn.events("presence.state") == []
    assert "resource:5" not in hub.presence.views


async def test_metadata_is_announced_and_in_the_snapshot(hub: Hub) -> None:
    """Issue 17: client-set metadata reaches the others as a presence.join of the same member."""
    ann, bob = Conn(1, "ann"), Conn(2, "bob")
    await join(hub, ann)
    bob_sub = await join(hub, bob)
    await settle()
    hub.presence.set_meta(bob_sub, {"status": "away"})
    await settle()
    assert ann.events("presence.join")[-1]["users"] == [
        {"id": 2, "username": "bob", "sessions": 1, "meta": {"status": "away"}}
    ]
    assert (await hub.presence.snapshot("room:a"))["users"][1]["meta"] == {"status": "away"}


async def test_a_signal_reaches_the_other_subscribers_only(hub: Hub) -> None:
    """Issue 17, signals: delivered once to every other subscription of the stream (the
    sender's other tab too), never to the sender, nothing stored."""
    ann, tab1, tab2 = Conn(1, "ann"), Conn(2, "bob", "1"), Conn(2, "bob", "2")
    await join(hub, ann)
    sender = await join(hub, tab1)
    await join(hub, tab2)
    assert hub.presence.signal(sender, {"typing": True}) == 2
    expected = {"stream": "room:a", "from": {"id": 2, "username": "bob"}, "data": {"typing": True}}
    assert ann.events("stream.signal") == [expected]
    assert tab2.events("stream.signal") == [expected]
    assert tab1.events("stream.signal") == []


async def test_two_servers_converge_and_signal_across() -> None:
    """Issue 17, cluster: members on two hubs sharing a bus: each sees the other's members,
    per user across servers, and signals cross over."""
    layer = Layer()
    one, two = Hub(log=FakeLog(), layer=layer), Hub(log=FakeLog(), layer=layer)
    try:
        ann, bob_here, bob_there = Conn(1, "ann"), Conn(2, "bob", "1"), Conn(2, "bob", "2")
        await join(one, ann)
        await join(one, bob_here)
        there = await join(two, bob_there)
        await settle(8)
        assert ann.members() == {1, 2}
        assert bob_there.members() == {1, 2}
        assert (await two.presence.snapshot("room:a"))["users"][1]["sessions"] == 2
        one.presence.signal(await join(one, Conn(3, "cy")), "hi")
        await settle(3)
        assert bob_there.events("stream.signal")[0]["data"] == "hi"
        two.detach(there)
        await settle(8)
        assert [u["sessions"] for u in (await one.presence.snapshot("room:a"))["users"] if u["id"] == 2] == [1]
        assert ann.events("presence.leave") == []
    finally:
        await one.close()
        await two.close()


async def test_a_lost_bus_message_is_not_applied_out_of_order() -> None:
    """Issue 17, versions: a change that does not follow the version held is not applied as a
    delta (the receiver re-reads the store instead; with no store it keeps what it had)."""
    layer = Layer()
    one = Hub(log=FakeLog(), layer=layer)
    try:
        ann = Conn(1, "ann")
        await join(one, ann)
        one.presence.on_bus(
            {"type": "presence.delta", "origin": "other", "stream": "room:a", "version": 7, "prev": 5, "set": {}}
        )
        assert "other" not in one.presence.views["room:a"].remote
        entry = '[1,"zed",null,0]'
        one.presence.on_bus(
            {
                "type": "presence.delta",
                "origin": "other",
                "stream": "room:a",
                "version": 8,
                "prev": 0,
                "set": {"9": entry},
            }
        )
        await settle()
        assert ann.members() == {1, 9}
    finally:
        await one.close()


def test_presence_follows_the_namespace_declarations() -> None:
    """Issue 17, opt-in per namespace: the namespaces declared with ``presence=True`` (room:
    in the contract) keep presence; the others (user:, resource:, a project's todo:) do not."""
    from realtime.namespaces import namespaces
    from realtime.streams.presence_view import presence_enabled

    declared = {n.prefix for n in namespaces() if n.presence}
    assert declared == {"room"}
    assert presence_enabled(StreamName.parse("room:lobby"))
    assert not presence_enabled(StreamName.parse("resource:1"))
    assert not presence_enabled(StreamName.parse("user:1"))


async def test_a_subscriber_that_did_not_ask_never_waits_for_the_members_to_load(hub: Hub) -> None:
    """Issue 17 beside the contract: while a stream's members are still being read from the
    store, a subscription without ``"presence": true`` starts its replay at once; only one
    that asked waits (up to the load timeout) for its presence.state."""
    conn = Conn(1, "ann")
    state, _ = await hub.attach(StreamName.parse("room:a"), conn)
    sub = hub.subscribe(state, conn, 0, presence=False)
    hub.presence.views["room:a"].loaded = asyncio.get_running_loop().create_future()  # never loads
    await asyncio.wait_for(hub.activate(sub), 0.1)
    assert sub.live
    assert conn.frames == []
