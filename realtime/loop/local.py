"""LoopLocal: one instance of something per event loop (the hub, the timer wheel, batchers).

A server process runs one loop, so each is a process singleton there; tests run a loop per
test, and futures and timers must never cross loops, so the instances are keyed by loop
(weakly: a finished loop's instance goes with it).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LoopLocal(Generic[T]):
    def __init__(self, factory: Callable[[asyncio.AbstractEventLoop], T]) -> None:
        self._factory = factory
        self._instances: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    def get(self, loop: asyncio.AbstractEventLoop | None = None) -> T:
        """The instance of ``loop`` (default: the running loop), made on first use."""
        loop = loop or asyncio.get_running_loop()
        instance = self._instances.get(loop)
        if instance is None:
            instance = self._instances[loop] = self._factory(loop)
        return instance
