"""Frames, replies and errors over a real socket (issue 2; PROTOCOL.md sections 3 and 5)."""

from __future__ import annotations

import os
import struct
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import ClientConnection

from tests.e2e.helpers import ServerProcess, call, connect, expect_close, obtain_tokens, raw_upgrade, recv_json


@pytest.fixture
async def ws(server: ServerProcess) -> AsyncIterator[ClientConnection]:
    conn = await connect(server, obtain_tokens(server, "alice")["access"], max_size=None)
    assert (await recv_json(conn))["event"] == "session.welcome"
    yield conn
    await conn.close()


async def test_valid_message_is_processed(ws: ClientConnection) -> None:
    """Message: Valid message -> echo and ping are answered with an ack carrying ref and data."""
    reply = await call(ws, {"event": "echo", "id": "e-1", "data": {"x": 1, "nested": {"ok": [1, "two", None]}}})
    assert reply == {"event": "ack", "ref": "e-1", "data": {"x": 1, "nested": {"ok": [1, "two", None]}}}
    assert await call(ws, {"event": "ping", "data": {"ts": 12.5}}) == {
        "event": "ack",
        "ref": None,
        "data": {"ts": 12.5},
    }
    assert await call(ws, {"event": "ping", "data": None, "extra_top_level": True}) == {
        "event": "ack",
        "ref": None,
        "data": {},
    }


async def test_invalid_json_gets_error_and_connection_stays_open(ws: ClientConnection) -> None:
    """Message: Invalid JSON -> invalid_json error, no crash, connection still serves."""
    reply = await call(ws, "{broken json")
    assert reply["event"] == "error"
    assert reply["data"]["code"] == "invalid_json"
    assert (await call(ws, {"event": "ping", "id": "after"}))["ref"] == "after"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("[1, 2]", "invalid_envelope"),
        ('{"data": {}}', "invalid_envelope"),
        ('{"event": 5}', "invalid_envelope"),
        ('{"event": "echo", "id": 7}', "invalid_envelope"),
        ('{"event": "echo", "id": "' + "x" * 65 + '"}', "invalid_envelope"),
        ('{"event": "echo", "seq": "1"}', "invalid_envelope"),
        ('{"event": "echo", "data": [1]}', "invalid_envelope"),
    ],
)
async def test_malformed_envelopes(ws: ClientConnection, frame: str, code: str) -> None:
    """Message: Invalid JSON (valid JSON, bad envelope) -> invalid_envelope, connection stays open."""
    reply = await call(ws, frame)
    assert reply["data"]["code"] == code
    assert (await call(ws, {"event": "ping"}))["event"] == "ack"


async def test_unknown_event_type(ws: ClientConnection) -> None:
    """Message: Unknown event type -> unknown_event error carrying the ref."""
    reply = await call(ws, {"event": "unknown.type", "id": "u-1"})
    assert (reply["event"], reply["ref"], reply["data"]["code"]) == ("error", "u-1", "unknown_event")


async def test_schema_validation_names_fields(ws: ClientConnection) -> None:
    """Message: Schema validation -> validation_error whose fields name each missing/wrong field."""
    reply = await call(ws, {"event": "auth.refresh", "id": "v-1", "data": {}})
    assert reply["data"]["code"] == "validation_error"
    assert reply["data"]["fields"] == {"token": "required"}
    reply = await call(ws, {"event": "auth.refresh", "data": {"token": 42}})
    assert reply["data"]["fields"] == {"token": "must be a string"}


@pytest.mark.parametrize("frame", ["", "   ", "\n\t"])
async def test_empty_message(ws: ClientConnection, frame: str) -> None:
    """Message: Empty message -> empty_message error, connection stays open."""
    reply = await call(ws, frame)
    assert reply["data"]["code"] == "empty_message"
    assert (await call(ws, {"event": "ping"}))["event"] == "ack"


async def test_binary_frame_is_unsupported(ws: ClientConnection) -> None:
    await ws.send(b"\x00\x01binary")
    reply = await recv_json(ws)
    assert reply["data"]["code"] == "unsupported_frame"
    assert (await call(ws, {"event": "ping"}))["event"] == "ack"


async def test_message_over_limit_closes_1009(ws: ClientConnection) -> None:
    """Message: Message size limit -> a message over 1 MiB is refused with close 1009 message_too_large."""
    await ws.send('{"event":"echo","data":{"x":"' + "a" * (1024 * 1024) + '"}}')
    code, reason, _ = await expect_close(ws)
    assert (code, reason) == (1009, "message_too_large")


async def test_message_at_limit_is_accepted(server: ServerProcess) -> None:
    """Message: Message size limit -> exactly REALTIME_MAX_MESSAGE_BYTES still passes."""
    conn = await connect(server, obtain_tokens(server, "alice")["access"], max_size=None)
    await recv_json(conn)
    prefix, suffix = '{"event":"echo","data":{"x":"', '"}}'
    body = "a" * (1024 * 1024 - len(prefix) - len(suffix))
    reply = await call(conn, prefix + body + suffix, timeout=20)
    assert reply["event"] == "ack"
    assert len(reply["data"]["x"]) == len(body)
    await conn.close()


def test_oversize_frame_is_refused_before_it_is_buffered(server: ServerProcess) -> None:
    """Message: Message size limit -> a frame announcing 100 MB is closed with 1009 on its header alone."""
    sock = raw_upgrade(server.port, obtain_tokens(server, "alice")["access"])
    # FIN + text opcode, masked, 64-bit length: 100 MB announced, only 1 KiB sent.
    sock.sendall(struct.pack("!BBQ", 0x81, 0x80 | 127, 100_000_000) + os.urandom(4) + b"a" * 1024)
    received = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    sock.close()
    close_at = received.rfind(b"\x88")
    assert close_at != -1, received
    length = received[close_at + 1] & 0x7F
    payload = received[close_at + 2 : close_at + 2 + length]
    assert struct.unpack("!H", payload[:2])[0] == 1009
    assert payload[2:] == b"message_too_large"


async def test_sequence_gap_is_detected_and_resend_works(ws: ClientConnection) -> None:
    """Ordering: Sequence numbers -> a skipped seq gets sequence_gap with expected; resending from there works."""
    assert (await call(ws, {"event": "echo", "seq": 1, "data": {"n": 1}}))["seq"] == 1
    assert (await call(ws, {"event": "echo", "seq": 2, "data": {"n": 2}}))["seq"] == 2
    gap = await call(ws, {"event": "echo", "id": "four", "seq": 4, "data": {"n": 4}})
    assert gap["event"] == "error"
    assert (gap["ref"], gap["seq"]) == ("four", 4)
    assert gap["data"]["code"] == "sequence_gap"
    assert gap["data"]["expected"] == 3
    assert await call(ws, {"event": "echo", "seq": 3, "data": {"n": 3}}) == {
        "event": "ack",
        "ref": None,
        "seq": 3,
        "data": {"n": 3},
    }
    assert (await call(ws, {"event": "echo", "seq": 4, "data": {"n": 4}}))["data"] == {"n": 4}


async def test_retransmission_gets_the_original_reply(ws: ClientConnection) -> None:
    """Ordering: Sequence numbers -> a lower seq is not processed again and gets its first reply."""
    first = await call(ws, {"event": "echo", "id": "a", "seq": 10, "data": {"v": "first"}})
    await call(ws, {"event": "echo", "id": "b", "seq": 11, "data": {"v": "second"}})
    again = await call(ws, {"event": "echo", "id": "a", "seq": 10, "data": {"v": "changed"}})
    assert again == first


async def test_replies_come_in_order(ws: ClientConnection) -> None:
    """Ordering: Message sequence -> messages A, B, C get replies A, B, C."""
    for name in ("A", "B", "C"):
        await ws.send(f'{{"event":"echo","id":"{name}","data":{{}}}}')
    assert [(await recv_json(ws))["ref"] for _ in range(3)] == ["A", "B", "C"]
