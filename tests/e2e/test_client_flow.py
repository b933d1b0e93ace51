"""Flow control and message size limits through the Python client, against real servers."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from realtime_client import MessageTooLarge, RealtimeClient
from tests.conftest import scaled
from tests.e2e.helpers import obtain_tokens

pytestmark = pytest.mark.timeout(60)


async def test_client_honours_flow_pause_in_a_tight_publish_loop(server_factory) -> None:
    """Backpressure: Flow control -> 300 publishes fired at once at a server limited to 100 msg/s:
    the client gets flow.pause, waits for flow.resume, and every publish is acked exactly once
    with no rate_limited error and no 4429 close."""
    srv = server_factory(REALTIME_RATE_LIMIT="100")
    stream, total = f"room:flow-{uuid.uuid4().hex[:10]}", 300
    pushes: list[dict[str, Any]] = []
    async with RealtimeClient(srv.ws_url, token=obtain_tokens(srv, "alice")["access"]) as client:
        client.on_push(pushes.append)
        async with asyncio.timeout(scaled(30)):
            acks = await asyncio.gather(
                *(client.call("message.send", {"stream": stream, "text": f"f{i}"}) for i in range(total))
            )
        assert sorted(a["offset"] for a in acks) == list(range(1, total + 1))
        assert client.flow.pauses >= 1
        assert "flow.pause" in {p["event"] for p in pushes}
        assert client.connections == 1
        stored = await client.call("stream.history", {"stream": stream, "since": 0, "limit": 1000})
        assert len(stored["events"]) == total


async def test_client_oversize_call_fails_without_retry(server_factory) -> None:
    """Message: Message size limit -> a call over the welcome's max_message_bytes fails with
    message_too_large before it is sent; one the server refuses with 1009 fails the same way, is
    not retried, and the client reconnects for the other calls."""
    srv = server_factory(REALTIME_MAX_MESSAGE_BYTES="2048")
    async with RealtimeClient(srv.ws_url, token=obtain_tokens(srv, "alice")["access"], backoff_initial=0.05) as client:
        assert client.max_message_bytes == 2048
        with pytest.raises(MessageTooLarge) as info:
            await client.call("echo", {"blob": "x" * 4096})
        assert info.value.code == "message_too_large"
        assert client.connections == 1
        client.max_message_bytes = None  # as if the welcome had not told the limit: the server enforces it
        async with asyncio.timeout(scaled(15)):
            with pytest.raises(MessageTooLarge):
                await client.call("echo", {"blob": "y" * 4096})
            assert await client.call("echo", {"small": True}) == {"small": True}
        assert client.recent_closes[0].code == 1009
        assert client.connections == 2
