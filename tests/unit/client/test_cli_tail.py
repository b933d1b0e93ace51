"""``realtime tail``'s ``following STREAM from offset N`` line (docs/cli.md, docs/tutorial.md).

The line is printed once the subscribe is acked; N is where printing starts. The replay
follows the ack, and frames that arrive in the same read are queued for printing before the
line is written: they must not move N past events that are still to be printed. The
connection is the scripted fake socket of tests/unit/client/fakes.py.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest

from realtime_client.cli import Session, parser, tail_streams
from realtime_client.cli_output import Printer
from tests.unit.client.fakes import FakeServer


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    server = FakeServer()
    monkeypatch.setattr("realtime_client.client.open_connection", server.open)
    return server


async def printed_until(out: io.StringIO, pushes: int) -> list[dict[str, Any]]:
    async with asyncio.timeout(5):
        while True:
            lines = [json.loads(line) for line in out.getvalue().splitlines()]
            if sum(line["type"] == "push" for line in lines) >= pushes:
                return lines
            await asyncio.sleep(0.01)


async def test_tail_since_says_the_requested_offset_when_the_replay_comes_with_the_ack(fake: FakeServer) -> None:
    """Issue 18 (the tutorial's resume step): ``tail --since 1`` says "from offset 1", then prints 2 and 3,
    even when the replayed frames are read together with the ack (it said "from offset 2" or 3)."""
    out = io.StringIO()
    args = parser().parse_args(["--url", "ws://fake/ws/", "--json", "tail", "room:tutorial", "--since", "1"])
    session = Session(args, Printer(as_json=True, out=out, err=out), "t", None)
    task = asyncio.ensure_future(tail_streams(session, args))
    try:
        ws = await fake.connection(1)
        subscribe = await ws.next_sent()
        assert subscribe["data"] == {"stream": "room:tutorial", "since": 1}
        ws.ack(subscribe, {"stream": "room:tutorial", "offset": 3, "epoch": "e1", "recovered": True})
        for offset in (2, 3):
            ws.feed({"event": "note.posted", "stream": "room:tutorial", "offset": offset, "data": {"n": offset}})
        lines = await printed_until(out, pushes=2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await session.client.close()
    subscribed = [line for line in lines if line["type"] == "subscribed"]
    assert [(line["offset"], line["epoch"]) for line in subscribed] == [(1, "e1")]
    assert [line["offset"] for line in lines if line["type"] == "push"] == [2, 3]
    assert lines.index(subscribed[0]) < min(i for i, line in enumerate(lines) if line["type"] == "push")


async def test_live_tail_says_the_head_of_the_ack_when_an_event_comes_with_it(fake: FakeServer) -> None:
    """Issue 18: a live ``tail`` (no ``--since``) says "from offset N" with the head the ack
    reported, even when the next event is read together with the ack (it said N + 1)."""
    out = io.StringIO()
    args = parser().parse_args(["--url", "ws://fake/ws/", "--json", "tail", "room:tutorial"])
    session = Session(args, Printer(as_json=True, out=out, err=out), "t", None)
    task = asyncio.ensure_future(tail_streams(session, args))
    try:
        ws = await fake.connection(1)
        subscribe = await ws.next_sent()
        assert subscribe["data"] == {"stream": "room:tutorial"}
        ws.ack(subscribe, {"stream": "room:tutorial", "offset": 5, "epoch": "e1", "recovered": True})
        ws.feed({"event": "note.posted", "stream": "room:tutorial", "offset": 6, "data": {"n": 6}})
        lines = await printed_until(out, pushes=1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await session.client.close()
    subscribed = [line for line in lines if line["type"] == "subscribed"]
    assert [line["offset"] for line in subscribed] == [5]
    assert [line["offset"] for line in lines if line["type"] == "push"] == [6]
