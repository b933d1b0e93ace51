"""The traffic of ``loadtests/day.py``: connection bookkeeping, churn visits and the HTTP calls.

Every connection is a picows ``FastClient`` whose frames go to :meth:`Conn.on_frame`, which
matches replies to the requests still pending (by ``ref``) and checks every delivered
``message.new`` offset against the last one that subscriber saw: a subscription's offsets
must be ``last + 1``, across reconnects too (a reconnect resumes from the last offset seen).
Nothing here waits without a bound.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from loadtests.fastclient import FastClient, open_fast_client

Handler = Callable[[dict[str, Any]], None]
REPLY_TIMEOUT = 10.0  # a session's own requests
UNANSWERED_AFTER = 30.0  # a fire-and-forget request (stable connections) still pending this long


@dataclass
class Stats:
    """What the day issued and what went wrong; one per run."""

    issued: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    close_codes: collections.Counter[str] = field(default_factory=collections.Counter)
    examples: list[str] = field(default_factory=list)
    heads: dict[str, int] = field(default_factory=dict)  # the highest acked offset of each room

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.examples) < 10:
            self.examples.append(f"{kind}: {detail}"[:300])


@dataclass(eq=False)  # kept in sets: identity, not field equality
class Conn:
    """One connection's pending requests and the last offset it saw of each stream."""

    client: FastClient
    stats: Stats
    pending: dict[str, tuple[float, Handler | None, asyncio.Future[dict[str, Any]] | None]] = field(
        default_factory=dict
    )
    last: dict[str, int] = field(default_factory=dict)
    closing: bool = False

    def attach(self) -> None:
        self.client.on_frame = self.on_frame
        self.client.closed.add_done_callback(self._closed)

    def _closed(self, _: asyncio.Future[None]) -> None:
        if not self.closing:
            self.stats.close_codes[str(self.client.close_code)] += 1
            self.stats.error("unexpected_close", f"code {self.client.close_code}")

    def request(
        self, frame_id: str, event: str, data: dict[str, Any], handler: Handler | None = None, wait: bool = False
    ) -> asyncio.Future[dict[str, Any]] | None:
        """Send a frame; its reply goes to ``handler`` (inline) and, with ``wait``, to the returned future."""
        future = asyncio.get_running_loop().create_future() if wait else None
        self.pending[frame_id] = (time.monotonic(), handler, future)
        self.client.send(orjson.dumps({"event": event, "id": frame_id, "data": data}))
        self.stats.issued[event] += 1
        return future

    def on_frame(self, client: FastClient, data: bytes) -> None:
        frame = orjson.loads(data)
        event, ref = frame.get("event"), frame.get("ref")
        if ref is not None:
            entry = self.pending.pop(ref, None)
            if entry is None:
                self.stats.errors["late_or_stray_replies"] += 1
                return
            if event == "error":
                self.stats.error("error_replies", orjson.dumps(frame).decode())
            _, handler, future = entry
            if handler is not None:
                handler(frame)  # inline: replayed events may follow in this very chunk
            if future is not None and not future.done():
                future.set_result(frame)
            return
        stream, offset = frame.get("stream"), frame.get("offset")
        if event == "message.new" and isinstance(offset, int):
            last = self.last.get(stream)
            if last is None:
                self.stats.error("pushes_before_subscribe_ack", f"{stream} {offset}")
            elif offset != last + 1:
                self.stats.error("replay_gaps", f"{stream}: {offset} after {last}")
            self.last[stream] = offset
            self.stats.issued["deliveries"] += 1
        elif event != "session.welcome":
            self.stats.error("unexpected_pushes", str(event))

    def subscribe(
        self, frame_id: str, stream: str, since: int | None = None, epoch: str | None = None
    ) -> asyncio.Future[dict[str, Any]] | None:
        """``stream.subscribe`` (with ``since`` and ``epoch``: a resume, whose replay must be recovered)."""
        data: dict[str, Any] = {"stream": stream}
        if since is not None:
            data |= {"since": since, "epoch": epoch}
            self.stats.issued["resumes"] += 1

        def acked(frame: dict[str, Any]) -> None:
            reply = frame.get("data") or {}
            if frame.get("event") != "ack":
                return
            if since is not None and not reply.get("recovered"):
                self.stats.error("resume_not_recovered", f"{stream} since {since}: {reply}")
            self.last[stream] = since if since is not None else int(reply["offset"])
            if since is not None:
                self.stats.issued["replayed"] += max(0, int(reply["offset"]) - since)

        return self.request(frame_id, "stream.subscribe", data, acked, wait=True)

    def publish(self, frame_id: str, stream: str, text: str, wait: bool = False) -> asyncio.Future[Any] | None:
        def acked(frame: dict[str, Any]) -> None:
            if frame.get("event") == "ack":
                offset = int(frame["data"]["offset"])
                self.stats.heads[stream] = max(self.stats.heads.get(stream, 0), offset)

        return self.request(frame_id, "message.send", {"stream": stream, "text": text}, acked, wait=wait)

    def sweep(self, now: float, older_than: float = UNANSWERED_AFTER) -> None:
        """Count requests pending longer than ``older_than`` as unanswered and forget them."""
        for frame_id in [k for k, (sent, _, _) in self.pending.items() if now - sent > older_than]:
            del self.pending[frame_id]
            self.stats.error("unanswered", frame_id)

    async def close(self, abrupt: bool) -> None:
        """Close (1000) or drop the socket; what is still pending then is unanswered."""
        self.closing = True
        if abrupt:
            self.client.abort()
        else:
            await self.client.close(timeout=5.0)
        self.sweep(time.monotonic(), older_than=-1.0)


@dataclass
class Visit:
    """One churning client identity: connects fresh, then reconnects resuming from its last offset."""

    stream: str
    sessions: int
    lifetime: float  # seconds connected per session
    gap: float  # seconds away between sessions
    epoch: str | None = None
    since: int | None = None


@dataclass
class Traffic:
    """What the visits share: the server's URL, the current access token, ids and the live connections."""

    url: str
    token: str
    stats: Stats
    tag: str
    live: set[Conn] = field(default_factory=set)
    ids: itertools.count[int] = field(default_factory=itertools.count)

    def next_id(self, kind: str) -> str:
        # Unique per run: message ids are idempotency keys that outlive a run in the database.
        return f"{self.tag}{kind}{next(self.ids)}"

    async def session(self, visit: Visit, number: int) -> None:
        """Connect, (re)subscribe, two echoes and a publish, stay ``lifetime``, then close or drop."""
        async with asyncio.timeout(REPLY_TIMEOUT * 3):
            client = await open_fast_client(self.url, self.token, welcome=True, timeout=REPLY_TIMEOUT)
        conn = Conn(client, self.stats)
        conn.attach()
        self.live.add(conn)
        self.stats.issued["connects"] += 1
        try:
            resume = visit.since is not None
            ack = await _reply(conn.subscribe(self.next_id("s"), visit.stream, visit.since, visit.epoch))
            self.stats.issued["reconnects" if resume else "fresh_connects"] += 1
            visit.epoch = (ack.get("data") or {}).get("epoch", visit.epoch)
            replies = [
                conn.request(self.next_id("e"), "echo", {"n": number}, wait=True),
                conn.request(self.next_id("e"), "echo", {"n": number, "x": "y"}, wait=True),
                conn.publish(self.next_id("m"), visit.stream, f"visit {number}", wait=True),
            ]
            for reply in replies:
                await _reply(reply)
            await asyncio.sleep(visit.lifetime)
        finally:
            # Every other session ends with a dropped socket (a phone losing its network), not a close.
            await conn.close(abrupt=number % 2 == 1)
            self.live.discard(conn)
            visit.since = conn.last.get(visit.stream, visit.since)

    async def visit(self, visit: Visit) -> None:
        for number in range(visit.sessions):
            try:
                await self.session(visit, number)
            except (OSError, TimeoutError, ConnectionError) as exc:
                self.stats.error("failed_sessions", f"{type(exc).__name__}: {exc}")
            if number < visit.sessions - 1:
                await asyncio.sleep(visit.gap)


async def _reply(future: asyncio.Future[dict[str, Any]] | None) -> dict[str, Any]:
    assert future is not None
    async with asyncio.timeout(REPLY_TIMEOUT):
        return await future


def http_json(url: str, body: dict[str, Any] | None = None, bearer: str | None = None) -> dict[str, Any]:
    """One loopback HTTP call (POST with ``body``, else GET): its JSON answer."""
    headers = {"Content-Type": "application/json"}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if body else "GET")  # noqa: S310
    with urllib.request.urlopen(request, timeout=REPLY_TIMEOUT) as response:  # noqa: S310 - loopback
        answer: dict[str, Any] = json.loads(response.read())
    return answer
