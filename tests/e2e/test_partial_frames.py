"""Partial frames and a soak of random network drops (issue 5; TEST-PLAN Fault Tolerance).

A peer that sends half a frame and stalls, or disconnects mid-frame, must never crash or
block the server; other clients are unaffected; the stalled socket is freed within a
bounded time (the heartbeat: interval + timeout).
"""

from __future__ import annotations

import asyncio
import os
import random
import struct
import time
import uuid
from typing import Any

import pytest

from realtime_client import RealtimeClient
from tests.conftest import scaled
from tests.e2e.conftest import E2EDatabase
from tests.e2e.helpers import ServerProcess, call, connect, db_query, obtain_tokens, raw_upgrade, recv_json
from tests.fault_proxy import FaultProxy
from tests.waiting import async_wait_until

HEARTBEAT = {"REALTIME_HEARTBEAT_INTERVAL": "1", "REALTIME_HEARTBEAT_TIMEOUT": "1"}


def _masked_text_frame_prefix(length: int, sent: int) -> bytes:
    """The first ``sent`` payload bytes of a masked text frame announcing ``length`` bytes."""
    mask = os.urandom(4)
    payload = b'{"event":"echo","data":{"x":"' + b"a" * length
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload[:length]))
    return struct.pack("!BBH", 0x81, 0x80 | 126, length) + mask + body[:sent]


def _open_sessions(e2e_db: E2EDatabase, user_id: int) -> int:
    rows = db_query(
        e2e_db.url,
        "SELECT COUNT(*) FROM realtime_connectionsession WHERE user_id = %s AND disconnected_at IS NULL",
        (user_id,),
    )
    return int(rows[0][0])


@pytest.mark.parametrize("sent", [0, 1, 40], ids=["header-only", "one-byte", "half-payload"])
async def test_half_a_frame_then_stall(server_factory, e2e_db: E2EDatabase, sent: int) -> None:
    """Fault tolerance: Partial message -> half a frame and a stall neither crashes nor blocks the
    server: another client keeps its echo round trips, and the stalled socket and its session are
    freed within heartbeat interval + timeout."""
    srv = server_factory(**HEARTBEAT)
    bob = e2e_db.user_ids["bob"]
    sock = raw_upgrade(srv.port, obtain_tokens(srv, "bob")["access"])
    try:
        await async_wait_until(lambda: _open_sessions(e2e_db, bob) == 1, 5)
        frame = _masked_text_frame_prefix(200, sent)
        sock.sendall(frame[: 2 if sent == 0 else len(frame)])
        other = await connect(srv, obtain_tokens(srv, "alice")["access"])
        await recv_json(other)
        for i in range(20):
            started = time.monotonic()
            assert (await call(other, {"event": "echo", "id": f"e{i}", "data": {}}))["ref"] == f"e{i}"
            assert time.monotonic() - started < scaled(0.5)
        freed_after = await async_wait_until(lambda: _open_sessions(e2e_db, bob) == 0, 6)
        assert freed_after < scaled(5)
        sock.settimeout(scaled(5))
        data = b""
        while chunk := sock.recv(65536):  # the server closed its side: recv ends with b""
            data += chunk
        assert (await call(other, {"event": "ping", "id": "still"}))["ref"] == "still"
    finally:
        sock.close()


async def test_disconnect_mid_frame_frees_the_session(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Fault tolerance: Partial message -> a peer that disconnects in the middle of a frame is
    cleaned up at once and the server carries on."""
    carol_like = e2e_db.user_ids["admin"]
    before = _open_sessions(e2e_db, carol_like)
    sock = raw_upgrade(server.port, obtain_tokens(server, "admin")["access"])
    await async_wait_until(lambda: _open_sessions(e2e_db, carol_like) == before + 1, 5)
    sock.sendall(_masked_text_frame_prefix(300, 100))
    sock.close()
    await async_wait_until(lambda: _open_sessions(e2e_db, carol_like) == before, 5)
    ws = await connect(server, obtain_tokens(server, "alice")["access"])
    await recv_json(ws)
    assert (await call(ws, {"event": "ping", "id": "alive"}))["ref"] == "alive"


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_soak_random_network_drops_exactly_once_in_order(server: ServerProcess) -> None:
    """Fault tolerance: Network drop (soak) -> for a minute, both clients' connections are cut at
    random; every published message is received exactly once, in order, and stored once."""
    pub_proxy = await FaultProxy(server.host, server.port).start()
    sub_proxy = await FaultProxy(server.host, server.port).start()
    stream = f"room:soak-{uuid.uuid4().hex[:10]}"
    rng = random.Random(1234)
    deadline = time.monotonic() + 60
    sent = 0
    try:
        async with (
            RealtimeClient(
                sub_proxy.ws_url, token=obtain_tokens(server, "alice")["access"], backoff_initial=0.05, backoff_max=0.5
            ) as alice,
            RealtimeClient(
                pub_proxy.ws_url, token=obtain_tokens(server, "bob")["access"], backoff_initial=0.05, backoff_max=0.5
            ) as bob,
        ):
            sub = await alice.subscribe(stream)

            async def chaos() -> None:
                while time.monotonic() < deadline:
                    await asyncio.sleep(rng.uniform(0.2, 2.0))
                    await rng.choice((pub_proxy, sub_proxy)).cut()

            chaos_task = asyncio.create_task(chaos())
            while time.monotonic() < deadline:
                await bob.call("message.send", {"stream": stream, "text": f"n{sent}"})
                sent += 1
            await chaos_task
            received: list[dict[str, Any]] = []
            async with asyncio.timeout(scaled(60)):
                while len(received) < sent:
                    received.append(await anext(sub))
            assert [f["offset"] for f in received] == list(range(1, sent + 1))
            assert [f["data"]["text"] for f in received] == [f"n{i}" for i in range(sent)]
            stored = await alice.call("stream.history", {"stream": stream, "since": 0, "limit": 1000})
            assert len(stored["events"]) == min(sent, 1000)
    finally:
        await pub_proxy.close()
        await sub_proxy.close()
