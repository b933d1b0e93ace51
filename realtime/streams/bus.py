"""Bus: the channel layer as one server process uses it, and whether the broker answers.

The process owns one layer channel and joins one group per stream it follows, so a
publish costs one broker message per interested process. The broker is only a bus:
when a send or a receive fails the bus reports itself unhealthy, keeps every committed
event in the database, and retries with capped exponential backoff; when the broker
answers again it re-joins every group (a restarted Redis has forgotten them) and
reports itself healthy, and the hub catches every stream up from the log.

Group memberships are kept for as long as the process runs: the core layer forgets a
member ``group_expiry`` after it joined, so the bus re-joins every group each quarter of
that (a crashed process's channel still leaves its groups by itself). Joins and leaves of
one group are serialized, so a re-subscribe's join never loses to the earlier leave.
Broker errors (:data:`BROKER_ERRORS`) mark the bus unhealthy; anything else is a bug,
logged with its traceback.

Sends are batched (issue 19): one sender task takes everything queued since its last round
trip (at least one loop iteration's worth) and sends one broker message per group, a
``bus.batch`` whose ``messages`` the receiving bus hands to its handler one by one, in order;
a message alone in its group travels as itself (as ``realtime/publishing.py`` sends from
outside the server). The broker then carries one message per group per loop iteration
instead of one per event, and the receiver gets a burst in one iteration, so its writes to a
subscriber coalesce. A batch holds at most :data:`MAX_BATCH_MESSAGES` messages and about
:data:`MAX_BATCH_BYTES` bytes: the core layer's channel capacity counts broker messages, and
Redis closes a pub/sub subscriber whose output buffer outgrows its limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from channels.exceptions import ChannelFull
from redis.exceptions import RedisError

logger = logging.getLogger("realtime.bus")

RECOVERY_DELAY_INITIAL = 0.25
RECOVERY_DELAY_MAX = 5.0
PROBE_TIMEOUT = 2.0
# A quiet process learns of a broker loss from this ping: the pub/sub layer reconnects
# silently inside receive(), so no receive ever fails there.
HEALTH_INTERVAL = 1.0

Ping = Callable[[], Awaitable[Any]]

BATCH_TYPE = "bus.batch"
MAX_BATCH_MESSAGES = 256
# An estimate (characters of the strings, see _weight), far below Redis's pub/sub output buffer limits.
MAX_BATCH_BYTES = 256 * 1024

# What a broker that is down, slow or full raises; everything else is a bug in our code.
BROKER_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError, ChannelFull)


@dataclass(slots=True)
class _GroupLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Bus:
    def __init__(
        self,
        layer: Any,
        on_message: Callable[[dict[str, Any]], None],
        on_health: Callable[[bool], None],
        ping: Ping | None = None,
        layer_factory: Callable[[], Any] | None = None,
        refresh_interval: float | None = None,
    ) -> None:
        self.layer = layer
        self._refresh_interval = refresh_interval
        self._refresher: asyncio.Task[None] | None = None
        self._locks: dict[str, _GroupLock] = {}
        self._channel_lock = asyncio.Lock()
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

    @contextlib.asynccontextmanager
    async def _serialized(self, group: str) -> AsyncIterator[None]:
        """One membership change of ``group`` at a time, in the order they were asked for."""
        entry = self._locks.get(group)
        if entry is None:
            entry = self._locks[group] = _GroupLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if not entry.users:
                del self._locks[group]

    async def _ensure_channel(self) -> str:
        async with self._channel_lock:
            if self.channel is None:
                self.channel = await self.layer.new_channel("hub.")
            return self.channel

    async def join(self, group: str) -> None:
        self.groups.add(group)
        if not self.healthy:
            return  # recovery re-joins every group
        try:
            channel = await self._ensure_channel()
            async with self._serialized(group):
                if group in self.groups and self.healthy and channel == self.channel:
                    await self.layer.group_add(group, channel)
        except BROKER_ERRORS:
            self._fail("group_add")
            return
        except Exception:
            logger.exception("unexpected error joining a bus group", extra={"group": group})
            self._fail("group_add")
            return
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._read())
        if self._watchdog is None and self._ping is not None:
            self._watchdog = asyncio.ensure_future(self._watch())
        if self._refresher is None and self._refresh_interval is not None:
            self._refresher = asyncio.ensure_future(self._refresh(self._refresh_interval))

    def leave(self, group: str) -> None:
        self.groups.discard(group)
        if self.healthy and self.channel is not None:
            self._spawn(self._discard(group, self.channel))

    async def _discard(self, group: str, channel: str) -> None:
        async with self._serialized(group):
            # Joined again meanwhile (a re-subscribe): the membership stays.
            if group in self.groups or channel != self.channel:
                return
            await self._quietly(self.layer.group_discard(group, channel))

    async def _refresh(self, interval: float) -> None:
        """Re-join every group, so the layer's ``group_expiry`` never drops a live member."""
        while True:
            await asyncio.sleep(interval)
            if not self.healthy or self.channel is None:
                continue  # recovery re-joins every group
            channel = self.channel
            for group in list(self.groups):
                try:
                    async with self._serialized(group):
                        if group in self.groups and channel == self.channel:
                            await asyncio.wait_for(self.layer.group_add(group, channel), PROBE_TIMEOUT)
                except BROKER_ERRORS:
                    self._fail("group_refresh")
                    break
                except Exception:
                    logger.exception("unexpected error refreshing a bus group", extra={"group": group})

    def send(self, group: str, message: dict[str, Any]) -> None:
        """Queue a message for the group; one sender task keeps this process's messages in order
        (concurrent sends would reach other processes out of offset order and make them fill
        gaps from the log for nothing) and batches what was queued meanwhile."""
        if not self.healthy:
            return
        self._outgoing.append((group, message))
        if self._sender is None:
            # The task starts on the next iteration: every send of this one is in its first batch.
            self._sender = asyncio.ensure_future(self._send_all())

    async def _send_all(self) -> None:
        try:
            while self._outgoing and self.healthy:
                for group, batch in _batches(self._outgoing):
                    if not self.healthy:
                        break
                    await self._send_batch(group, batch)
        finally:
            self._sender = None

    async def _send_batch(self, group: str, batch: list[dict[str, Any]]) -> None:
        try:
            await self.layer.group_send(group, batch[0] if len(batch) == 1 else {"type": BATCH_TYPE, "messages": batch})
        except BROKER_ERRORS:
            self._outgoing.clear()  # committed events: other processes read them from the log
            self._fail("group_send")
        except Exception:
            # Not the broker: the bad message is dropped (its event is in the log), the rest go.
            logger.exception("unexpected error sending on the bus", extra={"group": group, "messages": len(batch)})
            if len(batch) > 1:
                for message in batch:
                    if self.healthy:
                        await self._send_batch(group, [message])

    async def flush(self, within: float) -> bool:
        """Wait (at most ``within`` s) until every queued message is handed to the broker: at
        shutdown, so events committed before exit reach other processes at once."""
        sender = self._sender
        if sender is None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(sender), within)
        except TimeoutError:
            logger.warning("bus not flushed", extra={"event": "bus_flush_timeout", "queued": len(self._outgoing)})
            return False
        return not self._outgoing

    async def _read(self) -> None:
        assert self.channel is not None
        try:
            while True:
                message = await self.layer.receive(self.channel)
                if message.get("type") == BATCH_TYPE:
                    for item in message["messages"]:
                        self._hand_over(item)
                else:
                    self._hand_over(message)
        except asyncio.CancelledError:
            raise
        except BROKER_ERRORS:
            self._reader = None
            self._fail("receive")
        except Exception:
            logger.exception("unexpected error reading the bus")
            self._reader = None
            self._fail("receive")

    def _hand_over(self, message: dict[str, Any]) -> None:
        try:
            self._on_message(message)
        except Exception:
            logger.exception("bus message handler failed", extra={"type": message.get("type")})

    async def _watch(self) -> None:
        assert self._ping is not None
        while True:
            await asyncio.sleep(HEALTH_INTERVAL)
            if not self.healthy:
                continue  # recovery probes on its own schedule
            try:
                await asyncio.wait_for(self._ping(), PROBE_TIMEOUT)
            except BROKER_ERRORS:
                self._fail("ping")
            except Exception:
                logger.exception("unexpected error pinging the broker")
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
            except BROKER_ERRORS:
                delay = min(RECOVERY_DELAY_MAX, delay * 2)
                continue
            except Exception:
                logger.exception("unexpected error probing the broker")
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
        """Best effort (a leave, retiring a replaced layer): a broker error changes nothing."""
        try:
            await operation
        except BROKER_ERRORS:
            logger.debug("broker operation failed", exc_info=True)
        except Exception:
            logger.exception("unexpected error in a best-effort broker operation")

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in [self._reader, self._sender, self._recovery, self._watchdog, self._refresher, *self._tasks]:
            if task is not None:
                task.cancel()


def _batches(queue: deque[tuple[str, dict[str, Any]]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Empty ``queue`` into batches, one per group (more when a group's outgrows the bounds):
    each group's messages keep their order, and a group's batches are listed in order."""
    out: list[tuple[str, list[dict[str, Any]]]] = []
    latest: dict[str, list[dict[str, Any]]] = {}  # each group's batch still being filled
    size: dict[str, int] = {}  # its estimated bytes
    while queue:
        group, message = queue.popleft()
        weight = _weight(message)
        batch = latest.get(group)
        if batch is None or len(batch) >= MAX_BATCH_MESSAGES or size[group] + weight > MAX_BATCH_BYTES:
            batch = latest[group] = []
            size[group] = 0
            out.append((group, batch))
        batch.append(message)
        size[group] += weight
    return out


def _weight(value: Any) -> int:
    """About how many bytes ``value`` takes serialized (characters of strings; cheap, not exact)."""
    if isinstance(value, str | bytes):
        return len(value) + 5
    if isinstance(value, dict):
        return 5 + sum(_weight(key) + _weight(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return 5 + sum(_weight(item) for item in value)
    return 9


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
