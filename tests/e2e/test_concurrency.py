"""Many clients at once: concurrent publishers, a 100-client broadcast, direct messages and a
broadcast storm, against real server processes (PROTOCOL.md sections 4 and 6)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection

from tests.conftest import scaled
from tests.e2e.conftest import E2EDatabase, ServerFactory
from tests.e2e.helpers import ServerProcess, call, http_json, recv_json
from tests.e2e.stream_helpers import login as _login
from tests.e2e.stream_helpers import pushes as _pushes
from tests.e2e.stream_helpers import subscribe as _subscribe
from tests.e2e.stream_helpers import uid as _uid

FLOW_EVENTS = {"flow.pause", "flow.resume"}


def _room() -> str:
    return f"room:t{uuid.uuid4().hex[:12]}"


def _send_frame(stream: str, text: str, msg_id: str) -> str:
    return orjson.dumps({"event": "message.send", "id": msg_id, "data": {"stream": stream, "text": text}}).decode()


# Ordering: Concurrent messages --------------------------------------------------------------


async def test_concurrent_publishers_get_their_own_acks_and_one_order(
    server: ServerProcess, e2e_db: E2EDatabase
) -> None:
    """Ordering: Concurrent messages -> 5 clients publish 20 messages each at once to one room: each gets its
    own acks (right ref, in its send order), offsets are unique and contiguous, every subscriber sees the
    same order, matching the acks."""
    room = _room()
    publishers, per_publisher = 5, 20
    subs = [await _login(server, e2e_db, name) for name in ("alice", "bob", "admin")]
    for ws in subs:
        await _subscribe(ws, room)
    pubs = [await _login(server, e2e_db, ("alice", "bob")[i % 2]) for i in range(publishers)]
    ids = [[_uid(f"p{p}n{n}") for n in range(per_publisher)] for p in range(publishers)]

    async def run(p: int) -> list[dict[str, Any]]:
        ws = pubs[p]
        for n, msg_id in enumerate(ids[p]):
            await ws.send(_send_frame(room, f"p{p}-n{n}", msg_id))
        return [await recv_json(ws) for _ in range(per_publisher)]

    replies = await asyncio.gather(*(run(p) for p in range(publishers)))
    owner: dict[int, str] = {}
    for p, acks in enumerate(replies):
        assert [ack["event"] for ack in acks] == ["ack"] * per_publisher, acks
        assert [ack["ref"] for ack in acks] == ids[p]
        offsets = [ack["data"]["offset"] for ack in acks]
        assert offsets == sorted(offsets), "one connection's publishes are processed in order"
        for ack in acks:
            assert ack["data"]["stream"] == room
            owner[ack["data"]["offset"]] = ack["ref"]
    total = publishers * per_publisher
    assert sorted(owner) == list(range(1, total + 1))

    seen = [await _pushes(ws, total) for ws in subs]
    for frames in seen:
        assert [frame["offset"] for frame in frames] == list(range(1, total + 1))
        assert [frame["data"]["id"] for frame in frames] == [owner[o] for o in range(1, total + 1)]
    assert seen[0] == seen[1] == seen[2]


# Concurrency: Multiple clients ---------------------------------------------------------------


async def test_one_hundred_clients_all_receive_the_broadcast(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Concurrency: Multiple clients -> 100 clients subscribed to one room all receive the broadcast, once."""
    room = _room()
    clients = await asyncio.gather(*(_login(server, e2e_db, ("alice", "bob")[i % 2]) for i in range(100)))
    acks = await asyncio.gather(*(_subscribe(ws, room) for ws in clients))
    assert all(ack["offset"] == 0 for ack in acks)
    pub = await _login(server, e2e_db, "admin")
    msg_id = _uid("all")
    reply = await call(pub, orjson.loads(_send_frame(room, "hello, everyone", msg_id)))
    assert reply == {"event": "ack", "ref": msg_id, "data": {"stream": room, "offset": 1}}
    received = await asyncio.gather(*(recv_json(ws, 15) for ws in clients))
    assert len(received) == 100
    for frame in received:
        assert (frame["event"], frame["stream"], frame["offset"]) == ("message.new", room, 1)
        assert frame["data"]["text"] == "hello, everyone"
        assert frame["data"]["sender"] == {"id": e2e_db.user_ids["admin"], "username": "admin"}
    # Exactly once: the next frame of every client is the next broadcast.
    await call(pub, orjson.loads(_send_frame(room, "second", _uid("all"))))
    assert {(await recv_json(ws, 15))["offset"] for ws in clients} == {2}


# Concurrency: Private messages ---------------------------------------------------------------


async def test_direct_message_reaches_only_the_recipient(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Concurrency: Private messages -> message.direct to bob reaches bob's user:ID subscribers (all his
    sessions); alice and admin, subscribed to their own user streams and to a shared room, do not get it."""
    ids = e2e_db.user_ids
    room = _room()
    bob1, bob2 = await _login(server, e2e_db, "bob"), await _login(server, e2e_db, "bob")
    alice = await _login(server, e2e_db, "alice")
    admin = await _login(server, e2e_db, "admin")
    for ws in (bob1, bob2):
        await _subscribe(ws, f"user:{ids['bob']}")
    await _subscribe(alice, f"user:{ids['alice']}")
    await _subscribe(alice, room)
    await _subscribe(admin, f"user:{ids['admin']}")
    await _subscribe(admin, room)

    sender = await _login(server, e2e_db, "alice")
    msg_id = _uid("dm")
    reply = await call(sender, {"event": "message.direct", "id": msg_id, "data": {"to": "bob", "text": "psst"}})
    bob_stream = f"user:{ids['bob']}"
    assert reply["event"] == "ack", reply
    assert reply["ref"] == msg_id
    assert reply["data"]["stream"] == bob_stream
    for ws in (bob1, bob2):
        frame = await recv_json(ws)
        assert (frame["event"], frame["stream"], frame["offset"]) == (
            "message.direct",
            bob_stream,
            reply["data"]["offset"],
        )
        assert frame["data"]["id"] == msg_id
        assert frame["data"]["text"] == "psst"
        assert frame["data"]["sender"] == {"id": ids["alice"], "username": "alice"}
        assert set(frame["data"]) == {"id", "sender", "text", "ts"}

    # Neither alice (the sender) nor admin got it: the first frame each receives is what is sent next.
    for name, ws in (("alice", alice), ("admin", admin)):
        marker = _uid("marker")
        ack = await call(sender, {"event": "message.direct", "id": marker, "data": {"to": name, "text": "for you"}})
        assert ack["event"] == "ack", ack
        frame = await recv_json(ws)
        assert (frame["event"], frame["stream"], frame["data"]["id"]) == ("message.direct", f"user:{ids[name]}", marker)
    room_marker = _uid("room")
    await call(sender, orjson.loads(_send_frame(room, "room marker", room_marker)))
    for ws in (alice, admin):
        assert (await recv_json(ws))["data"]["id"] == room_marker


async def test_another_users_stream_is_forbidden(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Concurrency: Private messages -> subscribing to (or reading the history of) another user's user:ID
    stream is forbidden, the connection stays open; unknown recipients are not_found."""
    ids = e2e_db.user_ids
    alice = await _login(server, e2e_db, "alice")
    for stream in (f"user:{ids['bob']}", f"user:{ids['admin']}", f"user:{ids['carol']}"):
        ref = _uid("sub")
        reply = await call(alice, {"event": "stream.subscribe", "id": ref, "data": {"stream": stream}})
        assert (reply["event"], reply["ref"], reply["data"]["code"]) == ("error", ref, "forbidden"), reply
    # Staff may not either: user streams belong to their user only.
    admin = await _login(server, e2e_db, "admin")
    reply = await call(admin, {"event": "stream.subscribe", "data": {"stream": f"user:{ids['bob']}"}})
    assert reply["data"]["code"] == "forbidden"

    # The refused subscription delivers nothing: a direct message to bob does not reach alice.
    await _subscribe(alice, f"user:{ids['alice']}")
    sender = await _login(server, e2e_db, "admin")
    await call(sender, {"event": "message.direct", "id": _uid("dm"), "data": {"to": "bob", "text": "private"}})
    marker = _uid("marker")
    await call(sender, {"event": "message.direct", "id": marker, "data": {"to": "alice", "text": "yours"}})
    assert (await recv_json(alice))["data"]["id"] == marker

    reply = await call(alice, {"event": "message.direct", "data": {"to": f"nobody{uuid.uuid4().hex[:8]}", "text": "x"}})
    assert reply["data"]["code"] == "not_found"
    reply = await call(alice, {"event": "message.direct", "data": {"to": "bob"}})
    assert reply["data"]["code"] == "validation_error"
    assert set(reply["data"]["fields"]) == {"text"}
    assert (await call(alice, {"event": "ping", "id": "still-open"}))["ref"] == "still-open"


# Concurrency: Broadcast storm ----------------------------------------------------------------


async def test_broadcast_storm_reaches_every_subscriber_in_order(
    server_factory: ServerFactory, e2e_db: E2EDatabase
) -> None:
    """Concurrency: Broadcast storm -> 1,000 messages published pipelined to a room with 20 subscribers are
    all delivered to all, in order, once; the server still answers afterwards."""
    srv = server_factory(REALTIME_RATE_LIMIT="0")
    room = _room()
    total, subscriber_count = 1000, 20
    subs = await asyncio.gather(
        *(_login(srv, e2e_db, ("alice", "bob", "admin")[i % 3], max_queue=None) for i in range(subscriber_count))
    )
    await asyncio.gather(*(_subscribe(ws, room) for ws in subs))
    pub = await _login(srv, e2e_db, "alice")
    tag = uuid.uuid4().hex[:10]
    started = time.monotonic()

    async def publish() -> None:
        for n in range(1, total + 1):
            await pub.send(_send_frame(room, f"storm {n}", f"{tag}-{n}"))

    async def read_acks() -> list[int]:
        offsets: list[int] = []
        while len(offsets) < total:
            frame = await recv_json(pub, 30)
            if frame["event"] in FLOW_EVENTS:
                continue
            assert frame["event"] == "ack", frame
            offsets.append(frame["data"]["offset"])
        return offsets

    async def consume(ws: ClientConnection) -> list[int]:
        offsets: list[int] = []
        for n in range(1, total + 1):
            frame = await recv_json(ws, 30)
            assert (frame["event"], frame["data"]["text"]) == ("message.new", f"storm {n}"), frame
            offsets.append(frame["offset"])
        return offsets

    results = await asyncio.wait_for(asyncio.gather(publish(), read_acks(), *(consume(ws) for ws in subs)), scaled(60))
    elapsed = time.monotonic() - started
    expected = list(range(1, total + 1))
    assert results[1] == expected
    for offsets in results[2:]:
        assert offsets == expected
    assert elapsed < scaled(30), f"storm took {elapsed:.1f} s"

    # No crash, nothing extra queued: the server answers, every subscriber's next frame is the next message.
    assert srv.proc is not None
    assert srv.proc.poll() is None
    assert (await call(pub, {"event": "echo", "id": "after", "data": {"ok": True}})) == {
        "event": "ack",
        "ref": "after",
        "data": {"ok": True},
    }
    status, _, _ = await asyncio.to_thread(http_json, "GET", f"{srv.http_url}/healthz")
    assert status == 200
    await call(pub, orjson.loads(_send_frame(room, "after the storm", _uid("after"))))
    assert {(await recv_json(ws))["offset"] for ws in subs} == {total + 1}
