"""Issue 19: handshake admission on a real server (``REALTIME_HANDSHAKE_SLOTS``).

The server answers at most that many WebSocket handshakes at a time, so a burst of
connections cannot stall the established ones (docs/performance.md, "Pauses while
connections pour in"). What must hold whatever the slots: every handshake of a burst far
larger than the slots completes, and a client that never finishes its request head holds
no slot (its header timeout still closes it).
"""

from __future__ import annotations

import asyncio
import base64
import os
import select
import socket
import time

from tests.conftest import scaled
from tests.e2e.conftest import ServerFactory
from tests.e2e.helpers import connect, expect_close, obtain_tokens, recv_json

SLOTS = 4


def raw_upgrade_request(port: int, token: str) -> socket.socket:
    """A connection that has sent a whole upgrade request and read nothing."""
    sock = partial_upgrade(port, token)
    sock.sendall(b"Sec-WebSocket-Version: 13\r\n\r\n")
    return sock


def partial_upgrade(port: int, token: str) -> socket.socket:
    """A connection that sends most of an upgrade request head, never its end."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws/?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n".encode()
    )
    return sock


async def test_a_burst_of_200_handshakes_all_complete_through_4_slots(server_factory: ServerFactory) -> None:
    """Issue 19: 200 concurrent handshakes through 4 slots, 20 of them refused and 20 given up
    by their client mid-way: every other one gets its welcome, every refused one its close."""
    server = server_factory(REALTIME_HANDSHAKE_SLOTS=str(SLOTS), REALTIME_MAX_CONNECTIONS_PER_USER="1000")
    token = obtain_tokens(server, "alice")["access"]

    async def welcome() -> str:
        ws = await connect(server, token)
        return str((await recv_json(ws, 30))["event"])

    async def refused() -> str:
        ws = await connect(server, token[:-4] + "AAAA")
        code, reason, _ = await expect_close(ws, 30)
        return f"{code} {reason}"

    async def given_up() -> str:
        sock = await asyncio.to_thread(raw_upgrade_request, server.port, token)
        sock.close()  # before its answer, possibly while it waits for a slot
        return "given up"

    kinds = [welcome] * 160 + [refused, given_up] * 20
    results = await asyncio.gather(*(kind() for kind in kinds))
    assert results == ["session.welcome"] * 160 + ["4401 invalid_token", "given up"] * 20
    assert "Traceback" not in server.log_text()
    # Nothing holds a slot now: a last client is answered at once.
    assert await welcome() == "session.welcome"


async def test_clients_that_never_finish_their_head_hold_no_slot(server_factory: ServerFactory) -> None:
    """Issue 19: 3 x SLOTS connections stalled mid-head do not delay a real client; each still
    gets 408 at its header timeout."""
    header_timeout = scaled(3)
    server = server_factory(REALTIME_HANDSHAKE_SLOTS=str(SLOTS), REALTIME_HTTP_HEADER_TIMEOUT=str(header_timeout))
    token = obtain_tokens(server, "alice")["access"]
    stalled = [partial_upgrade(server.port, token) for _ in range(3 * SLOTS)]
    started = time.monotonic()
    try:
        ws = await connect(server, token)
        assert (await recv_json(ws))["event"] == "session.welcome"
        assert time.monotonic() - started < header_timeout / 2  # not after the stalled ones timed out
        for sock in stalled:
            assert select.select([sock], [], [], header_timeout + scaled(3))[0], "no answer at the header timeout"
            assert sock.recv(4096).startswith(b"HTTP/1.1 408")
    finally:
        for sock in stalled:
            sock.close()
