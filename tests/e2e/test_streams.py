"""Streams over real sockets: resume after reconnect, history, ordering, idempotent publishes,
the replay-then-live race and publish validation (PROTOCOL.md sections 3, 4 and 6)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from tests.conftest import scaled
from tests.e2e.conftest import E2EDatabase
from tests.e2e.helpers import ServerProcess, call, db_query, http_json, mint_token, recv_json
from tests.e2e.stream_helpers import login as _login
from tests.e2e.stream_helpers import pushes as _pushes
from tests.e2e.stream_helpers import subscribe as _subscribe
from tests.e2e.stream_helpers import uid as _uid

FLOW_EVENTS = {"flow.pause", "flow.resume"}


def _room() -> str:
    return f"room:t{uuid.uuid4().hex[:12]}"


def _token(e2e_db: E2EDatabase, username: str) -> str:
    return mint_token(e2e_db.user_ids[username], expires_in=600)


async def _publish(ws: ClientConnection, stream: str, text: str, msg_id: str | None = None) -> int:
    """message.send and wait for its ack (the socket must carry no pushes); returns the offset."""
    msg_id = msg_id or _uid("m")
    reply = await call(ws, {"event": "message.send", "id": msg_id, "data": {"stream": stream, "text": text}})
    assert reply["event"] == "ack", reply
    assert reply["ref"] == msg_id
    assert reply["data"]["stream"] == stream
    offset: int = reply["data"]["offset"]
    return offset


async def _history(ws: ClientConnection, stream: str, since: int, limit: int | None = None) -> list[dict[str, Any]]:
    data: dict[str, Any] = {"stream": stream, "since": since}
    if limit is not None:
        data["limit"] = limit
    reply = await call(ws, {"event": "stream.history", "id": _uid("h"), "data": data})
    assert reply["event"] == "ack", reply
    assert reply["data"]["stream"] == stream
    events: list[dict[str, Any]] = reply["data"]["events"]
    return events


def _texts(frames: list[dict[str, Any]]) -> list[str]:
    return [frame["data"]["text"] for frame in frames]


def _offsets(frames: list[dict[str, Any]]) -> list[int]:
    return [frame["offset"] for frame in frames]


# Connection: Reconnect --------------------------------------------------------------------


async def test_reconnect_with_since_and_epoch_gets_exactly_the_missed_events(
    server: ServerProcess, e2e_db: E2EDatabase
) -> None:
    """Connection: Reconnect -> subscribe {since: last_offset, epoch} replays exactly the missed
    events in order, then live ones, no duplicates; the ack has recovered true."""
    room = _room()
    pub = await _login(server, e2e_db, "bob")
    sub = await _login(server, e2e_db, "alice")
    first = await _subscribe(sub, room)
    epoch = first["epoch"]
    assert first == {"stream": room, "offset": 0, "epoch": epoch, "recovered": True}
    assert isinstance(epoch, str)
    assert epoch

    for n in (1, 2, 3):
        assert await _publish(pub, room, f"m{n}") == n
    seen = await _pushes(sub, 3)
    assert _offsets(seen) == [1, 2, 3]
    assert _texts(seen) == ["m1", "m2", "m3"]
    assert all(frame["event"] == "message.new" and frame["stream"] == room for frame in seen)
    last_offset = seen[-1]["offset"]
    await sub.close()

    for n in (4, 5, 6, 7):  # missed while disconnected
        assert await _publish(pub, room, f"m{n}") == n

    sub = await _login(server, e2e_db, "alice")
    resumed = await _subscribe(sub, room, since=last_offset, epoch=epoch)
    assert resumed == {"stream": room, "offset": 7, "epoch": epoch, "recovered": True}
    replayed = await _pushes(sub, 4)
    assert _offsets(replayed) == [4, 5, 6, 7]
    assert _texts(replayed) == ["m4", "m5", "m6", "m7"]

    for n in (8, 9):  # live after the replay
        assert await _publish(pub, room, f"m{n}") == n
    live = await _pushes(sub, 2)
    assert _offsets(live) == [8, 9]
    assert _texts(live) == ["m8", "m9"]

    # Nothing was queued twice: the frame after one more publish is that publish.
    assert await _publish(pub, room, "m10") == 10
    assert _offsets(await _pushes(sub, 1)) == [10]
    # The replayed frames are the same frames live subscribers got.
    assert replayed[0]["data"]["sender"] == {"id": e2e_db.user_ids["bob"], "username": "bob"}


async def test_resume_without_epoch_and_at_head(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Connection: Reconnect -> since without epoch recovers; since == head recovers with no replay."""
    room = _room()
    pub = await _login(server, e2e_db, "bob")
    for n in (1, 2, 3):
        await _publish(pub, room, f"x{n}")

    sub = await _login(server, e2e_db, "alice")
    ack = await _subscribe(sub, room, since=1)
    assert (ack["offset"], ack["recovered"]) == (3, True)
    assert _offsets(await _pushes(sub, 2)) == [2, 3]

    other = await _login(server, e2e_db, "alice")
    ack = await _subscribe(other, room, since=3, epoch=ack["epoch"])
    assert (ack["offset"], ack["recovered"]) == (3, True)
    await _publish(pub, room, "x4")
    assert _offsets(await _pushes(other, 1)) == [4]
    assert _offsets(await _pushes(sub, 1)) == [4]


async def test_resume_with_wrong_epoch_is_not_recovered(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Connection: Reconnect -> an epoch that is not the stream's gives recovered:false and no replay."""
    room = _room()
    pub = await _login(server, e2e_db, "bob")
    for n in (1, 2, 3):
        await _publish(pub, room, f"e{n}")
    sub = await _login(server, e2e_db, "alice")
    ack = await _subscribe(sub, room, since=1, epoch="0123456789abcdef")
    assert ack["recovered"] is False
    assert ack["offset"] == 3
    assert ack["epoch"] != "0123456789abcdef"
    # No replay: the first frame is the next live event.
    await _publish(pub, room, "e4")
    frames = await _pushes(sub, 1)
    assert (_offsets(frames), _texts(frames)) == ([4], ["e4"])


async def test_resume_beyond_head_is_not_recovered(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Connection: Reconnect -> since beyond the stream's head gives recovered:false, then live from the head."""
    room = _room()
    pub = await _login(server, e2e_db, "bob")
    for n in (1, 2):
        await _publish(pub, room, f"b{n}")
    sub = await _login(server, e2e_db, "alice")
    epoch = (await _subscribe(sub, room))["epoch"]
    await call(sub, {"event": "stream.unsubscribe", "data": {"stream": room}})
    ack = await _subscribe(sub, room, since=50, epoch=epoch)
    assert ack == {"stream": room, "offset": 2, "epoch": epoch, "recovered": False}
    await _publish(pub, room, "b3")
    frames = await _pushes(sub, 1)
    assert (_offsets(frames), _texts(frames)) == ([3], ["b3"])


async def test_history_returns_exactly_the_push_frames(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Connection: Reconnect -> stream.history returns exactly the frames subscribers got (event, stream,
    offset, data), oldest first, after since, at most limit."""
    room = _room()
    pub = await _login(server, e2e_db, "bob")
    sub = await _login(server, e2e_db, "alice")
    await _subscribe(sub, room)
    for n in range(1, 6):
        await _publish(pub, room, f"h{n}")
    live = await _pushes(sub, 5)

    reader = await _login(server, e2e_db, "alice")
    assert await _history(reader, room, 0) == live
    assert await _history(reader, room, 2) == live[2:]
    assert await _history(reader, room, 1, limit=2) == live[1:3]
    assert await _history(reader, room, 5) == []
    assert await _history(reader, room, 99) == []
    for frame in live:
        assert set(frame) == {"event", "stream", "offset", "data"}
        assert set(frame["data"]) == {"id", "sender", "text", "ts"}
    # A history of another user's stream is forbidden, like subscribing to it.
    reply = await call(
        reader, {"event": "stream.history", "data": {"stream": f"user:{e2e_db.user_ids['bob']}", "since": 0}}
    )
    assert reply["data"]["code"] == "forbidden"
    reply = await call(reader, {"event": "stream.history", "data": {"stream": room, "since": 0, "limit": 1001}})
    assert reply["data"]["code"] == "validation_error"
    assert "limit" in reply["data"]["fields"]


# Ordering: Message sequence ---------------------------------------------------------------


async def test_messages_a_b_c_arrive_in_order_with_contiguous_offsets(
    server: ServerProcess, e2e_db: E2EDatabase
) -> None:
    """Ordering: Message sequence -> A, B, C sent pipelined by one client arrive at every subscriber in
    order with contiguous offsets; the acks come back in order."""
    room = _room()
    subs = [await _login(server, e2e_db, name) for name in ("alice", "bob")]
    for ws in subs:
        await _subscribe(ws, room)
    pub = await _login(server, e2e_db, "alice")
    ids = {name: _uid(name) for name in "ABC"}
    for name in "ABC":
        frame = {"event": "message.send", "id": ids[name], "data": {"stream": room, "text": name}}
        await pub.send(orjson.dumps(frame).decode())
    acks = [await recv_json(pub) for _ in range(3)]
    assert [ack["ref"] for ack in acks] == [ids["A"], ids["B"], ids["C"]]
    assert [ack["data"]["offset"] for ack in acks] == [1, 2, 3]
    for ws in subs:
        frames = await _pushes(ws, 3)
        assert _texts(frames) == ["A", "B", "C"]
        assert _offsets(frames) == [1, 2, 3]
        assert [frame["data"]["id"] for frame in frames] == [ids["A"], ids["B"], ids["C"]]


async def test_publisher_subscribed_to_its_room_gets_acks_and_events_in_order(
    server: ServerProcess, e2e_db: E2EDatabase
) -> None:
    """Ordering: Message sequence -> a publisher that is also subscribed gets its acks in send order and its
    own events in offset order, one each."""
    room = _room()
    ws = await _login(server, e2e_db, "alice")
    await _subscribe(ws, room)
    ids = [_uid(name) for name in "ABCDE"]
    for msg_id, text in zip(ids, "ABCDE", strict=True):
        await ws.send(
            orjson.dumps({"event": "message.send", "id": msg_id, "data": {"stream": room, "text": text}}).decode()
        )
    frames = [await recv_json(ws) for _ in range(10)]
    acks = [frame for frame in frames if frame["event"] == "ack"]
    pushes = [frame for frame in frames if frame["event"] == "message.new"]
    assert [ack["ref"] for ack in acks] == ids
    assert [ack["data"]["offset"] for ack in acks] == [1, 2, 3, 4, 5]
    assert _offsets(pushes) == [1, 2, 3, 4, 5]
    assert _texts(pushes) == list("ABCDE")
    assert [push["data"]["id"] for push in pushes] == ids


# Idempotent publish -----------------------------------------------------------------------


async def test_publish_with_same_id_is_stored_once(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Idempotent publish -> message.send twice with one id acks the original offset; the second is
    neither delivered nor stored (history, realtime_event)."""
    room, other_room = _room(), _room()
    sub = await _login(server, e2e_db, "bob")
    await _subscribe(sub, room)
    pub = await _login(server, e2e_db, "alice")
    msg_id = _uid("dup")
    assert await _publish(pub, room, "original", msg_id) == 1
    assert await _publish(pub, room, "retry with other text", msg_id) == 1
    # Same id on another stream: still the original (ids are per user, on any stream).
    reply = await call(pub, {"event": "message.send", "id": msg_id, "data": {"stream": other_room, "text": "x"}})
    assert reply == {"event": "ack", "ref": msg_id, "data": {"stream": room, "offset": 1}}
    # A new publish follows directly: the duplicate took no offset.
    assert await _publish(pub, room, "next") == 2

    frames = await _pushes(sub, 2)
    assert (_offsets(frames), _texts(frames)) == ([1, 2], ["original", "next"])
    assert frames[0]["data"]["id"] == msg_id
    assert await _history(pub, room, 0) == frames
    assert await _history(pub, other_room, 0) == []
    rows = db_query(e2e_db.url, "SELECT COUNT(*) FROM realtime_event WHERE client_id = %s", (msg_id,))
    assert rows == [(1,)]

    # The key is per user: bob's publish with alice's id is a new event.
    bob = await _login(server, e2e_db, "bob")
    assert await _publish(bob, room, "bob's own", msg_id) == 3
    rows = db_query(e2e_db.url, "SELECT COUNT(*) FROM realtime_event WHERE client_id = %s", (msg_id,))
    assert rows == [(2,)]


async def test_concurrent_retries_with_same_id_are_stored_once(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Idempotent publish -> the same id sent at once on several of the user's connections gets one offset."""
    room = _room()
    conns = [await _login(server, e2e_db, "alice") for _ in range(4)]
    msg_id = _uid("race")
    frame = orjson.dumps({"event": "message.send", "id": msg_id, "data": {"stream": room, "text": "once"}}).decode()
    await asyncio.gather(*(ws.send(frame) for ws in conns))
    replies = await asyncio.gather(*(recv_json(ws) for ws in conns))
    assert all(reply["event"] == "ack" for reply in replies), replies
    assert {reply["data"]["offset"] for reply in replies} == {1}
    assert len(await _history(conns[0], room, 0)) == 1
    rows = db_query(e2e_db.url, "SELECT COUNT(*) FROM realtime_event WHERE client_id = %s", (msg_id,))
    assert rows == [(1,)]


async def test_resource_update_reusing_a_message_id(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Idempotent publish -> a resource.update whose id the user already used for a message.send must not
    change the resource silently: either it is applied and published, or nothing is stored."""
    token = _token(e2e_db, "alice")
    status, _, created = http_json(
        "POST", f"{server.http_url}/api/resources/", {"data": {"v": 0}}, {"Authorization": f"Bearer {token}"}
    )
    assert status == 201, created
    rid = created["id"]
    watcher = await _login(server, e2e_db, "bob")
    await _subscribe(watcher, f"resource:{rid}")

    ws = await _login(server, e2e_db, "alice")
    msg_id = _uid("shared")
    await _publish(ws, _room(), "a message", msg_id)
    reply = await call(
        ws, {"event": "resource.update", "id": msg_id, "data": {"id": rid, "version": 1, "data": {"v": 1}}}
    )
    current = await call(ws, {"event": "resource.get", "data": {"id": rid}})
    if reply["event"] == "ack":
        assert reply["data"] == {"id": rid, "version": 2}
        assert current["data"]["version"] == 2
        pushed = await _pushes(watcher, 1)
        assert pushed[0]["data"]["version"] == 2
    else:
        # Refused: with a proper error, and nothing may have been stored.
        outcome = (reply["data"]["code"], current["data"])
        assert outcome[0] != "internal_error", outcome
        assert outcome[1] == {"id": rid, "version": 1, "data": {"v": 0}}, outcome


# The replay-then-live race ----------------------------------------------------------------


async def test_subscribe_since_zero_while_publishing_gets_every_offset_once(
    server: ServerProcess, e2e_db: E2EDatabase
) -> None:
    """Connection: Reconnect -> replay-then-live race: subscribing with since=0 (and since=k) while another
    client publishes 300 pipelined messages delivers every offset exactly once, in order (5 runs)."""
    total = 300
    mid_stream_runs = 0
    for run in range(5):
        room = _room()
        pub = await _login(server, e2e_db, "bob")
        late = await _login(server, e2e_db, "alice")
        later = await _login(server, e2e_db, "alice")
        switch_at = 20 + run * 60  # 20, 80, 140, 200, 260 acks seen before subscribing
        reached = asyncio.Event()
        acked: list[int] = []
        tag = uuid.uuid4().hex[:10]

        async def publish(pub: ClientConnection = pub, room: str = room, tag: str = tag) -> None:
            for n in range(1, total + 1):
                frame = {"event": "message.send", "id": f"{tag}-{n}", "data": {"stream": room, "text": f"n{n}"}}
                await pub.send(orjson.dumps(frame).decode())

        async def read_acks(
            pub: ClientConnection = pub,
            acked: list[int] = acked,
            reached: asyncio.Event = reached,
            switch_at: int = switch_at,
        ) -> None:
            while len(acked) < total:
                frame = await recv_json(pub, 30)
                if frame["event"] in FLOW_EVENTS:
                    continue
                assert frame["event"] == "ack", frame
                acked.append(frame["data"]["offset"])
                if len(acked) == switch_at:
                    reached.set()

        tasks = [asyncio.ensure_future(publish()), asyncio.ensure_future(read_acks())]
        try:
            await asyncio.wait_for(reached.wait(), scaled(30))
            since_k = switch_at // 2
            ack0, ack_k = await asyncio.gather(_subscribe(late, room, since=0), _subscribe(later, room, since=since_k))
            assert (ack0["recovered"], ack_k["recovered"]) == (True, True), (ack0, ack_k)
            if ack0["offset"] < total:
                mid_stream_runs += 1
            frames = await _pushes(late, total, timeout=30)
            frames_k = await _pushes(later, total - since_k, timeout=30)
            await asyncio.wait_for(asyncio.gather(*tasks), scaled(30))
        finally:
            for task in tasks:
                task.cancel()
        assert _offsets(frames) == list(range(1, total + 1)), f"run {run}"
        assert _texts(frames) == [f"n{n}" for n in range(1, total + 1)]
        assert _offsets(frames_k) == list(range(since_k + 1, total + 1)), f"run {run}"
        assert acked == list(range(1, total + 1))
        # And no duplicate trails the replay: the next frame is the next publish.
        await _publish(pub, room, "tail")
        assert _offsets(await _pushes(late, 1)) == [total + 1]
        assert _offsets(await _pushes(later, 1)) == [total + 1]
        for ws in (pub, late, later):
            await ws.close()
    assert mid_stream_runs >= 1, "no run subscribed while publishing was still under way"


# Validation of message.send -----------------------------------------------------------------


@pytest.mark.parametrize(
    "stream",
    [
        "user:1",
        "resource:1",
        "room:UPPER",
        "room:",
        "room:has space",
        "room:" + "a" * 65,
        "lobby",
        "chan:lobby",
        "room:a/b",
        42,
        None,
    ],
)
async def test_message_send_to_a_bad_stream_names_stream(
    server: ServerProcess, e2e_db: E2EDatabase, stream: object
) -> None:
    """Message: Schema validation -> message.send to a non-room stream or a bad name is validation_error naming
    stream; the connection stays open."""
    ws = await _login(server, e2e_db, "alice")
    ref = _uid("bad")
    reply = await call(ws, {"event": "message.send", "id": ref, "data": {"stream": stream, "text": "hi"}})
    assert (reply["event"], reply["ref"], reply["data"]["code"]) == ("error", ref, "validation_error"), reply
    assert set(reply["data"]["fields"]) == {"stream"}, reply
    assert (await call(ws, {"event": "ping", "id": "p"}))["event"] == "ack"


@pytest.mark.parametrize("text", ["", "a" * 65_537, None, 17, "<script>alert(1)</script>"])
async def test_message_send_with_bad_text_names_text(server: ServerProcess, e2e_db: E2EDatabase, text: object) -> None:
    """Message: Schema validation -> text "" or over 65,536 characters (or not a string, or nothing left
    after sanitizing) is validation_error naming text; nothing is published."""
    room = _room()
    ws = await _login(server, e2e_db, "alice")
    reply = await call(ws, {"event": "message.send", "data": {"stream": room, "text": text}})
    assert (reply["event"], reply["data"]["code"]) == ("error", "validation_error"), reply
    assert set(reply["data"]["fields"]) == {"text"}, reply
    assert await _history(ws, room, 0) == []


async def test_message_send_text_at_the_limits_is_accepted(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Message: Schema validation -> text of 1 and of exactly 65,536 characters is accepted unchanged."""
    room = _room()
    ws = await _login(server, e2e_db, "alice")
    await _publish(ws, room, "x")
    await _publish(ws, room, "y" * 65_536)
    assert [len(text) for text in _texts(await _history(ws, room, 0))] == [1, 65_536]
    reply = await call(ws, {"event": "message.send", "data": {"text": "no stream"}})
    assert reply["data"]["fields"] == {"stream": "required"}
