"""Prometheus metrics of the realtime service, and the protected ``/metrics`` endpoint.

With ``PROMETHEUS_MULTIPROC_DIR`` set (a directory shared by the ``serve`` processes of
one host, emptied before they start), every process writes its samples there and
``/metrics`` on any of them reports the sum for the host; without it each process
reports its own. Label values come from bounded sets only (event names of the
contract, error and close codes), never from client input.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable

from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from realtime.client_events import protocol_table
from realtime.conf import realtime_settings

OPEN_CONNECTIONS = Gauge("realtime_open_connections", "WebSocket sessions open now", multiprocess_mode="livesum")
CONNECTS = Counter("realtime_connects", "Authenticated WebSocket sessions opened")
REFUSED = Counter("realtime_refused", "Handshakes refused after the upgrade, by close reason", ["reason"])
CLOSES = Counter("realtime_closes", "Sessions closed, by close code", ["code"])
MESSAGES_IN = Counter("realtime_messages_in", "Client messages received, by event", ["event"])
MESSAGES_OUT = Counter("realtime_messages_out", "Frames sent to clients")
ERRORS = Counter("realtime_errors", "Error replies sent, by error code", ["code"])
QUEUE_HIGH_WATER = Histogram(
    "realtime_send_queue_high_water",
    "Deepest send queue of each session, in frames, observed when it closes",
    buckets=(0, 1, 5, 10, 50, 100, 500, 1000, 5000),
)
FLOW_PAUSES = Counter("realtime_flow_pauses", "flow.pause signals sent")
RATE_LIMITED = Counter("realtime_rate_limited", "Messages refused with rate_limited")
SLOW_CONSUMERS = Counter("realtime_slow_consumer_closes", "Sessions closed because their send queue overflowed")
# "live": a process that exited (a replaced worker) must not hold the host's minimum at 0.
BROKER_UP = Gauge(
    "realtime_broker_up", "1 while the channel layer answers, 0 while degraded", multiprocess_mode="livemin"
)
DELIVERY_LATENCY = Histogram(
    "realtime_publish_to_delivery_seconds",
    "From commit of an event to its hand-off to this process's subscribers",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


class Tally:
    """A hot-path count kept as a plain int, folded into its Prometheus counter by ``fold``.

    A prometheus_client counter takes a lock per increment (and, with several processes,
    writes a shared file); fan-out counts every frame it sends, 100,000 times a second.
    The hub folds every second, and ``/metrics`` and the heartbeat fold before reading.
    """

    __slots__ = ("counter", "pending")

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.pending = 0

    def fold(self) -> None:
        count, self.pending = self.pending, 0
        if count:
            self.counter.inc(count)


class LabelTally:
    """``Tally`` for a labelled counter: plain ints per label value, folded together.

    Label values must come from a bounded set (``event_label``), as for the counter itself;
    the first fold with counts starts a series at 0 for each of ``labels()``.
    """

    __slots__ = ("counter", "labels", "pending", "started")

    def __init__(self, counter: Counter, labels: Callable[[], Iterable[str]]) -> None:
        self.counter = counter
        self.labels = labels
        self.pending: dict[str, int] = {}
        self.started = False

    def fold(self) -> None:
        pending, self.pending = self.pending, {}
        if pending and not self.started:
            self.started = True
            for label in self.labels():
                self.counter.labels(label)
        # /metrics folds on a thread while the loop counts: list() copies in one step under
        # the GIL, so a count landing in the old dict meanwhile is lost, not an error.
        for label, count in list(pending.items()):
            self.counter.labels(label).inc(count)


FRAMES_OUT = Tally(MESSAGES_OUT)
# Every client message, by event: under ``serve --workers N`` an increment per message
# (a lock and a write to the shared metrics file) cost a worker ~8 % of its CPU.
MESSAGES_IN_BY_EVENT = LabelTally(MESSAGES_IN, lambda: (*protocol_table(), "other"))


def fold_tallies() -> None:
    FRAMES_OUT.fold()
    MESSAGES_IN_BY_EVENT.fold()


def event_label(event: str | None) -> str:
    """The event as a label: a declared client event's name (the contract's and the apps'
    own, a set fixed once apps are ready), or one bucket for everything else."""
    return event if event is not None and event in protocol_table() else "other"


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(part, strict=False) for part in realtime_settings().metrics_allow]


def _client_allowed(request: HttpRequest) -> bool:
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in network for network in _allowed_networks())


def _staff_token(request: HttpRequest) -> bool:
    from rest_framework.exceptions import AuthenticationFailed
    from rest_framework_simplejwt.authentication import JWTAuthentication
    from rest_framework_simplejwt.exceptions import InvalidToken

    try:
        result = JWTAuthentication().authenticate(request)  # type: ignore[arg-type]
    except (InvalidToken, AuthenticationFailed):
        return False
    return result is not None and bool(getattr(result[0], "is_staff", False))


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format, for allowed addresses (REALTIME_METRICS_ALLOW) or a staff token."""
    if not (_client_allowed(request) or _staff_token(request)):
        return HttpResponse("metrics are for operators: staff token or allowed address\n", status=403)
    fold_tallies()
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest()
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


def count_in(event: str | None) -> None:
    """Count one client message; it reaches ``realtime_messages_in`` at the next fold."""
    pending = MESSAGES_IN_BY_EVENT.pending
    label = event_label(event)
    pending[label] = pending.get(label, 0) + 1
