"""Bus shards: one :class:`~realtime.streams.bus.Bus` per Redis server of ``REDIS_URL``.

``REDIS_URL`` may list several Redis servers (docs/operations.md, "Several Redis servers").
Each stream belongs to one of them, chosen by a stable hash of the stream's name (CRC-32
of its UTF-8 bytes, modulo the number of servers): every process that lists the same URLs
in the same order, servers and publishers alike, sends a stream's messages to the same
shard. Group names other than a stream's (the control group: announcements, kicks) live
on the first server, as does everything else that is not a stream's (the cache with the
login and API throttles, the presence store).

Each shard has its own layer, its own health and its own recovery: a lost Redis makes only
its own streams degraded, and the hub catches up only those from the log when it returns
(``Hub._on_shard_health``), while the streams of the other shards keep flowing live. With
one URL there is one shard, the default channel layer, exactly as before the list existed.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import weakref
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import InMemoryChannelLayer, channel_layers

from realtime.streams.bus import PROBE_TIMEOUT, Bus, Ping, broker_ping

if TYPE_CHECKING:  # hub_state reaches the models: this module stays importable before Django is set up
    from realtime.streams.hub_state import StreamState, Subscriber

logger = logging.getLogger("realtime.bus")

__all__ = [
    "ShardedBus",
    "hub_bus",
    "layer_alias",
    "shard_fingerprint",
    "shard_of_group",
    "shard_of_stream",
    "shard_ping",
]

GROUP_PREFIX = "stream."


def shard_of_stream(stream: str, count: int) -> int:
    """The shard of ``stream`` (``room:lobby``) among ``count``: the same in every process and
    every Python version (never ``hash()``, which is salted per process)."""
    if count <= 1:
        return 0
    return zlib.crc32(stream.encode()) % count


def shard_of_group(group: str, count: int) -> int:
    """The shard of a layer group: a stream's group (``stream.room.lobby``, see
    ``StreamName.group``) follows its stream; any other group (control) is on the first."""
    if count <= 1 or not group.startswith(GROUP_PREFIX):
        return 0
    # A prefix has no dot (realtime/protocol/streams.py), so the first dot ends it.
    kind, _, key = group[len(GROUP_PREFIX) :].partition(".")
    return shard_of_stream(f"{kind}:{key}", count)


def layer_alias(index: int) -> str:
    """The ``CHANNEL_LAYERS`` alias of shard ``index`` (project/settings.py builds them)."""
    return DEFAULT_CHANNEL_LAYER if index == 0 else f"realtime.shard{index}"


def shard_fingerprint(urls: Sequence[str]) -> str:
    """A short digest of the URL list (order included, no secrets shown): servers log it at
    start, so a server configured with another list stands out in the logs."""
    return hashlib.sha256("\n".join(urls).encode()).hexdigest()[:12]


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]] = weakref.WeakKeyDictionary()


async def _ping_url(url: str) -> None:
    """PING one Redis on a client of our own (one per event loop and URL), as ``broker_ping``
    does for the first."""
    loop = asyncio.get_running_loop()
    clients = _clients.setdefault(loop, {})
    client = clients.get(url)
    if client is None:
        import redis.asyncio

        client = clients[url] = redis.asyncio.Redis.from_url(
            url, socket_connect_timeout=PROBE_TIMEOUT, socket_timeout=PROBE_TIMEOUT
        )
    await client.ping()


def shard_ping(index: int, url: str) -> Ping:
    return broker_ping if index == 0 else functools.partial(_ping_url, url)


class ShardedBus:
    """The hub's bus over ``len(buses)`` shards: the :class:`Bus` interface (join, leave,
    send, flush, close, healthy), each call routed to the shard of its group."""

    def __init__(
        self,
        make_bus: Callable[[int, Callable[[bool], None]], Bus],
        count: int,
        on_health: Callable[[int, bool], None],
    ) -> None:
        self._on_health = on_health
        self.buses = [make_bus(index, functools.partial(self._health, index)) for index in range(count)]

    def _health(self, index: int, healthy: bool) -> None:
        if len(self.buses) > 1:  # bus.py's broker_down / broker_up lines do not say which Redis
            logger.warning(
                "bus shard %s",
                "recovered" if healthy else "lost",
                extra={"event": "bus_shard_up" if healthy else "bus_shard_down", "shard": index},
            )
        self._on_health(index, healthy)

    @classmethod
    def from_settings(
        cls,
        urls: Sequence[str],
        on_message: Callable[[dict[str, Any]], None],
        on_health: Callable[[int, bool], None],
        refresh_interval: Callable[[Any], float | None],
    ) -> ShardedBus:
        """One bus per URL, each on its own layer (``layer_alias``); shard 0 is the default layer."""

        def make(index: int, health: Callable[[bool], None]) -> Bus:
            alias = layer_alias(index)
            layer = channel_layers[alias]
            return Bus(
                layer,
                on_message,
                health,
                ping=shard_ping(index, urls[index]),
                layer_factory=functools.partial(channel_layers.make_backend, alias),
                refresh_interval=refresh_interval(layer),
            )

        return cls(make, max(1, len(urls)), on_health)

    @property
    def count(self) -> int:
        return len(self.buses)

    @property
    def healthy(self) -> bool:
        return all(bus.healthy for bus in self.buses)

    def shard_of(self, group: str) -> int:
        return shard_of_group(group, len(self.buses))

    def shard_healthy(self, index: int) -> bool:
        return self.buses[index].healthy

    def group_healthy(self, group: str) -> bool:
        return self.buses[self.shard_of(group)].healthy

    async def join(self, group: str) -> None:
        await self.buses[self.shard_of(group)].join(group)

    def leave(self, group: str) -> None:
        self.buses[self.shard_of(group)].leave(group)

    def send(self, group: str, message: dict[str, Any]) -> None:
        self.buses[self.shard_of(group)].send(group, message)

    async def flush(self, within: float) -> bool:
        flushed: list[bool] = await asyncio.gather(*(bus.flush(within) for bus in self.buses))
        return all(flushed)

    def subscribers_of(self, shard: int, streams: dict[str, StreamState]) -> set[Subscriber]:
        """The sessions with a live subscription to a stream of ``shard``: told when it is lost and back."""
        count = len(self.buses)
        return {
            sub.conn
            for key, state in streams.items()
            if shard_of_stream(key, count) == shard
            for sub in state.subs
            if sub.active
        }

    async def close(self) -> None:
        closing: list[Awaitable[None]] = [bus.close() for bus in self.buses]
        await asyncio.gather(*closing)


def hub_bus(
    layer: Any,
    explicit: bool,
    ping: Ping | None,
    on_message: Callable[[dict[str, Any]], None],
    on_health: Callable[[int, bool], None],
) -> ShardedBus | None:
    """The hub's bus: None on the in-memory layer (one process: local delivery is everything);
    one shard on an ``explicit`` layer (tests); else one shard per URL of ``REDIS_URL``."""
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        return None
    if explicit:
        return ShardedBus(
            lambda _, health: Bus(layer, on_message, health, ping=ping, refresh_interval=_refresh_interval(layer)),
            1,
            on_health,
        )
    from django.conf import settings

    urls: Sequence[str] = getattr(settings, "REDIS_URLS", ()) or (settings.REDIS_URL,)
    if len(urls) > 1:
        logger.info(
            "bus sharded over several Redis servers",
            extra={"event": "bus_shards", "shards": len(urls), "fingerprint": shard_fingerprint(urls)},
        )
    return ShardedBus.from_settings(urls, on_message, on_health, _refresh_interval)


def _refresh_interval(layer: Any) -> float | None:
    """The bus re-joins its groups every quarter of the core layer's ``group_expiry`` (pub/sub has none)."""
    expiry = getattr(layer, "group_expiry", None)
    return expiry / 4 if isinstance(expiry, int | float) and expiry > 0 else None
