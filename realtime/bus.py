"""Bus: the channel layer as one server process uses it, and whether the broker answers.

The process owns one layer channel and joins one group per stream it follows, so a
publish costs one broker message per interested process. The broker is only a bus:
when a send or a receive fails the bus reports itself unhealthy, keeps every committed
event in the database, and retries with capped exponential backoff; when the broker
answers again it re-joins every group (a restarted Redis has forgotten them) and
reports itself healthy, and the hub catches every stream up from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger("realtime.bus")

RECOVERY_DELAY_INITIAL = 0.25
RECOVERY_DELAY_MAX = 5.0
PROBE_TIMEOUT = 2.0
# A quiet process learns of a broker loss from this ping: the pub/sub layer reconnects
# silently inside receive(), so no receive ever fails there.
HEALTH_INTERVAL = 1.0

Ping = Callable[[], Awaitable[Any]]


class Bus:
    def __init__(
        self,
        layer: Any,
        on_message: Callable[[dict[str, Any]], None],
        on_health: Callable[[bool], None],
        ping: Ping | None = None,
        layer_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.layer = layer
        self._layer_factory = layer_factory
        self._ping = ping
        self._watchdog: asyncio.Task[None] | None = None
        self.healthy = True
        self.groups: set[str] = set()
        self.channel: str | None = None
        self._on_message = on_message
        self._on_health = on_health
        self._reader: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._outgoing: deque[tuple[str, dict[str, Any]]] = deque()
        self._recovery: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def join(self, group: str) -> None:
        self.groups.add(group)
        if not self.healthy:
            return  # recovery re-joins every group
        try:
            if self.channel is None:
                self.channel = await self.layer.new_channel("hub.")
            await self.layer.group_add(group, self.channel)
        except Exception:
            self._fail("group_add")
            return
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._read())
        if self._watchdog is None and self._ping is not None:
            self._watchdog = asyncio.ensure_future(self._watch())

    def leave(self, group: str) -> None:
        self.groups.discard(group)
        if self.healthy and self.channel is not None:
            self._spawn(self._quietly(self.layer.group_discard(group, self.channel)))

    def send(self, group: str, message: dict[str, Any]) -> None:
        """Queue a message for the group; one sender task keeps this process's messages in order
        (concurrent sends would reach other processes out of offset order and make them fill
        gaps from the log for nothing)."""
        if not self.healthy:
            return
        self._outgoing.append((group, message))
        if self._sender is None:
            self._sender = asyncio.ensure_future(self._send_all())

    async def _send_all(self) -> None:
        try:
            while self._outgoing and self.healthy:
                group, message = self._outgoing.popleft()
                try:
                    await self.layer.group_send(group, message)
                except Exception:
                    self._outgoing.clear()  # committed events: other processes read them from the log
                    self._fail("group_send")
        finally:
            self._sender = None

    async def _read(self) -> None:
        assert self.channel is not None
        try:
            while True:
                message = await self.layer.receive(self.channel)
                try:
                    self._on_message(message)
                except Exception:
                    logger.exception("bus message handler failed", extra={"type": message.get("type")})
        except asyncio.CancelledError:
            raise
        except Exception:
            self._reader = None
            self._fail("receive")

    async def _watch(self) -> None:
        assert self._ping is not None
        while True:
            await asyncio.sleep(HEALTH_INTERVAL)
            if not self.healthy:
                continue  # recovery probes on its own schedule
            try:
                await asyncio.wait_for(self._ping(), PROBE_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._fail("ping")

    def _fail(self, operation: str) -> None:
        if not self.healthy:
            return
        self.healthy = False
        logger.warning("broker unavailable", extra={"event": "broker_down", "operation": operation})
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        self._on_health(False)
        self._recovery = asyncio.ensure_future(self._recover())

    async def _probe(self) -> None:
        if self.channel is None:
            self.channel = await self.layer.new_channel("hub.")
        if self._ping is not None:
            await asyncio.wait_for(self._ping(), PROBE_TIMEOUT)
        for group in list(self.groups):
            await asyncio.wait_for(self.layer.group_add(group, self.channel), PROBE_TIMEOUT)

    async def _recover(self) -> None:
        stale: tuple[Any, str | None] | None = None
        if self._layer_factory is not None:
            stale = (self.layer, self.channel)
            self.layer, self.channel = self._layer_factory(), None
        delay = RECOVERY_DELAY_INITIAL
        while True:
            await asyncio.sleep(delay * (0.5 + random.random() / 2))  # noqa: S311 - jitter, not crypto
            try:
                await self._probe()
            except asyncio.CancelledError:
                raise
            except Exception:
                delay = min(RECOVERY_DELAY_MAX, delay * 2)
                continue
            self.healthy = True
            self._recovery = None
            self._reader = asyncio.ensure_future(self._read())
            logger.info("broker recovered", extra={"event": "broker_up"})
            self._on_health(True)
            if stale is not None:
                self._spawn(self._retire(*stale))
            return

    async def _retire(self, layer: Any, channel: str | None) -> None:
        """Take a replaced layer's channel out of every group (if the broker kept them) and close it."""
        if channel is not None:
            for group in list(self.groups):
                await self._quietly(asyncio.wait_for(self.layer.group_discard(group, channel), PROBE_TIMEOUT))
        close = getattr(layer, "close_pools", None)
        if close is not None:
            await self._quietly(asyncio.wait_for(close(), PROBE_TIMEOUT))

    @staticmethod
    async def _quietly(operation: Awaitable[Any]) -> None:
        with contextlib.suppress(Exception):
            await operation

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in [self._reader, self._sender, self._recovery, self._watchdog, *self._tasks]:
            if task is not None:
                task.cancel()


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


async def broker_ping() -> None:
    """PING Redis (``REDIS_URL``) on a client of our own, one per event loop, independent of
    the channel layer's internals; raises when the broker does not answer."""
    from django.conf import settings

    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        import redis.asyncio

        client = _clients[loop] = redis.asyncio.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=PROBE_TIMEOUT, socket_timeout=PROBE_TIMEOUT
        )
    await client.ping()
