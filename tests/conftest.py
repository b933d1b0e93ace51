"""Shared test settings: a timeout factor for slow machines, after websockets' ``MS``."""

from __future__ import annotations

import os

from hypothesis import settings

# Multiply every wait in the tests by this on slow or loaded machines.
TIMEOUT_FACTOR = float(os.environ.get("REALTIME_TESTS_TIMEOUT_FACTOR", "1"))


def scaled(seconds: float) -> float:
    return seconds * TIMEOUT_FACTOR


# Property-based tests: the default suite (CI, `make test`) replays the same examples every
# run, so a green main stays green; `HYPOTHESIS_PROFILE=explore` draws new ones every run (run
# it, repeatedly, when changing the delivery core or the protocol; a failure prints the example
# to pin with ``@example``).
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
