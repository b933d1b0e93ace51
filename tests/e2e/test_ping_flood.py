"""Issue 13, "pings count": a client that sends transport pings as fast as it can and never
reads its pongs must not grow the server's memory, nor slow other clients down.

Seen on main: every ping's pong was queued on a transport nobody read, and reading went
on, so the pong buffer grew with the flood (see the report for figures); now pings count
against the rate limit (REALTIME_RATE_LIMIT, a bucket of its own) and end in 4429
``rate_limited``, and a connection whose writes are paused is not read.

Also issue 20: the close frame reaches a client that is still sending when the server
fails the connection (it reads and drops input until the client closes, or briefly).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import struct
import time
from collections.abc import AsyncIterator

from websockets.exceptions import ConnectionClosed

from tests.conftest import scaled
from tests.e2e.attack_helpers import echo_latencies, p99, rss_kib
from tests.e2e.conftest import ServerFactory
from tests.e2e.helpers import connect, obtain_tokens, raw_upgrade, recv_json


def masked_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    size = len(payload)
    if size < 126:
        length = bytes([0x80 | size])
    elif size < 65536:
        length = bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        length = bytes([0x80 | 127]) + struct.pack("!Q", size)
    return bytes([(0x80 if fin else 0) | opcode]) + length + mask + masked


def flood(sock: socket.socket, batch: bytes, seconds: float, max_bytes: int) -> int:
    """Write ``batch`` as fast as the server takes it, never reading; stop after ``seconds``,
    ``max_bytes``, or once the server has stopped taking input for a second. Bytes sent."""
    sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and sent < max_bytes:
        if not select.select([], [sock], [], 1.0)[1]:
            break  # the server stopped reading
        try:
            sent += sock.send(batch)
        except BlockingIOError:
            continue
        except OSError:
            break
    sock.setblocking(True)
    return sent


def close_code_after(sock: socket.socket, timeout: float) -> int | None:
    """Read server frames (pongs, ...) until a close frame; its code, or None if the TCP
    connection ended (or the time ran out) without one."""
    deadline = time.monotonic() + timeout
    sock.settimeout(timeout)
    buffer = bytearray()
    pos = 0
    try:
        while time.monotonic() < deadline:
            while len(buffer) - pos >= 2:
                size, offset = buffer[pos + 1] & 0x7F, pos + 2
                if size == 126:
                    size, offset = int.from_bytes(buffer[pos + 2 : pos + 4]), pos + 4
                elif size == 127:
                    size, offset = int.from_bytes(buffer[pos + 2 : pos + 10]), pos + 10
                if len(buffer) < offset + size:
                    break
                if buffer[pos] & 0x0F == 0x8:
                    return int.from_bytes(buffer[offset : offset + 2])
                pos = offset + size
            del buffer[:pos]
            pos = 0
            chunk = sock.recv(1 << 20)
            if not chunk:
                return None
            buffer += chunk
    except (TimeoutError, ConnectionResetError):
        return None
    return None


async def test_ping_flood_is_closed_4429_with_bounded_memory(server_factory: ServerFactory) -> None:
    """Issue 13 "pings count": 125-byte pings as fast as possible, never read -> 4429, RSS bounded, others unaffected"""
    server = server_factory()
    tokens = obtain_tokens(server, "alice")
    other = obtain_tokens(server, "bob")["access"]
    stop = asyncio.Event()
    # A baseline first: the same echo loop without the attack.
    baseline_task = asyncio.create_task(echo_latencies(server, other, stop))
    await asyncio.sleep(0.5)  # time passing is the subject: a baseline measured over half a second
    stop.set()
    baseline = await baseline_task
    stop.clear()

    attacker = raw_upgrade(server.port, tokens["access"])
    attacker.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    before = rss_kib(server)
    batch = masked_frame(0x9, os.urandom(125)) * 512
    echo_task = asyncio.create_task(echo_latencies(server, other, stop))
    sent = await asyncio.to_thread(flood, attacker, batch, scaled(3), 256 * 1024 * 1024)
    stop.set()
    during = await echo_task
    grown = rss_kib(server) - before
    print(f"ping flood: {sent >> 20} MiB sent, RSS +{grown} KiB, echo p99 {p99(baseline):.4f} -> {p99(during):.4f} s")
    code = await asyncio.to_thread(close_code_after, attacker, scaled(10))
    attacker.close()

    assert grown < 16 * 1024, f"RSS grew {grown} KiB during the flood ({sent >> 20} MiB of pings)"
    assert code == 4429, f"no 4429 after {sent >> 20} MiB of pings"
    assert p99(during) < max(0.25, 5 * p99(baseline)), (p99(baseline), p99(during))
    assert "Traceback" not in server.log_text()


async def test_close_frame_reaches_a_client_still_sending(server_factory: ServerFactory) -> None:
    """Issue 20: a client (the websockets library's) sending a fragmented message over
    REALTIME_MAX_MESSAGE_BYTES, and still sending, receives the 1009 close frame
    (main: no close frame in 4 of 6 tries)"""
    server = server_factory(REALTIME_MAX_MESSAGE_BYTES="4096")
    token = obtain_tokens(server, "alice")["access"]

    async def fragments() -> AsyncIterator[str]:
        for _ in range(2048):  # 2 MiB: the client is still sending when the server fails it
            yield "x" * 1024

    codes = []
    for _ in range(4):
        ws = await connect(server, token)
        assert (await recv_json(ws))["event"] == "session.welcome"
        with contextlib.suppress(ConnectionClosed):
            await ws.send(fragments())
        await asyncio.wait_for(ws.wait_closed(), scaled(15))
        codes.append(ws.close_code)
    assert codes == [1009] * 4
    assert "Traceback" not in server.log_text()
