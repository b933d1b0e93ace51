"""Shared test settings: a timeout factor for slow machines, after websockets' ``MS``."""

from __future__ import annotations

import os

# Multiply every wait in the tests by this on slow or loaded machines.
TIMEOUT_FACTOR = float(os.environ.get("REALTIME_TESTS_TIMEOUT_FACTOR", "1"))


def scaled(seconds: float) -> float:
    return seconds * TIMEOUT_FACTOR
