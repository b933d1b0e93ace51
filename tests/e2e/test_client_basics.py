"""The Python client (realtime_client) against a real server: calls, subscriptions, auth outcomes."""

from __future__ import annotations

import asyncio

import pytest

from realtime_client import ConnectionLost, RealtimeClient, RealtimeError, ServerError
from tests.conftest import scaled
from tests.e2e.helpers import mint_token, obtain_tokens


async def test_client_connect_call_subscribe(server) -> None:
    """Connection: Connect -> state "open" after the welcome; Message: Valid message / Schema validation
    through call(); a subscription yields the published message."""
    token = obtain_tokens(server, "alice")["access"]
    states: list[tuple[str, str]] = []
    client = RealtimeClient(server.ws_url, token=token)
    client.on_state_change(lambda old, new: states.append((old, new)))
    async with asyncio.timeout(scaled(20)):
        async with client:
            assert client.state == "open"
            assert client.welcome is not None
            assert client.welcome["user"]["username"] == "alice"
            assert await client.call("echo", {"x": 1}) == {"x": 1}
            with pytest.raises(ServerError) as info:
                await client.call("message.send", {"stream": "room:client-basics"})
            assert info.value.code == "validation_error"
            assert isinstance(info.value, RealtimeError)
            sub = await client.subscribe("room:client-basics")
            ack = await client.call("message.send", {"stream": "room:client-basics", "text": "hi"}, id="basics-1")
            frame = await anext(sub)
            assert frame["offset"] == ack["offset"]
            assert frame["data"]["text"] == "hi"
            assert frame["data"]["id"] == "basics-1"
        assert client.state == "closed"
        with pytest.raises(StopAsyncIteration):
            await anext(sub)
    assert states == [("connecting", "open"), ("open", "closed")]


async def test_client_invalid_token_stops(server) -> None:
    """Security: Invalid token / Connection: the client stops reconnecting on 4401 invalid_token."""
    client = RealtimeClient(server.ws_url, token="forged.token.value", backoff_initial=0.05)
    async with asyncio.timeout(scaled(10)):
        with pytest.raises(ConnectionLost) as info:
            await client.connect()
    assert info.value.code == "invalid_token"
    assert client.state == "closed"
    assert client.connections == 0
    with pytest.raises(ConnectionLost):
        await client.call("echo", {})


async def test_client_expired_token_uses_token_provider(server, e2e_db) -> None:
    """Security: Token expiration -> on 4401 token_expired the client asks token_provider for a fresh
    token and reconnects."""
    calls = 0

    async def provider() -> str:
        nonlocal calls
        calls += 1
        return obtain_tokens(server, "alice")["access"]

    expired = mint_token(e2e_db.user_ids["alice"], expires_in=-60)
    async with asyncio.timeout(scaled(15)):
        async with RealtimeClient(server.ws_url, token=expired, token_provider=provider) as client:
            assert calls == 1
            assert await client.call("echo", {"ok": True}) == {"ok": True}
