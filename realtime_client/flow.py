"""The send gate for ``flow.pause`` / ``flow.resume`` (PROTOCOL.md section 9).

Both shipped clients wait the same way (the conformance fixtures in tests/conformance check
it): a paused client waits for ``flow.resume``; its own timer only covers a resume that was
lost, and runs ``retry_after_ms`` plus ``max(retry_after_ms, 1 s)``. ``retry_after_ms`` is
estimated by the server before the calls already on the wire drain its rate bucket further,
and the server re-arms its resume until the bucket has refilled, so resuming exactly after
it lets a fast sender run the bucket dry and get closed with 4429.
"""

from __future__ import annotations

import asyncio

PAUSE_GRACE = 1.0  # seconds past retry_after before resuming without flow.resume, at least
DEFAULT_RETRY_AFTER_MS = 1000  # when flow.pause carries no usable retry_after_ms


def fallback_delay(retry_after_ms: object) -> float:
    """Seconds a ``flow.pause`` holds the sends at most if ``flow.resume`` never comes."""
    retry_after = DEFAULT_RETRY_AFTER_MS / 1000
    if isinstance(retry_after_ms, int | float) and not isinstance(retry_after_ms, bool) and retry_after_ms >= 0:
        retry_after = retry_after_ms / 1000
    return retry_after + max(PAUSE_GRACE, retry_after)


class FlowGate:
    """Closed by ``flow.pause``; opened by ``flow.resume``, by the fallback timer (in case the
    resume is lost: :func:`fallback_delay`), or by a new connection (a fresh rate bucket)."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._timer: asyncio.TimerHandle | None = None
        self.pauses = 0

    @property
    def paused(self) -> bool:
        return not self._open.is_set()

    def server_pause(self, retry_after_ms: object) -> None:
        """The server sent ``flow.pause {"retry_after_ms"}``: wait for ``flow.resume``."""
        self.pause(fallback_delay(retry_after_ms))

    def pause(self, seconds: float) -> None:
        """Hold the sends for ``seconds`` at most."""
        self.pauses += 1
        self._open.clear()
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(max(0.0, seconds), self.resume)

    def resume(self) -> None:
        self._cancel_timer()
        self._open.set()

    async def wait(self) -> None:
        await self._open.wait()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
