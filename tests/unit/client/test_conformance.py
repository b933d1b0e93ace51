"""The client conformance fixtures (tests/conformance/*.json) played against ``realtime_client``.

The same fixtures are played against the browser client by ``tests/conformance/run.mjs``
(test_conformance_js.py), so the two clients agree by construction. The step language is
described in tests/conformance/README.md.

Time is virtual: the event loop's clock only moves when a fixture says ``advance`` (or when
``expect_reconnect`` waits out a backoff), in steps of :data:`STEP` seconds, so ack timeouts,
backoffs and flow-control fallbacks are checked exactly and the whole suite runs in about a
second. The connection is a scripted fake socket (tests/unit/client/fakes.py) handed to the
client in place of ``open_connection``, as in test_client_fake.py.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from realtime_client import RealtimeClient, RealtimeError
from realtime_client.connection import Closed, ConnectFailed
from realtime_client.subscription import Subscription
from tests.unit.client.fakes import WELCOME, FakeSocket

FIXTURES = Path(__file__).resolve().parents[2] / "conformance"
STEP = 0.05  # seconds of virtual time per tick: both runners move the clock the same way
SETTLE_ROUNDS = 50  # loop iterations that let every ready callback and task run
RECONNECT_LIMIT = 15.0  # seconds an expected reconnect may take by default
NO_RECONNECT_WAIT = 30.0  # seconds to watch for an unexpected reconnect attempt


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is a number the test moves: timers fire when it says."""

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__()

    def time(self) -> float:
        return self.now


class ScriptedServer:
    """Hands the client a new fake socket per connection attempt, or refuses it as scripted."""

    def __init__(self) -> None:
        self.sockets: list[FakeSocket] = []
        self.tokens: list[str | None] = []
        self.refusals: list[tuple[int | None, str]] = []
        self.attempts = 0
        self.attempts_at_last_end = 0

    async def open(self, url: str, token: str | None, options: Any) -> tuple[FakeSocket, dict[str, Any]]:
        self.attempts += 1
        if self.refusals:
            code, reason = self.refusals.pop(0)
            self.attempts_at_last_end = self.attempts
            raise ConnectFailed(Closed(code, reason or None))
        socket = FakeSocket()
        self.sockets.append(socket)
        self.tokens.append(token)
        return socket, dict(WELCOME)


@dataclass
class Outcome:
    """What the application saw of one call or one subscription."""

    done: bool = False
    result: Any = None
    error: str | None = None
    offsets: list[int] = field(default_factory=list)


class ConformanceFailure(AssertionError):
    pass


def substitute(value: Any, names: dict[str, str]) -> Any:
    """``"$name"`` strings become the id bound to ``name`` by an earlier ``expect_sent``."""
    if isinstance(value, str) and value.startswith("$"):
        if value[1:] not in names:
            raise ConformanceFailure(f"{value} is not bound by an earlier step")
        return names[value[1:]]
    if isinstance(value, dict):
        return {k: substitute(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, names) for v in value]
    return value


def matches(pattern: Any, actual: Any) -> bool:
    """Objects match when every key of the pattern matches (extra keys are fine); the rest exactly."""
    if isinstance(pattern, dict):
        return isinstance(actual, dict) and all(k in actual and matches(v, actual[k]) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(actual, list) and len(pattern) == len(actual) and all(map(matches, pattern, actual))
    return type(pattern) is type(actual) and pattern == actual


class Player:
    def __init__(self, loop: VirtualClockLoop, server: ScriptedServer, options: dict[str, Any]) -> None:
        self.loop = loop
        self.server = server
        self.options = options
        self.names: dict[str, str] = {}
        self.calls: dict[str, Outcome] = {}
        self.subs: dict[str, Outcome] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.read = 0  # frames of the current connection already checked
        self.current = 0  # index of the current connection in server.sockets
        self.tasks: list[asyncio.Task[Any]] = []
        self.client = RealtimeClient(
            "ws://fake/ws/",
            token=options.get("token", "t0"),
            token_provider=self._provider(options["token_provider"]) if "token_provider" in options else None,
            ack_timeout=float(options.get("ack_timeout", 5.0)),
            reconnect_on_idle=bool(options.get("reconnect_on_idle", False)),
            max_in_flight=int(options.get("max_in_flight", 64)),
            id_prefix=str(options.get("id_prefix", "py")),
        )

    @staticmethod
    def _provider(tokens: list[str]) -> Any:
        fresh = list(tokens)

        async def provide() -> str:
            return fresh.pop(0)

        return provide

    async def settle(self) -> None:
        for _ in range(SETTLE_ROUNDS):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        for _ in range(round(seconds / STEP)):
            self.loop.now += STEP
            await self.settle()

    @property
    def socket(self) -> FakeSocket:
        return self.server.sockets[self.current]

    def unread(self) -> list[dict[str, Any]]:
        return self.socket.sent[self.read :]

    async def play(self, steps: list[dict[str, Any]]) -> None:
        self.tasks.append(asyncio.ensure_future(self.client.connect()))
        await self.settle()
        if self.client.state != "open":
            raise ConformanceFailure(f"the client did not open: {self.client.state}")
        for number, step in enumerate(steps, 1):
            try:
                await self.step(step)
            except ConformanceFailure as exc:
                raise ConformanceFailure(f"step {number} {json.dumps(step)}: {exc}") from None

    async def step(self, step: dict[str, Any]) -> None:
        kind = next(k for k in step if k not in ("as", "within"))
        arg = step[kind]
        if kind == "feed":
            self.socket.feed(substitute(arg, self.names))
        elif kind == "close":
            code, reason = arg
            self.socket.server_close(1006 if code is None else code, reason)
            self.server.attempts_at_last_end = self.server.attempts
        elif kind == "refuse_next":
            self.server.refusals.append((arg[0], arg[1]))
        elif kind == "call":
            self._start_call(step["as"], arg)
        elif kind == "subscribe":
            self._start_subscription(arg)
        elif kind == "unsubscribe":
            await self.subscriptions[arg].unsubscribe()
        elif kind == "close_client":
            await self.client.close()
            self.server.attempts_at_last_end = self.server.attempts
        elif kind == "advance":
            await self.advance(float(arg))
        elif kind == "expect_reconnect":
            await self.settle()
            await self.expect_reconnect(bool(arg), float(step.get("within", RECONNECT_LIMIT)))
        else:
            await self.settle()
            self.check(kind, arg, step)
            return
        await self.settle()

    def _start_call(self, name: str, arg: dict[str, Any]) -> None:
        outcome = self.calls[name] = Outcome()

        async def run() -> None:
            try:
                outcome.result = await self.client.call(arg["event"], arg.get("data"), id=arg.get("id"))
            except RealtimeError as exc:
                outcome.error = exc.code
            outcome.done = True

        self.tasks.append(asyncio.ensure_future(run()))

    def _start_subscription(self, arg: dict[str, Any]) -> None:
        outcome = self.subs[arg["stream"]] = Outcome()

        async def run() -> None:
            try:
                sub = self.subscriptions[arg["stream"]] = await self.client.subscribe(
                    arg["stream"], since=arg.get("since"), epoch=arg.get("epoch")
                )
                async for frame in sub:
                    outcome.offsets.append(frame["offset"])
            except RealtimeError as exc:
                outcome.error = exc.code
            outcome.done = True

        self.tasks.append(asyncio.ensure_future(run()))

    def check(self, kind: str, arg: Any, step: dict[str, Any]) -> None:
        if kind == "expect_sent" or kind == "expect_resume":
            if kind == "expect_resume":
                pattern: Any = {"event": "stream.subscribe", "data": arg}
            else:
                pattern = substitute(arg, self.names)
            unread = self.unread()
            if not unread:
                raise ConformanceFailure("nothing was sent")
            frame = unread[0]
            exact = kind == "expect_resume" and frame.get("data") == arg
            if not matches(pattern, frame) or (kind == "expect_resume" and not exact):
                raise ConformanceFailure(f"sent {json.dumps(frame)}")
            self.read += 1
            if "as" in step:
                self.names[step["as"]] = frame["id"]
        elif kind == "expect_nothing_sent":
            if self.unread():
                raise ConformanceFailure(f"sent {json.dumps(self.unread())}")
        elif kind == "expect_state":
            if self.client.state != arg:
                raise ConformanceFailure(f"state is {self.client.state}")
        elif kind == "expect_token":
            if self.server.tokens[self.current] != arg:
                raise ConformanceFailure(f"connected with token {self.server.tokens[self.current]!r}")
        elif kind in ("expect_call_result", "expect_error", "expect_pending"):
            self._check_call(kind, arg)
        elif kind == "expect_events":
            offsets = self.subs[arg["stream"]].offsets
            if offsets != arg["offsets"]:
                raise ConformanceFailure(f"events delivered: {offsets}")
        elif kind == "expect_presence":
            sub = self.subscriptions[arg["stream"]]
            if sorted(sub.presence) != arg["users"]:
                raise ConformanceFailure(f"presence: {sorted(sub.presence)}")
            if "degraded" in arg and sub.presence_degraded != arg["degraded"]:
                raise ConformanceFailure(f"presence degraded: {sub.presence_degraded}")
        elif kind == "expect_sub_end":
            outcome = self.subs[arg["stream"]]
            if not outcome.done or outcome.error != arg["error"]:
                raise ConformanceFailure(f"subscription done={outcome.done} error={outcome.error}")
        else:
            raise ConformanceFailure(f"unknown step {kind}")

    def _check_call(self, kind: str, arg: Any) -> None:
        outcome = self.calls[arg if kind == "expect_pending" else arg["call"]]
        if kind == "expect_pending":
            if outcome.done:
                raise ConformanceFailure(f"the call finished: result={outcome.result} error={outcome.error}")
        elif kind == "expect_error":
            if not outcome.done or outcome.error != arg["code"]:
                raise ConformanceFailure(f"call done={outcome.done} result={outcome.result} error={outcome.error}")
        elif not outcome.done or outcome.error is not None or not matches(arg["data"], outcome.result):
            raise ConformanceFailure(f"call done={outcome.done} result={outcome.result} error={outcome.error}")

    async def expect_reconnect(self, expected: bool, within: float) -> None:
        if expected:
            waited = 0.0
            while len(self.server.sockets) <= self.current + 1 and waited < within:
                await self.advance(STEP)
                waited += STEP
            if len(self.server.sockets) <= self.current + 1:
                raise ConformanceFailure(f"no new connection within {within} s (state {self.client.state})")
            self.current = len(self.server.sockets) - 1
            self.read = 0
        else:
            await self.advance(NO_RECONNECT_WAIT)
            if self.server.attempts != self.server.attempts_at_last_end:
                raise ConformanceFailure(f"the client tried to reconnect (state {self.client.state})")

    async def finish(self) -> None:
        await self.client.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def scenarios() -> list[Any]:
    cases = []
    for path in sorted(FIXTURES.glob("*.json")):
        for scenario in json.loads(path.read_text())["scenarios"]:
            cases.append(pytest.param(scenario, id=f"{path.stem}: {scenario['name']}"))
    return cases


async def play(scenario: dict[str, Any], server: ScriptedServer) -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualClockLoop)
    player = Player(loop, server, scenario.get("options", {}))
    try:
        await player.play(scenario["steps"])
    finally:
        await player.finish()


@pytest.mark.parametrize("scenario", scenarios())
def test_conformance(scenario: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each fixture scenario, played against the Python client (issue 20)."""
    server = ScriptedServer()
    monkeypatch.setattr("realtime_client.client.open_connection", server.open)
    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        runner.run(play(scenario, server))


BROKEN = {
    "name": "expects a wrong order on purpose",
    "steps": [
        {"subscribe": {"stream": "room:a"}},
        {"expect_sent": {"event": "stream.subscribe"}, "as": "s"},
        {
            "feed": {
                "event": "ack",
                "ref": "$s",
                "data": {"stream": "room:a", "offset": 0, "epoch": "e", "recovered": True},
            }
        },
        {"feed": {"event": "message.new", "stream": "room:a", "offset": 2, "data": {}}},
        {"feed": {"event": "message.new", "stream": "room:a", "offset": 1, "data": {}}},
        {"expect_events": {"stream": "room:a", "offsets": [2, 1]}},
    ],
}


def test_the_runner_fails_a_scenario_the_client_does_not_satisfy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python runner is not vacuous: a wrong expectation fails, naming the step and what happened."""
    server = ScriptedServer()
    monkeypatch.setattr("realtime_client.client.open_connection", server.open)
    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner, pytest.raises(ConformanceFailure) as info:
        runner.run(play(BROKEN, server))
    assert "step 6" in str(info.value)
    assert "events delivered: [1, 2]" in str(info.value)
