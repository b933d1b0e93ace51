"""Backpressure and flow control against real server processes (issue 6; PROTOCOL.md section 9)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.conftest import scaled
from tests.e2e.conftest import E2EDatabase
from tests.e2e.helpers import (
    ServerProcess,
    call,
    connect,
    db_query,
    expect_close,
    obtain_tokens,
    raw_upgrade,
    recv_json,
)


def rss_kb(server: ServerProcess) -> int:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _publish_many(ws: ClientConnection, stream: str, count: int, size: int) -> int:
    """Pipeline ``count`` publishes of ``size`` characters; return the last offset acked."""
    text = "x" * size
    last = 0
    window = 50
    sent = acked = 0
    while acked < count:
        while sent < count and sent - acked < window:
            await ws.send(orjson.dumps({"event": "message.send", "data": {"stream": stream, "text": text}}).decode())
            sent += 1
        reply = await recv_json(ws, timeout=30)
        if reply["event"] == "ack":
            acked += 1
            last = max(last, reply["data"]["offset"])
        else:
            assert reply["event"] != "error", reply
    return last


async def _subscribe(ws: ClientConnection, stream: str, since: int | None = None) -> dict[str, Any]:
    data: dict[str, object] = {"stream": stream}
    if since is not None:
        data["since"] = since
    reply = await call(ws, {"event": "stream.subscribe", "id": "sub", "data": data})
    assert reply["event"] == "ack", reply
    ack: dict[str, Any] = reply["data"]
    return ack


async def test_slow_consumer_is_closed_1013_and_resumes_without_gap(server_factory) -> None:
    """Backpressure: Slow consumer / Buffer overflow -> a reader that stops is closed with 1013
    slow_consumer, the server's memory stays bounded, other clients stay fast, and the slow
    client resumes from its offset without a gap."""
    srv = server_factory(REALTIME_SEND_QUEUE="100", REALTIME_RATE_LIMIT="0")
    token = obtain_tokens(srv, "alice")["access"]
    stream = f"room:slow{uuid.uuid4().hex[:10]}"
    slow = await connect(srv, token, max_queue=1, max_size=None)
    await recv_json(slow)
    await _subscribe(slow, stream)
    publisher = await connect(srv, token)
    await recv_json(publisher)
    bystander = await connect(srv, token)
    await recv_json(bystander)
    before = rss_kb(srv)

    last = await _publish_many(publisher, stream, count=500, size=60_000)  # ~30 MB to the slow reader
    rtts = []
    for _ in range(20):
        started = time.perf_counter()
        assert (await call(bystander, {"event": "echo", "data": {}}))["event"] == "ack"
        rtts.append(time.perf_counter() - started)
    growth_mb = (rss_kb(srv) - before) / 1024

    received: list[int] = []
    try:
        async with asyncio.timeout(scaled(30)):
            while True:
                frame = orjson.loads(await slow.recv())
                if frame.get("event") == "message.new":
                    received.append(frame["offset"])
    except ConnectionClosed:
        pass
    assert (slow.close_code, slow.close_reason) == (1013, "slow_consumer")
    assert received == list(range(1, len(received) + 1))
    assert len(received) < last
    p50_ms = sorted(rtts)[len(rtts) // 2] * 1000
    print(f"slow consumer: got {len(received)} of {last}, RSS +{growth_mb:.1f} MB, bystander echo p50 {p50_ms:.1f} ms")
    assert growth_mb < 20, f"server RSS grew {growth_mb:.1f} MB"
    assert sorted(rtts)[len(rtts) // 2] < scaled(0.1)

    again = await connect(srv, token, max_size=None)
    await recv_json(again)
    ack = await _subscribe(again, stream, since=received[-1] if received else 0)
    assert ack["recovered"] is True
    resumed = [(await recv_json(again))["offset"] for _ in range(last - len(received))]
    assert resumed == list(range(len(received) + 1, last + 1))
    for ws in (again, publisher, bystander):
        await ws.close()


async def test_queue_recovery_after_a_pause_in_reading(server_factory) -> None:
    """Backpressure: Queue recovery -> a reader that falls behind but not past the bound catches
    up, stays connected and is served normally afterwards."""
    srv = server_factory(REALTIME_SEND_QUEUE="1000", REALTIME_RATE_LIMIT="0")
    token = obtain_tokens(srv, "alice")["access"]
    stream = f"room:lag{uuid.uuid4().hex[:10]}"
    lagging = await connect(srv, token, max_queue=1, max_size=None)
    await recv_json(lagging)
    await _subscribe(lagging, stream)
    publisher = await connect(srv, token)
    await recv_json(publisher)
    last = await _publish_many(publisher, stream, count=300, size=2_000)
    offsets = [(await recv_json(lagging))["offset"] for _ in range(last)]
    assert offsets == list(range(1, last + 1))
    assert (await call(lagging, {"event": "echo", "id": "after", "data": {}}))["ref"] == "after"
    await lagging.close()
    await publisher.close()


async def test_flow_pause_then_resume_and_rate_limited_past_the_burst(server_factory) -> None:
    """Backpressure: Flow control -> over REALTIME_RATE_LIMIT the server sends flow.pause with
    retry_after_ms, refuses messages past the burst with rate_limited (not processed), then
    sends flow.resume."""
    srv = server_factory(REALTIME_RATE_LIMIT="20")
    ws = await connect(srv, obtain_tokens(srv, "alice")["access"])
    await recv_json(ws)
    for i in range(45):
        await ws.send(orjson.dumps({"event": "echo", "id": f"m{i}", "data": {"i": i}}).decode())
    frames = [await recv_json(ws) for _ in range(46)]
    events = [f["event"] for f in frames]
    assert events.count("flow.pause") == 1
    pause = next(f for f in frames if f["event"] == "flow.pause")
    assert pause["data"]["retry_after_ms"] > 0
    limited = [f for f in frames if f["event"] == "error"]
    assert limited
    assert {f["data"]["code"] for f in limited} == {"rate_limited"}
    acked = [f["ref"] for f in frames if f["event"] == "ack"]
    assert len(acked) + len(limited) == 45
    resume = await recv_json(ws, timeout=pause["data"]["retry_after_ms"] / 1000 + 5)
    assert resume["event"] == "flow.resume"
    assert (await call(ws, {"event": "echo", "id": "later", "data": {}}))["ref"] == "later"
    await ws.close()


async def test_well_behaved_client_never_sees_rate_limited(server_factory) -> None:
    """Backpressure: Flow control -> a client that waits on flow.pause gets every message acked."""
    srv = server_factory(REALTIME_RATE_LIMIT="50")
    ws = await connect(srv, obtain_tokens(srv, "alice")["access"])
    await recv_json(ws)
    paused_until = 0.0
    acks = 0
    for i in range(200):
        delay = paused_until - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        reply = await call(ws, {"event": "echo", "id": f"w{i}", "data": {}})
        while reply["event"] in ("flow.pause", "flow.resume"):
            if reply["event"] == "flow.pause":
                paused_until = time.monotonic() + reply["data"]["retry_after_ms"] / 1000
            reply = await recv_json(ws)
        assert reply["event"] == "ack", reply
        acks += 1
    assert acks == 200
    await ws.close()


async def test_flooding_after_pause_closes_4429(server_factory) -> None:
    """Backpressure: Flow control -> a client that keeps flooding after flow.pause is closed 4429 rate_limited."""
    srv = server_factory(REALTIME_RATE_LIMIT="10")
    ws = await connect(srv, obtain_tokens(srv, "alice")["access"])
    await recv_json(ws)
    try:
        for i in range(200):
            await ws.send(orjson.dumps({"event": "echo", "id": f"f{i}", "data": {}}).decode())
    except ConnectionClosed:
        pass
    code, reason, _ = await expect_close(ws)
    assert (code, reason) == (4429, "rate_limited")


async def test_dead_peer_is_dropped_by_heartbeat(server_factory, e2e_db: E2EDatabase) -> None:
    """Risks: Connection leaks (heartbeat) -> a peer that stops answering pings is dropped within
    interval + timeout, and its session row is closed."""
    srv = server_factory(REALTIME_HEARTBEAT_INTERVAL="1", REALTIME_HEARTBEAT_TIMEOUT="1")
    user = e2e_db.user_ids["bob"]
    sock = raw_upgrade(srv.port, obtain_tokens(srv, "bob")["access"])
    started = time.monotonic()
    try:
        open_rows = "SELECT COUNT(*) FROM realtime_connectionsession WHERE user_id = %s AND disconnected_at IS NULL"
        deadline = started + scaled(10)
        seen_open = False
        while time.monotonic() < deadline:
            count = db_query(e2e_db.url, open_rows, (user,))[0][0]
            seen_open = seen_open or count > 0
            if seen_open and count == 0:
                break
            await asyncio.sleep(0.1)
        assert seen_open
        assert db_query(e2e_db.url, open_rows, (user,))[0][0] == 0
        assert time.monotonic() - started < scaled(6)
    finally:
        sock.close()
