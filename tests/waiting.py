"""Wait for a condition instead of sleeping for a guessed time.

``wait_until`` / ``async_wait_until`` poll a predicate until it holds or a deadline (scaled by
``REALTIME_TESTS_TIMEOUT_FACTOR``) passes, and then fail with a message saying what never
happened. A test that sleeps "long enough" is slow when the machine is fast and flaky when it
is slow; one that polls returns as soon as the thing happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from tests.conftest import scaled

POLL_INTERVAL = 0.01


class NeverHappened(AssertionError):
    """The awaited condition did not hold before the deadline."""


def wait_until(
    predicate: Callable[[], object], timeout: float = 5.0, message: str = "", interval: float = POLL_INTERVAL
) -> None:
    """Block until ``predicate()`` is truthy; raise :class:`NeverHappened` after ``timeout`` s (scaled)."""
    deadline = time.monotonic() + scaled(timeout)
    while not predicate():
        if time.monotonic() >= deadline:
            raise NeverHappened(message or f"condition not met within {scaled(timeout):g} s")
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], object], timeout: float = 5.0, message: str = "", interval: float = POLL_INTERVAL
) -> float:
    """Like :func:`wait_until`, yielding to the event loop between checks; the seconds it took
    (tests that bound how fast something happened assert on it)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + scaled(timeout)
    while not predicate():
        if loop.time() >= deadline:
            raise NeverHappened(message or f"condition not met within {scaled(timeout):g} s")
        await asyncio.sleep(interval)
    return loop.time() - started
