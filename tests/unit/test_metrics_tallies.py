"""Hot-path counts are plain ints folded into their Prometheus counters (realtime/ops/metrics.py).

Under ``serve --workers N`` every prometheus_client increment takes a lock and writes a
shared file; counting each client message that way cost a worker ~8 % of its CPU. The
counts must still reach the counters: the hub, the heartbeat and ``/metrics`` fold them.
"""

from __future__ import annotations

from prometheus_client import REGISTRY

from realtime.ops import metrics


def _messages_in(event: str) -> float:
    return REGISTRY.get_sample_value("realtime_messages_in_total", {"event": event}) or 0.0


def test_client_messages_are_counted_when_folded() -> None:
    metrics.fold_tallies()
    echo, other = _messages_in("echo"), _messages_in("other")
    metrics.count_in("echo")
    metrics.count_in("echo")
    metrics.count_in("no.such.event")  # client input: counted under one bucket
    metrics.count_in(None)
    assert (_messages_in("echo"), _messages_in("other")) == (echo, other)
    metrics.fold_tallies()
    assert (_messages_in("echo"), _messages_in("other")) == (echo + 2, other + 2)
    metrics.fold_tallies()  # nothing pending: nothing added
    assert (_messages_in("echo"), _messages_in("other")) == (echo + 2, other + 2)


def test_every_declared_event_has_a_series_once_counting_starts() -> None:
    metrics.count_in("echo")
    metrics.fold_tallies()
    assert REGISTRY.get_sample_value("realtime_messages_in_total", {"event": "stream.subscribe"}) is not None
