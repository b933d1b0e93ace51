"""The chaos soak's clients: the project's Python client, and raw WebSocket clients.

Both kinds subscribe to a few streams, publish with unique ids and record what they
see for the checker. ``LibraryClient`` uses ``realtime_client`` as an application
would (it reconnects, resumes, retries un-acked calls and fills gaps by itself);
``RawClient`` speaks the protocol over the ``websockets`` library with the least
logic a client needs (resume from the last offset, resend un-acked publishes with
their id), so it records exactly what the server sent: a duplicate or a gap the
library would hide is a violation here.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from loadtests.chaos.checker import Ack, SubscriptionRecord
from realtime_client import RealtimeClient, RealtimeError

# Close codes after which a client must not come back (docs/protocol.md): a chaos run
# must never produce them, so they are recorded as violations.
FATAL_CLOSES = {4401, 4403}


@dataclass
class Tally:
    """What all clients recorded, shared with the checker."""

    acks: list[Ack] = field(default_factory=list)
    subscriptions: list[SubscriptionRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    reconnects: int = 0
    publish_errors: dict[str, int] = field(default_factory=dict)

    def publish_error(self, client: str, code: str) -> None:
        self.publish_errors[code] = self.publish_errors.get(code, 0) + 1
        if code != "rate_limited":  # the only error a well-formed publish may get (flow control)
            self.problems.append(f"{client}: a publish was answered {code}")


@dataclass
class ClientSpec:
    name: str
    user_id: int
    token: str
    url: str
    streams: list[str]
    publish_interval: float


class LibraryClient:
    def __init__(self, spec: ClientSpec, tally: Tally, rng: random.Random) -> None:
        self.spec = spec
        self.tally = tally
        self.rng = rng
        self.records: list[SubscriptionRecord] = []
        self.subs: list[Any] = []
        self.client = RealtimeClient(
            spec.url,
            token=spec.token,
            ack_timeout=2.0,
            backoff_initial=0.2,
            backoff_max=2.0,
            ping_interval=2.0,
            ping_timeout=3.0,
            id_prefix=spec.name,
        )
        self.client.on_state_change(self._on_state)
        self._readers: list[asyncio.Task[None]] = []

    def _on_state(self, old: str, new: str) -> None:
        if new == "reconnecting":
            self.tally.reconnects += 1

    async def start(self) -> None:
        await self.client.connect()
        for stream in self.spec.streams:
            sub = await self.client.subscribe(stream)
            self.subs.append(sub)
            record = SubscriptionRecord(self.spec.name, stream, int(sub.last_offset or 0))
            self.records.append(record)
            self.tally.subscriptions.append(record)
            self._readers.append(asyncio.create_task(self._read(sub, record)))

    async def _read(self, sub: Any, record: SubscriptionRecord) -> None:
        try:
            async for frame in sub:
                record.received.append(int(frame["offset"]))
        except RealtimeError as exc:
            record.ended = f"{exc.code}: {exc.data}"

    async def publish_until(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            call_id = f"{self.spec.name}.p{n}"
            stream = self.rng.choice(self.spec.streams)
            try:
                ack = await self.client.call("message.send", {"stream": stream, "text": call_id}, id=call_id)
            except RealtimeError as exc:
                self.tally.publish_error(self.spec.name, exc.code)
                if self.client.closed:
                    self.tally.problems.append(f"{self.spec.name}: client stopped: {exc.code} {exc.data}")
                    return
            else:
                self.tally.acks.append(Ack(self.spec.user_id, call_id, ack["stream"], int(ack["offset"])))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.uniform(0.5, 1.5) * self.spec.publish_interval)

    def last_offsets(self) -> dict[str, int]:
        return {r.stream: (r.received[-1] if r.received else r.start) for r in self.records}

    async def close(self) -> None:
        await self.client.close()
        for task in self._readers:
            task.cancel()
        for task in self._readers:
            with contextlib.suppress(asyncio.CancelledError):
                await task


class RawClient:
    """One raw connection at a time; on loss, reconnect and resume from the last offsets."""

    def __init__(self, spec: ClientSpec, tally: Tally, rng: random.Random) -> None:
        self.spec = spec
        self.tally = tally
        self.rng = rng
        self.records = {stream: SubscriptionRecord(spec.name, stream, -1) for stream in spec.streams}
        self.epochs: dict[str, str] = {}
        self.pending: dict[str, str] = {}  # un-acked publish id -> stream
        self.reading = asyncio.Event()  # cleared while the client "stops reading"
        self.reading.set()
        self.subscribed = asyncio.Event()  # every stream acked at least once
        self._ws: Any = None
        self._counter = 0
        self._stopped = False

    def last_offsets(self) -> dict[str, int]:
        return {s: (r.received[-1] if r.received else r.start) for s, r in self.records.items()}

    async def run(self) -> None:
        while not self._stopped:
            try:
                await self._session()
            except (TimeoutError, ConnectionClosed, OSError, InvalidHandshake) as exc:
                code = getattr(getattr(exc, "rcvd", None), "code", None)
                if code in FATAL_CLOSES:
                    self.tally.problems.append(f"{self.spec.name}: closed with {code} {exc}")
                    return
                if isinstance(exc, InvalidStatus) and exc.response.status_code in (401, 403):
                    self.tally.problems.append(f"{self.spec.name}: handshake refused {exc}")
                    return
            if self._stopped:
                return
            self.tally.reconnects += 1
            await asyncio.sleep(self.rng.uniform(0.1, 1.0))

    async def _session(self) -> None:
        url = f"{self.spec.url}?token={self.spec.token}"
        async with ws_connect(url, open_timeout=5, ping_interval=2, ping_timeout=3, max_size=2**24) as ws:
            self._ws = ws
            welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            assert welcome["event"] == "session.welcome", welcome
            for stream, record in self.records.items():
                data: dict[str, Any] = {"stream": stream}
                if record.start >= 0:
                    data["since"] = record.received[-1] if record.received else record.start
                    data["epoch"] = self.epochs[stream]
                await ws.send(orjson.dumps({"event": "stream.subscribe", "id": f"sub:{stream}", "data": data}).decode())
            for call_id, stream in list(self.pending.items()):
                await self._send_publish(ws, call_id, stream)
            while True:
                await self.reading.wait()
                self._on_frame(orjson.loads(await ws.recv()))

    def _on_frame(self, frame: dict[str, Any]) -> None:
        event, ref = frame.get("event"), frame.get("ref")
        if event == "ack" and isinstance(ref, str) and ref.startswith("sub:"):
            stream = ref[4:]
            record, data = self.records[stream], frame["data"]
            if record.start < 0:
                record.start = int(data["offset"])
                self.epochs[stream] = data["epoch"]
                if all(r.start >= 0 for r in self.records.values()):
                    self.subscribed.set()
            elif not data.get("recovered", False):
                record.ended = f"resume answered recovered:false ({data})"
        elif event == "ack" and ref in self.pending:
            stream = self.pending.pop(ref)
            self.tally.acks.append(Ack(self.spec.user_id, ref, frame["data"]["stream"], int(frame["data"]["offset"])))
            assert frame["data"]["stream"] == stream
        elif event == "error" and ref in self.pending:
            self.tally.publish_error(self.spec.name, str(frame["data"].get("code")))  # resent on reconnect
        elif event == "error":
            self.tally.problems.append(f"{self.spec.name}: unexpected error {frame}")
        elif "stream" in frame and "offset" in frame and frame["stream"] in self.records:
            self.records[frame["stream"]].received.append(int(frame["offset"]))

    async def _send_publish(self, ws: Any, call_id: str, stream: str) -> None:
        frame = {"event": "message.send", "id": call_id, "data": {"stream": stream, "text": call_id}}
        await ws.send(orjson.dumps(frame).decode())

    async def publish_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            ws = self._ws
            if ws is not None and len(self.pending) < 4:
                self._counter += 1
                call_id = f"{self.spec.name}-{self._counter}"
                stream = self.rng.choice(self.spec.streams)
                self.pending[call_id] = stream
                with contextlib.suppress(ConnectionClosed, OSError):
                    await self._send_publish(ws, call_id, stream)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.uniform(0.5, 1.5) * self.spec.publish_interval)

    async def resend_pending(self) -> None:
        """At the end: publishes whose ack was lost with a connection are sent again (same id)."""
        ws = self._ws
        if ws is not None:
            for call_id, stream in list(self.pending.items()):
                with contextlib.suppress(ConnectionClosed, OSError):
                    await self._send_publish(ws, call_id, stream)

    async def close(self) -> None:
        self._stopped = True
        self.reading.set()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
