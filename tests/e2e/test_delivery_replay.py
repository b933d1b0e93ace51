"""Issue 14, replays never freeze: concurrent replays, large events, holes in the log.

Connection: Reconnect (state restored, no data lost); Backpressure: Slow consumer / Queue
recovery (a reading client is never closed by a replay).
"""

from __future__ import annotations

import asyncio
import time

import orjson

from tests.conftest import scaled
from tests.e2e.conftest import E2EDatabase
from tests.e2e.delivery_helpers import client, collect, db_execute, msg_id, publish, room, subscribe
from tests.e2e.helpers import ServerProcess


async def _fill(server: ServerProcess, e2e_db: E2EDatabase, stream: str, count: int, size: int) -> None:
    pub = await client(server, e2e_db, "bob")
    for start in range(0, count, 50):
        n = min(50, count - start)
        await publish(pub, stream, [f"{start + i:05d} " + "x" * size for i in range(n)])
    await pub.close()


async def test_two_replays_on_one_connection_both_go_live(server_factory, e2e_db: E2EDatabase) -> None:
    """Reconnect: two `stream.subscribe` with `since` sent together on a connection whose send
    queue is full: both replays complete and both subscriptions go live (the outbox had one
    waiter slot, so one subscription silently never went live)."""
    server = server_factory(REALTIME_SEND_QUEUE="20", REALTIME_RATE_LIMIT="0")
    streams = [room(), room()]
    for stream in streams:
        await _fill(server, e2e_db, stream, 150, 20_000)
    ws = await client(server, e2e_db, rcvbuf=16_384)
    for stream in streams:
        frame = {"event": "stream.subscribe", "id": msg_id(), "data": {"stream": stream, "since": 0}}
        await ws.send(orjson.dumps(frame).decode())
    await asyncio.sleep(scaled(1.0))  # a client that does not read for a while: both replays wait for room
    others: list[dict] = []  # type: ignore[type-arg]
    frames = await collect(ws, 300, 30, others)
    for stream in streams:
        assert [f["offset"] for f in frames if f["stream"] == stream] == list(range(1, 151))
    assert [o["event"] for o in others] == ["ack", "ack"]
    pub = await client(server, e2e_db, "bob")
    for stream in streams:
        await publish(pub, stream, ["live"])
    live = await collect(ws, 2, 5)
    assert sorted((f["stream"], f["offset"]) for f in live) == sorted((s, 151) for s in streams)


async def test_a_replay_of_large_events_never_closes_a_reading_client(server_factory, e2e_db: E2EDatabase) -> None:
    """Backpressure: Slow consumer -> a replay of events near the maximum text size into a small
    send queue (64 KiB) is paced by bytes as well as frames: a client that reads is never closed
    1013 slow_consumer, and gets every event."""
    server = server_factory(REALTIME_SEND_QUEUE_BYTES="65536", REALTIME_RATE_LIMIT="0")
    stream = room()
    await _fill(server, e2e_db, stream, 150, 60_000)
    ws = await client(server, e2e_db, rcvbuf=16_384)
    await subscribe(ws, stream, since=0)
    await asyncio.sleep(scaled(0.5))  # a reader that is busy for a moment
    frames = await collect(ws, 150, 30)
    assert [f["offset"] for f in frames] == list(range(1, 151))
    assert ws.close_code is None


async def test_a_hole_in_the_log_ends_in_a_defined_answer(server_factory, e2e_db: E2EDatabase) -> None:
    """Reconnect: events deleted by an operator (offsets 5-7 of 20): a resume from 0 gets the replay
    up to the hole, then `stream.reset` (recovered false, live from the head) within a second,
    never an endless query loop or a 1011; live events follow."""
    server = server_factory(REALTIME_RATE_LIMIT="0")
    stream = room()
    await _fill(server, e2e_db, stream, 20, 10)
    db_execute(
        e2e_db.url,
        'DELETE FROM realtime_event WHERE "offset" BETWEEN 5 AND 7'
        " AND stream_id = (SELECT id FROM realtime_stream WHERE name = %s)",
        (stream,),
    )
    ws = await client(server, e2e_db)
    started = time.monotonic()
    ack = await subscribe(ws, stream, since=0)
    assert ack["offset"] == 20
    others: list[dict] = []  # type: ignore[type-arg]
    frames = await collect(ws, 4, 1.0, others)
    assert [f["offset"] for f in frames] == [1, 2, 3, 4]
    async with asyncio.timeout(scaled(1.0)):
        while not others:
            others.append(orjson.loads(await ws.recv()))
    assert time.monotonic() - started <= scaled(1.0)
    assert others == [
        {"event": "stream.reset", "data": {"stream": stream, "offset": 20, "epoch": ack["epoch"], "recovered": False}}
    ]
    pub = await client(server, e2e_db, "bob")
    await publish(pub, stream, ["after the hole"])
    [live] = await collect(ws, 1, 5)
    assert (live["offset"], live["data"]["text"]) == (21, "after the hole")
    assert ws.close_code is None
