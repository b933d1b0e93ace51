"""Presence across real servers sharing Redis (issue 17): convergence, per user across servers,
signals across, a server killed with ``kill -9``, a Redis restart, 1,000 members at once."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from typing import Any

import pytest

from loadtests.presence_storm import create_members, storm
from tests.conftest import scaled
from tests.e2e.helpers import base_env
from tests.e2e.redis_server import RedisServer
from tests.e2e.test_presence import ask, next_push, no_push, session, subscribe

pytestmark = pytest.mark.timeout(90)

HEARTBEAT = 1.0  # REALTIME_SERVER_HEARTBEAT_INTERVAL of these servers, seconds


def room() -> str:
    return f"room:cluster-{uuid.uuid4().hex[:10]}"


def pair(server_factory: Any, redis: RedisServer, **settings: str) -> tuple[Any, Any]:
    options = {"REDIS_URL": redis.url, "REALTIME_SERVER_HEARTBEAT_INTERVAL": str(HEARTBEAT), **settings}
    return server_factory(**options), server_factory(**options)


def names(users: list[dict[str, Any]]) -> dict[str, int]:
    return {u["username"]: u["sessions"] for u in users}


async def test_members_on_two_servers_converge_per_user_and_signals_cross(server_factory, redis) -> None:
    """Issue 17, cluster-wide: a join on one server reaches a subscriber on the other within 2 s;
    alice's tabs on both servers are one member with two sessions, who leaves with her last
    tab; a signal crosses servers once."""
    a, b = pair(server_factory, redis)
    stream = room()
    bob = await session(b, "bob")
    await subscribe(bob, stream)
    alice_a = await session(a, "alice")
    started = time.monotonic()
    await subscribe(alice_a, stream)
    joined = await next_push(bob, "presence.join")
    assert names(joined["data"]["users"]) == {"alice": 1}
    assert time.monotonic() - started < 2.0
    alice_b = await session(b, "alice")
    state = await subscribe(alice_b, stream)
    assert set(names(state["users"])) == {"alice", "bob"}
    await no_push(bob, "presence.join")
    answer = await ask(bob, "stream.presence", {"stream": stream})
    assert names(answer["data"]["users"]) == {"alice": 2, "bob": 1}
    assert (await ask(bob, "stream.signal", {"stream": stream, "data": {"typing": True}}))["event"] == "ack"
    signal_a = await next_push(alice_a, "stream.signal")
    assert signal_a["data"]["from"]["username"] == "bob"
    await alice_a.close()
    await no_push(bob, "presence.leave", within=1.0)
    await alice_b.close()
    left = await next_push(bob, "presence.leave", timeout=2.0)
    assert [u["username"] for u in left["data"]["users"]] == ["alice"]
    await bob.close()


async def test_members_of_a_killed_server_leave_within_two_heartbeats(server_factory, redis) -> None:
    """Issue 17, crash-safe: kill -9 of the server holding alice: bob, on the other server, gets
    her presence.leave within two heartbeat intervals (plus one coalescing interval)."""
    a, b = pair(server_factory, redis)
    stream = room()
    bob = await session(b, "bob")
    await subscribe(bob, stream)
    alice = await session(a, "alice")
    await subscribe(alice, stream)
    await next_push(bob, "presence.join")
    killed = time.monotonic()
    a.stop(sig=signal.SIGKILL)
    left = await next_push(bob, "presence.leave", timeout=scaled(2 * HEARTBEAT + 3))
    elapsed = time.monotonic() - killed
    assert [u["username"] for u in left["data"]["users"]] == ["alice"]
    assert elapsed <= scaled(2 * HEARTBEAT + 0.5), elapsed
    assert names((await ask(bob, "stream.presence", {"stream": stream}))["data"]["users"]) == {"bob": 1}
    await bob.close()


async def test_a_redis_restart_degrades_presence_then_it_rebuilds(server_factory, redis) -> None:
    """Issue 17, Redis outage: presence.state says degraded while Redis is down (local members
    still tracked); when it returns, presence.state says so and each server's members are
    rebuilt in the new Redis: a member who joined on the other server during the outage
    appears, and the stream.presence answer is whole again."""
    a, b = pair(server_factory, redis)
    stream = room()
    bob = await session(b, "bob")
    await subscribe(bob, stream)
    alice = await session(a, "alice")
    await subscribe(alice, stream)
    await next_push(bob, "presence.join")
    redis.kill()
    degraded = await next_push(bob, "presence.state", timeout=10)
    assert degraded["data"]["degraded"] is True
    admin = await session(a, "admin")
    state = await subscribe(admin, stream)
    assert state["degraded"] is True
    redis.start()
    recovered = await next_push(bob, "presence.state", timeout=20)
    assert recovered["data"]["degraded"] is False
    async with asyncio.timeout(scaled(10)):
        while True:
            answer = await ask(bob, "stream.presence", {"stream": stream})
            if names(answer["data"]["users"]) == {"alice": 1, "bob": 1, "admin": 1}:
                break
            await asyncio.sleep(0.2)
    assert answer["data"]["degraded"] is False
    for ws in (alice, bob, admin):
        await ws.close()


async def test_a_thousand_members_join_at_once_on_two_servers(server_factory, redis, e2e_db) -> None:
    """Issue 17, bounded cost: 1,000 members subscribe at once, half on each server: every
    observer's presence map holds all 1,000 within seconds, and the presence frames sent are
    a few per member (coalesced), not one per join per member (1,000,000)."""
    a, b = pair(server_factory, redis, REALTIME_RATE_LIMIT="0")
    user_ids = create_members(base_env(e2e_db.url), 1000)
    figures = await storm([a.ws_url, b.ws_url], user_ids, reconnect=False)
    assert figures["join_converged_s"] < scaled(15)
    assert figures["join_presence_frames"] <= 6 * 1000, figures
