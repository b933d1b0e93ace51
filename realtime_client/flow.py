"""The send gate for ``flow.pause`` / ``flow.resume`` (PROTOCOL.md section 9)."""

from __future__ import annotations

import asyncio


class FlowGate:
    """Closed by ``flow.pause``; opened by ``flow.resume``, by the pause's ``retry_after_ms``
    running out (in case the resume is lost), or by a new connection (a fresh rate bucket)."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._timer: asyncio.TimerHandle | None = None
        self.pauses = 0

    @property
    def paused(self) -> bool:
        return not self._open.is_set()

    def pause(self, seconds: float) -> None:
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
