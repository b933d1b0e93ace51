"""Reconnect delays: exponential bounds, full jitter, cap, reset (PROTOCOL.md section 10)."""

from __future__ import annotations

import random

import pytest

from realtime_client.backoff import Backoff


def test_ceilings_double_from_initial_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 10.0)
    assert [backoff.ceiling(n) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.ceiling(10_000) == 10.0  # no overflow after a long outage


def test_full_jitter_draws_from_zero_to_the_ceiling() -> None:
    draws: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        draws.append((low, high))
        return high

    backoff = Backoff(0.5, 10.0, uniform=uniform)
    delays = [backoff.next_delay() for _ in range(6)]
    assert draws == [(0.0, c) for c in (0.5, 1.0, 2.0, 4.0, 8.0, 10.0)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]


def test_delays_are_random_within_bounds() -> None:
    rng = random.Random(7)
    backoff = Backoff(0.5, 10.0, uniform=rng.uniform)
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(0.0 <= d <= 10.0 for d in delays)
    assert all(0.0 <= d <= 0.5 * 2**n for n, d in enumerate(delays[:5]))
    assert len({round(d, 6) for d in delays}) > 150  # jittered, not a fixed schedule


def test_reset_starts_over() -> None:
    backoff = Backoff(0.5, 10.0, uniform=lambda low, high: high)
    for _ in range(4):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 0.5


@pytest.mark.parametrize(("initial", "cap", "factor"), [(0, 10, 2), (5, 1, 2), (0.5, 10, 0.5)])
def test_invalid_settings_are_refused(initial: float, cap: float, factor: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(initial, cap, factor)
