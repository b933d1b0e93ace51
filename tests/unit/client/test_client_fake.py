"""RealtimeClient against a scripted fake socket: flow control, retries, closes, resumes, gaps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from realtime_client import ClientClosed, ConnectionLost, NotRecovered, RealtimeClient, ServerError
from tests.unit.client.fakes import FakeServer


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    server = FakeServer()
    monkeypatch.setattr("realtime_client.client.open_connection", server.open)
    return server


@pytest.fixture
async def client(fake: FakeServer) -> AsyncIterator[RealtimeClient]:
    async with RealtimeClient("ws://fake/ws/", token="t", ack_timeout=5.0, backoff_initial=0.01) as c:
        yield c


async def test_flow_pause_holds_new_calls_until_resume(fake: FakeServer, client: RealtimeClient) -> None:
    ws = await fake.connection(1)
    ws.feed({"event": "flow.pause", "data": {"retry_after_ms": 60_000}})
    pushes: list[str] = []
    client.on_push(lambda frame: pushes.append(frame["event"]))
    task = asyncio.create_task(client.call("echo", {"n": 1}))
    await asyncio.sleep(0.05)  # nothing to wait on for "not sent": give the sender a chance
    assert ws.sent == []
    assert client.flow.paused
    ws.feed({"event": "flow.resume", "data": {}})
    frame = await ws.next_sent()
    ws.ack(frame, {"n": 1})
    assert await task == {"n": 1}
    assert pushes == ["flow.pause", "flow.resume"]


async def test_a_lost_flow_resume_ends_the_pause_after_the_fallback(fake: FakeServer, client: RealtimeClient) -> None:
    ws = await fake.connection(1)
    ws.feed({"event": "flow.pause", "data": {"retry_after_ms": 50}})
    await asyncio.sleep(0)
    task = asyncio.create_task(client.call("echo", {}))
    frame = await ws.next_sent()
    ws.ack(frame, {})
    assert await task == {}


async def test_rate_limited_reply_is_retried_not_raised(fake: FakeServer, client: RealtimeClient) -> None:
    ws = await fake.connection(1)
    task = asyncio.create_task(client.call("message.send", {"stream": "room:a", "text": "x"}))
    first = await ws.next_sent()
    ws.feed({"event": "flow.pause", "data": {"retry_after_ms": 60_000}})
    ws.feed({"event": "error", "ref": first["id"], "data": {"code": "rate_limited", "message": "wait"}})
    await asyncio.sleep(0.05)
    assert len(ws.sent) == 1
    ws.feed({"event": "flow.resume", "data": {}})
    second = await ws.next_sent(2)
    assert second == first
    ws.ack(second, {"stream": "room:a", "offset": 1})
    assert await task == {"stream": "room:a", "offset": 1}


async def test_unacked_call_is_resent_with_the_same_id(fake: FakeServer) -> None:
    async with RealtimeClient("ws://fake/ws/", token="t", ack_timeout=0.05) as client:
        ws = await fake.connection(1)
        task = asyncio.create_task(client.call("echo", {"a": 1}, id="keep-me"))
        first = await ws.next_sent(1)
        second = await ws.next_sent(2)
        assert first == second
        assert first["id"] == "keep-me"
        ws.ack(second, {"a": 1})
        ws.ack(first, {"a": 1})  # the late reply to the first attempt is ignored
        assert await task == {"a": 1}


async def test_error_reply_raises_server_error(fake: FakeServer, client: RealtimeClient) -> None:
    ws = await fake.connection(1)
    task = asyncio.create_task(client.call("resource.get", {"id": 9}))
    frame = await ws.next_sent()
    ws.feed({"event": "error", "ref": frame["id"], "data": {"code": "not_found", "message": "nope"}})
    with pytest.raises(ServerError) as info:
        await task
    assert info.value.code == "not_found"


async def test_kick_fails_pending_calls_and_ends_subscriptions(fake: FakeServer, client: RealtimeClient) -> None:
    ws = await fake.connection(1)
    sub_task = asyncio.create_task(client.subscribe("room:a"))
    ws.ack(await ws.next_sent(), {"stream": "room:a", "offset": 0, "epoch": "e", "recovered": True})
    sub = await sub_task
    pending = asyncio.create_task(client.call("echo", {}))
    await ws.next_sent(2)
    ws.server_close(4403, "kicked")
    with pytest.raises(ConnectionLost) as info:
        await pending
    assert info.value.code == "kicked"
    with pytest.raises(ConnectionLost):
        await anext(sub)
    assert client.state == "closed"
    assert len(fake.sockets) == 1


async def test_resume_not_recovered_ends_the_iterator(fake: FakeServer, client: RealtimeClient) -> None:
    ws = await fake.connection(1)
    sub_task = asyncio.create_task(client.subscribe("room:a"))
    ws.ack(await ws.next_sent(), {"stream": "room:a", "offset": 5, "epoch": "e1", "recovered": True})
    sub = await sub_task
    ws.feed({"event": "message.new", "stream": "room:a", "offset": 6, "data": {}})
    assert (await anext(sub))["offset"] == 6
    ws.server_close(1012, "service_restart")
    ws2 = await fake.connection(2)
    resume = await ws2.next_sent()
    assert resume["event"] == "stream.subscribe"
    assert resume["data"] == {"stream": "room:a", "since": 6, "epoch": "e1"}
    ws2.ack(resume, {"stream": "room:a", "offset": 9, "epoch": "e2", "recovered": False})
    with pytest.raises(NotRecovered) as info:
        await anext(sub)
    assert info.value.code == "not_recovered"
    assert (await ws2.next_sent(2))["event"] == "stream.unsubscribe"
    assert "room:a" not in client.subscriptions


async def test_gap_is_filled_from_history(fake: FakeServer, client: RealtimeClient) -> None:
    ws = await fake.connection(1)
    sub_task = asyncio.create_task(client.subscribe("room:a"))
    ws.ack(await ws.next_sent(), {"stream": "room:a", "offset": 0, "epoch": "e", "recovered": True})
    sub = await sub_task

    def push(offset: int) -> dict[str, object]:
        return {"event": "message.new", "stream": "room:a", "offset": offset, "data": {"n": offset}}

    ws.feed(push(1))
    ws.feed(push(3))
    fill = await ws.next_sent(2)
    assert fill["event"] == "stream.history"
    assert fill["data"]["since"] == 1
    ws.ack(fill, {"stream": "room:a", "events": [push(2), push(3)]})
    ws.feed(push(3))  # a duplicate
    ws.feed(push(4))
    got = [(await anext(sub))["offset"] for _ in range(4)]
    assert got == [1, 2, 3, 4]
    assert sub.fills == 1


async def test_calls_made_while_reconnecting_are_sent_after(fake: FakeServer, client: RealtimeClient) -> None:
    ws = await fake.connection(1)
    task = asyncio.create_task(client.call("echo", {"x": 1}, id="across"))
    await ws.next_sent()
    ws.server_close(1011, "internal_error")
    ws2 = await fake.connection(2)
    resent = await ws2.next_sent()
    assert resent["id"] == "across"
    ws2.ack(resent, {"x": 1})
    assert await task == {"x": 1}
    assert client.state == "open"


async def test_close_fails_pending_calls(fake: FakeServer) -> None:
    client = RealtimeClient("ws://fake/ws/", token="t")
    await client.connect()
    await fake.connection(1)
    task = asyncio.create_task(client.call("echo", {}))
    await asyncio.sleep(0)
    await client.close()
    with pytest.raises(ClientClosed) as info:
        await task
    assert info.value.code == "closed"


async def test_a_generated_id_skips_an_id_the_application_chose(fake: FakeServer) -> None:
    """Found by the chaos soak: an application id equal to the next generated one (same prefix)
    made the resume's internal subscribe raise inside the connection task, killing the client."""
    async with RealtimeClient("ws://fake/ws/", token="t", id_prefix="app") as client:
        ws = await fake.connection(1)
        mine = asyncio.create_task(client.call("echo", {}, id="app-1"))
        sub_task = asyncio.create_task(client.subscribe("room:a"))
        first, second = await ws.next_sent(1), await ws.next_sent(2)
        assert {first["id"], second["id"]} == {"app-1", "app-2"}
        subscribe = first if first["event"] == "stream.subscribe" else second
        ws.ack(subscribe, {"stream": "room:a", "offset": 0, "epoch": "e", "recovered": True})
        echo = second if subscribe is first else first
        ws.ack(echo, {})
        assert await mine == {}
        await sub_task
