"""Realistic mixed load with locust: WebSocket users that connect, subscribe, publish and echo.

    .venv/bin/locust -f loadtests/locustfile.py --headless -u 200 -r 50 -t 60s
    .venv/bin/locust -f loadtests/locustfile.py --host http://127.0.0.1:8000   # a running server, web UI

Without ``--host`` the locustfile starts its own server exactly as ``loadtests.bench`` does
(temporary SQLite database, bench user, ``manage.py serve`` pinned to CPU 0, rate limit
off) and stops it when locust quits; locust itself is pinned to CPU 1. With ``--host`` it
uses the user ``LOCUST_USERNAME`` / ``LOCUST_PASSWORD`` (default: the bench user).

Every exchange is reported to locust's statistics through ``events.request.fire``:
``WS connect`` (handshake + welcome), ``WS stream.subscribe``, ``WS echo``,
``WS message.send`` (the persisted publish's ack) and ``WSPUSH message.new``, whose
"response time" is publish-to-delivery (the text carries the publisher's send time; all
users run in this one process, so they share its clock). Error replies and closes count
as failures. Loopback targets only.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import gevent  # type: ignore[import-untyped]
import gevent.lock  # type: ignore[import-untyped]
from gevent.event import AsyncResult  # type: ignore[import-untyped]
from locust import User, between, events, task
from locust.env import Environment
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.common import check_loopback, pin_to_cpu, raise_nofile
from loadtests.server import LOADGEN_CPU, PASSWORD, USERNAME, Database, Server, prepare_database, realtime_server

ROOMS = int(os.environ.get("LOCUST_ROOMS", "20"))
_numbers = itertools.count()
_owned: dict[str, Any] = {}
# locust's EventHook methods are untyped; typed aliases keep mypy strict everywhere else.
fire_request: Callable[..., None] = events.request.fire
on_init: Callable[[Callable[..., None]], Any] = events.init.add_listener
on_quitting: Callable[[Callable[..., None]], Any] = events.quitting.add_listener


@on_init
def _start_server(environment: Environment, **_: Any) -> None:
    pin_to_cpu(LOADGEN_CPU)
    raise_nofile()
    if environment.host:
        check_loopback(environment.host)
        return
    database = prepare_database(None)
    log_dir = Path(database.tmpdir or "/tmp")  # noqa: S108 - the temp dir made by prepare_database
    server = realtime_server(database, str(log_dir), {"REALTIME_SEND_QUEUE": "100000"}).start()
    _owned.update(server=server, database=database)
    environment.host = server.http_url


@on_quitting
def _stop_server(**_: Any) -> None:
    server: Server | None = _owned.pop("server", None)
    database: Database | None = _owned.pop("database", None)
    if server is not None:
        server.stop()
    if database is not None:
        database.cleanup()


_token_cache: dict[str, str] = {}
_token_lock = gevent.lock.Semaphore()


def _token(http_url: str) -> str:
    """One access token for every user (a user may hold any number of sessions): hashing a
    password per simulated user would make the token endpoint the load test."""
    with _token_lock:
        if http_url not in _token_cache:
            _token_cache[http_url] = _fetch_token(http_url)
    return _token_cache[http_url]


def _fetch_token(http_url: str) -> str:
    body = json.dumps(
        {
            "username": os.environ.get("LOCUST_USERNAME", USERNAME),
            "password": os.environ.get("LOCUST_PASSWORD", PASSWORD),
        }
    ).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback URL checked at init
        f"{http_url}/api/auth/token/", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        token: str = json.loads(response.read())["access"]
    return token


class RealtimeUser(User):
    """One browser tab: a session on one room, mostly echoes, sometimes a message."""

    wait_time = between(0.5, 2.0)
    ws: ClientConnection | None = None
    reader: Any = None

    def on_start(self) -> None:
        n = next(_numbers)
        self.room = f"room:locust-{n % ROOMS}"
        self.ids = itertools.count()
        # Every simulated user is the same account, and a publish's idempotency key is
        # (user, id): ids must be unique across users and runs, or publishes are deduplicated.
        self.tag = uuid.uuid4().hex[:12]
        host = str(self.environment.host).rstrip("/")
        ws_url = "ws://" + urlparse(host).netloc + "/ws/"
        t0 = time.perf_counter()
        try:
            token = _token(host)
            t0 = time.perf_counter()
            self.ws = connect(
                ws_url,
                additional_headers={"Authorization": f"Bearer {token}"},
                compression=None,
                open_timeout=30,
                legacy=True,  # closed in on_stop, not by a with block
            )
            welcome = json.loads(self.ws.recv(timeout=30))
            assert welcome["event"] == "session.welcome", welcome
        except Exception as exc:
            self.ws = None
            self._fire("WS", "connect", t0, exc=exc)
            raise
        self._fire("WS", "connect", t0)
        self.pending: dict[str, AsyncResult] = {}
        self.reader = gevent.spawn(self._read_forever, self.ws)
        self.call("stream.subscribe", {"stream": self.room})

    def on_stop(self) -> None:
        if self.ws is not None:
            self.ws.close()
        if self.reader is not None:
            self.reader.kill(block=False)

    def _read_forever(self, ws: ClientConnection) -> None:
        """Read every frame as it arrives: replies wake their caller, pushes are reported at once."""
        try:
            for raw in ws:
                frame: dict[str, Any] = json.loads(raw)
                waiter = self.pending.pop(str(frame.get("ref")), None)
                if waiter is not None:
                    waiter.set((frame, len(raw)))
                else:
                    self._push(frame, len(raw))
        except ConnectionClosed:
            pass
        for waiter in self.pending.values():
            waiter.set_exception(ConnectionError("connection closed"))

    def _fire(self, kind: str, name: str, t0: float, length: int = 0, exc: BaseException | None = None) -> None:
        fire_request(
            request_type=kind,
            name=name,
            response_time=(time.perf_counter() - t0) * 1000,
            response_length=length,
            exception=exc,
            context={},
        )

    def _push(self, frame: dict[str, Any], size: int) -> None:
        """A push: report publish-to-delivery for messages (the text starts with the send time)."""
        if frame.get("event") == "message.new":
            text = str(frame.get("data", {}).get("text", ""))
            sent = text.partition(" ")[0]
            if sent.replace(".", "", 1).isdigit():
                fire_request(
                    request_type="WSPUSH",
                    name="message.new",
                    response_time=(time.time() - float(sent)) * 1000,
                    response_length=size,
                    exception=None,
                    context={},
                )

    def call(self, event: str, data: dict[str, Any]) -> dict[str, Any] | None:
        """Send one message and wait (bounded) for its reply."""
        if self.ws is None:
            return None
        ref = f"{self.tag}-{next(self.ids)}"
        waiter = self.pending[ref] = AsyncResult()
        t0 = time.perf_counter()
        try:
            self.ws.send(json.dumps({"event": event, "id": ref, "data": data}))
            frame, size = waiter.get(timeout=10)
        except (ConnectionClosed, ConnectionError, gevent.Timeout) as exc:
            self.pending.pop(ref, None)
            self._fire("WS", event, t0, exc=exc)
            return None
        error = None if frame.get("event") == "ack" else RuntimeError(str(frame.get("data")))
        self._fire("WS", event, t0, size, error)
        result: dict[str, Any] = frame
        return result

    @task(6)
    def echo(self) -> None:
        self.call("echo", {"payload": "x" * 64})

    @task(2)
    def publish(self) -> None:
        self.call("message.send", {"stream": self.room, "text": f"{time.time():.6f} hello from locust"})

    @task(1)
    def history(self) -> None:
        self.call("stream.history", {"stream": self.room, "since": 0, "limit": 20})
