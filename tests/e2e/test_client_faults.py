"""Fault tolerance of the Python client against real server processes (TEST-PLAN Fault Tolerance
and Connection rows): the fault proxy cuts, stalls and drops frames; servers restart."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from realtime_client import ConnectionLost, RealtimeClient, Subscription
from tests.conftest import scaled
from tests.e2e.helpers import ServerProcess, mint_token, obtain_tokens
from tests.fault_proxy import FaultProxy

pytestmark = pytest.mark.timeout(60)


def fast(url: str, token: str, **options: Any) -> RealtimeClient:
    """A client that reconnects quickly (the tests' outages are short)."""
    return RealtimeClient(url, token=token, backoff_initial=0.05, backoff_max=0.5, **options)


def room() -> str:
    return f"room:client-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def proxies(server) -> AsyncIterator[list[FaultProxy]]:
    """Proxies in front of the shared server; closed after the test."""
    made: list[FaultProxy] = []
    yield made
    for proxy in made:
        await proxy.close()


async def proxy_to(server: ServerProcess, made: list[FaultProxy]) -> FaultProxy:
    proxy = await FaultProxy(server.host, server.port).start()
    made.append(proxy)
    return proxy


async def take(sub: Subscription, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    async with asyncio.timeout(scaled(timeout)):
        return [await anext(sub) for _ in range(count)]


async def history(client: RealtimeClient, stream: str) -> list[dict[str, Any]]:
    ack = await client.call("stream.history", {"stream": stream, "since": 0, "limit": 1000})
    events: list[dict[str, Any]] = ack["events"]
    return events


async def send(client: RealtimeClient, stream: str, text: str, id: str | None = None) -> int:
    ack = await client.call("message.send", {"stream": stream, "text": text}, id=id)
    offset: int = ack["offset"]
    return offset


async def test_client_network_drop_resumes_without_loss(server, proxies) -> None:
    """Fault tolerance: Network drop -> the proxy cuts the connection and refuses new ones; the
    client reconnects by itself, a call made while down completes, and the subscription resumes
    with every event published meanwhile, in order, no duplicate."""
    proxy = await proxy_to(server, proxies)
    stream = room()
    alice_token, bob_token = obtain_tokens(server, "alice")["access"], obtain_tokens(server, "bob")["access"]
    async with (
        fast(proxy.ws_url, alice_token) as alice,
        RealtimeClient(server.ws_url, token=bob_token) as bob,
    ):
        sub = await alice.subscribe(stream)
        for i in range(5):
            await send(bob, stream, f"m{i}")
        frames = await take(sub, 5)
        reconnecting = asyncio.Event()
        alice.on_state_change(lambda old, new: reconnecting.set() if new == "reconnecting" else None)
        proxy.refuse = True
        await proxy.cut()
        async with asyncio.timeout(scaled(10)):
            await reconnecting.wait()
        for i in range(5, 10):
            await send(bob, stream, f"m{i}")
        pending = asyncio.create_task(send(alice, stream, "from-alice"))
        proxy.refuse = False
        frames += await take(sub, 6)
        assert await asyncio.wait_for(pending, scaled(10)) == 11
        assert [f["offset"] for f in frames] == list(range(1, 12))
        assert [f["data"]["text"] for f in frames] == [f"m{i}" for i in range(10)] + ["from-alice"]
        assert alice.connections == 2
        assert alice.last_close is not None
        assert alice.last_close.code is None  # dropped, no close frame
        assert len(await history(bob, stream)) == 11


async def test_client_reconnect_under_load_no_loss_no_duplicate(server, proxies) -> None:
    """Connection: Reconnect -> while a publisher sends 60 messages, both the publisher's and the
    subscriber's connections are cut twice; the subscriber gets offsets 1..60 exactly once, in
    order, and the stream stores each message once (retries reuse their ids)."""
    pub_proxy, sub_proxy = await proxy_to(server, proxies), await proxy_to(server, proxies)
    stream, total = room(), 60
    progress = {n: asyncio.Event() for n in (20, 40)}
    async with (
        fast(sub_proxy.ws_url, obtain_tokens(server, "alice")["access"]) as alice,
        fast(pub_proxy.ws_url, obtain_tokens(server, "bob")["access"]) as bob,
    ):
        sub = await alice.subscribe(stream)

        async def publish() -> None:
            for i in range(total):
                await send(bob, stream, f"n{i}")
                if i + 1 in progress:
                    progress[i + 1].set()

        publisher = asyncio.create_task(publish())
        async with asyncio.timeout(scaled(30)):
            for mark in (20, 40):
                await progress[mark].wait()
                await sub_proxy.cut()
                await pub_proxy.cut()
            frames = await take(sub, total)
            await publisher
        assert [f["offset"] for f in frames] == list(range(1, total + 1))
        assert [f["data"]["text"] for f in frames] == [f"n{i}" for i in range(total)]
        assert alice.connections == 3
        assert bob.connections == 3
        stored = await history(alice, stream)
        assert len(stored) == total
        assert len({e["data"]["id"] for e in stored}) == total


async def test_client_retries_unacked_call_with_same_id(server, proxies) -> None:
    """Fault tolerance: Retry logic -> the proxy drops the first ack of a publish; the client
    sends it again with the same id after ack_timeout on the same connection, and the server
    stores the message once."""
    proxy = await proxy_to(server, proxies)
    stream, call_id = room(), f"retry-{uuid.uuid4().hex[:12]}"
    token = obtain_tokens(server, "alice")["access"]
    async with fast(proxy.ws_url, token, ack_timeout=0.5) as client:
        proxy.drop_frames(lambda f: f.get("event") == "ack" and f.get("ref") == call_id)
        loop = asyncio.get_running_loop()
        started = loop.time()
        offset = await asyncio.wait_for(send(client, stream, "once", id=call_id), scaled(10))
        elapsed = loop.time() - started
        assert len(proxy.dropped) == 1
        assert 0.5 <= elapsed < 0.5 + scaled(2)
        assert client.connections == 1
        stored = await history(client, stream)
        assert [(e["offset"], e["data"]["id"]) for e in stored] == [(offset, call_id)]


async def test_client_retries_after_reconnect_when_ack_lost_with_connection(server, proxies) -> None:
    """Fault tolerance: Retry logic -> the ack of a publish is dropped and the connection cut; the
    client re-sends the call with the same id after reconnecting; the message is stored once."""
    proxy = await proxy_to(server, proxies)
    stream, call_id = room(), f"retry-{uuid.uuid4().hex[:12]}"
    token = obtain_tokens(server, "alice")["access"]
    async with fast(proxy.ws_url, token, ack_timeout=30) as client:
        proxy.drop_frames(lambda f: f.get("event") == "ack" and f.get("ref") == call_id)
        pending = asyncio.create_task(send(client, stream, "once", id=call_id))
        async with asyncio.timeout(scaled(10)):
            await proxy.frame_dropped.wait()
            await proxy.cut()
            offset = await pending
        assert client.connections == 2
        stored = await history(client, stream)
        assert [(e["offset"], e["data"]["id"]) for e in stored] == [(offset, call_id)]


async def test_client_fills_a_gap_from_history(server, proxies) -> None:
    """Ordering: Message sequence -> a push lost on the way (dropped by the proxy) is fetched with
    stream.history before later events are delivered; the iterator stays in offset order."""
    proxy = await proxy_to(server, proxies)
    stream = room()
    async with (
        RealtimeClient(proxy.ws_url, token=obtain_tokens(server, "alice")["access"]) as alice,
        RealtimeClient(server.ws_url, token=obtain_tokens(server, "bob")["access"]) as bob,
    ):
        sub = await alice.subscribe(stream)
        proxy.drop_frames(lambda f: f.get("stream") == stream and f.get("offset") == 3)
        for i in range(6):
            await send(bob, stream, f"g{i}")
        frames = await take(sub, 6)
        assert [f["offset"] for f in frames] == [1, 2, 3, 4, 5, 6]
        assert len(proxy.dropped) == 1
        assert sub.fills >= 1
        assert alice.connections == 1


async def test_client_detects_a_silent_network_with_pings(server, proxies) -> None:
    """Fault tolerance: Network drop (silent) -> the proxy stalls without closing; the client's
    pings go unanswered, it drops the connection and reconnects, then resumes the subscription."""
    proxy = await proxy_to(server, proxies)
    stream = room()
    token = obtain_tokens(server, "alice")["access"]
    async with (
        fast(proxy.ws_url, token, ping_interval=0.3, ping_timeout=0.3) as alice,
        RealtimeClient(server.ws_url, token=obtain_tokens(server, "bob")["access"]) as bob,
    ):
        sub = await alice.subscribe(stream)
        proxy.stall()
        await send(bob, stream, "while-stalled")
        async with asyncio.timeout(scaled(10)):
            await alice.wait_for_state("reconnecting")
        proxy.unstall()
        frames = await take(sub, 1)
        assert frames[0]["data"]["text"] == "while-stalled"
        await alice.wait_for_state("open")
        assert alice.connections == 2


def serve_on_port(port: int, env: dict[str, str], log_path: Path) -> ServerProcess:
    """``manage.py serve`` on a given port, so a restarted server comes back where clients look."""
    return ServerProcess(env=env, log_path=log_path, port=port).start()


async def test_client_survives_server_restart(server_factory, tmp_path) -> None:
    """Fault tolerance: Server restart -> SIGTERM closes the session with 1012 service_restart; a new
    server starts on the same port; the clients reconnect by themselves and the subscription
    resumes with the events published after the restart (state restored, nothing lost)."""
    first = server_factory()
    stream = room()
    alice_token, bob_token = obtain_tokens(first, "alice")["access"], obtain_tokens(first, "bob")["access"]
    async with (
        RealtimeClient(first.ws_url, token=alice_token, backoff_initial=0.1, backoff_max=1.0) as alice,
        RealtimeClient(first.ws_url, token=bob_token, backoff_initial=0.1, backoff_max=1.0) as bob,
    ):
        sub = await alice.subscribe(stream)
        for i in range(3):
            await send(bob, stream, f"before{i}")
        frames = await take(sub, 3)
        await asyncio.to_thread(first.stop)
        await asyncio.wait_for(alice.wait_for_state("reconnecting", "connecting"), scaled(10))
        assert (alice.recent_closes[0].code, alice.recent_closes[0].reason) == (1012, "service_restart")
        second = await asyncio.to_thread(serve_on_port, first.port, first.env, tmp_path / "second.log")
        try:
            for i in range(3):
                await asyncio.wait_for(send(bob, stream, f"after{i}"), scaled(20))
            frames += await take(sub, 3, timeout=20)
            assert [f["offset"] for f in frames] == list(range(1, 7))
            assert [f["data"]["text"] for f in frames] == [
                *(f"before{i}" for i in range(3)),
                *(f"after{i}" for i in range(3)),
            ]
            assert alice.connections == 2
        finally:
            await alice.close()
            await bob.close()
            await asyncio.to_thread(second.stop)


async def test_client_token_expired_mid_session_reconnects_with_provider(server, e2e_db) -> None:
    """Security: Token expiration -> the server closes 4401 token_expired mid-session; the client
    gets a fresh token from token_provider, reconnects and the subscription resumes."""
    provided = asyncio.Event()

    async def provider() -> str:
        provided.set()
        return obtain_tokens(server, "alice")["access"]

    short = mint_token(e2e_db.user_ids["alice"], expires_in=2)
    stream = room()
    async with (
        RealtimeClient(server.ws_url, token=short, token_provider=provider, refresh_on_expiring=False) as alice,
        RealtimeClient(server.ws_url, token=obtain_tokens(server, "bob")["access"]) as bob,
    ):
        sub = await alice.subscribe(stream)
        async with asyncio.timeout(scaled(10)):
            await provided.wait()
            await alice.wait_for_state("open")
        await send(bob, stream, "after-expiry")
        frames = await take(sub, 1)
        assert frames[0]["data"]["text"] == "after-expiry"
        assert alice.last_close is not None
        assert (alice.last_close.code, alice.last_close.reason) == (4401, "token_expired")
        assert alice.connections == 2


async def test_client_refreshes_session_before_expiry(server, e2e_db) -> None:
    """Security: Token expiration -> on auth.expiring the client sends auth.refresh with a token
    from token_provider, so the session outlives the first token without reconnecting."""
    refreshed = asyncio.Event()
    pushes: list[dict[str, Any]] = []
    fresh = obtain_tokens(server, "alice")["access"]  # ahead of time: password hashing is slow

    async def provider() -> str:
        refreshed.set()
        return fresh

    expires_in = 4
    started = time.monotonic()
    short = mint_token(e2e_db.user_ids["alice"], expires_in=expires_in)
    async with RealtimeClient(server.ws_url, token=short, token_provider=provider) as alice:
        alice.on_push(pushes.append)
        async with asyncio.timeout(scaled(10)):
            await refreshed.wait()
        # Nothing to wait on for "no close happened": wait out the first token's lifetime.
        await asyncio.sleep(max(0.0, expires_in + 1 - (time.monotonic() - started)))
        assert await alice.call("echo", {"still": "open"}) == {"still": "open"}
        assert alice.connections == 1
        assert [p["event"] for p in pushes] == ["auth.expiring"]


async def test_client_stops_when_kicked(server) -> None:
    """Connection: 4403 kicked -> the client stops reconnecting; its subscription ends with
    ConnectionLost("kicked") and later calls raise it too."""
    async with (
        fast(server.ws_url, obtain_tokens(server, "alice")["access"]) as alice,
        RealtimeClient(server.ws_url, token=obtain_tokens(server, "admin")["access"]) as admin,
    ):
        sub = await alice.subscribe(room())
        assert (await admin.call("admin.kick", {"username": "alice"}))["closed"] >= 1
        async with asyncio.timeout(scaled(10)):
            with pytest.raises(ConnectionLost) as info:
                await anext(sub)
        assert info.value.code == "kicked"
        assert alice.state == "closed"
        with pytest.raises(ConnectionLost):
            await alice.call("echo", {})
        assert alice.connections == 1
