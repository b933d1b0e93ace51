"""Where the servers of a cluster keep who is present in which stream: Redis, keys that expire.

Per stream and server one hash, ``realtime:presence:{stream}:{hub}``, maps each user id the
server holds to its entry (JSON ``[sessions, username, meta, meta_at]``) and ``_v`` to the
server's version of it; per stream one sorted set, ``realtime:presence:{stream}``, lists the
servers that hold entries, scored with the time their hash expires. A live server refreshes
both with its heartbeat; a server that dies (``kill -9``) stops refreshing and its entries
expire by themselves, so every key is bounded in size and in time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import ConstantBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

PREFIX = "realtime:presence:"
VERSION_FIELD = "_v"
SOCKET_TIMEOUT = 1.0
# What a Redis that is down, restarting or unreachable raises.
STORE_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)


@dataclass(slots=True)
class Entry:
    """One server's share of one user in one stream."""

    sessions: int
    username: str
    meta: dict[str, Any] | None = None
    meta_at: float = 0.0

    def encode(self) -> str:
        return json.dumps([self.sessions, self.username, self.meta, self.meta_at], separators=(",", ":"))

    @classmethod
    def decode(cls, raw: Any) -> Entry | None:
        try:
            sessions, username, meta, meta_at = json.loads(raw)
            return cls(int(sessions), str(username), meta if isinstance(meta, dict) else None, float(meta_at))
        except (ValueError, TypeError):
            return None


@dataclass(slots=True)
class HubEntries:
    """What one server holds for a stream, as of its ``version`` (a per-server counter)."""

    version: int
    entries: dict[int, Entry]


@dataclass(frozen=True, slots=True)
class Write:
    """A change to this server's hash of one stream: ``entries`` set, ``gone`` removed.
    ``full``: the hash is replaced (after a broker restart, which forgot it)."""

    stream: str
    version: int
    entries: dict[int, Entry]
    gone: tuple[int, ...] = ()
    full: bool = False


def _keys(stream: str, hub: str) -> tuple[str, str]:
    return PREFIX + stream, f"{PREFIX}{stream}:{hub}"


class PresenceStore:
    def __init__(self, client: Any, hub: str, ttl: float) -> None:
        self._client = client
        self.hub = hub
        self.ttl = ttl

    @classmethod
    def from_url(cls, url: str, hub: str, ttl: float) -> PresenceStore:
        client = redis.asyncio.Redis.from_url(
            url,
            socket_connect_timeout=SOCKET_TIMEOUT,
            socket_timeout=SOCKET_TIMEOUT,
            decode_responses=True,
            # A pooled connection to a Redis that restarted fails once: one retry on a new one.
            retry=Retry(ConstantBackoff(0.05), 1),
            retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError],
        )
        return cls(client, hub, ttl)

    async def write(self, writes: Iterable[Write]) -> None:
        """Apply this server's changes in one round trip (MULTI: a reader never sees half of one)."""
        expires = time.time() + self.ttl
        ttl_ms = int(self.ttl * 1000)
        async with self._client.pipeline(transaction=True) as pipe:
            for write in writes:
                zkey, hkey = _keys(write.stream, self.hub)
                if write.full:
                    pipe.delete(hkey)
                elif write.gone:
                    pipe.hdel(hkey, *[str(uid) for uid in write.gone])
                mapping = {str(uid): entry.encode() for uid, entry in write.entries.items()}
                mapping[VERSION_FIELD] = str(write.version)
                pipe.hset(hkey, mapping=mapping)
                pipe.pexpire(hkey, ttl_ms)
                pipe.zadd(zkey, {self.hub: expires})
                pipe.pexpire(zkey, ttl_ms)
            await pipe.execute()

    async def drop(self, streams: Iterable[str]) -> None:
        """This server holds nobody in ``streams`` any more."""
        async with self._client.pipeline(transaction=True) as pipe:
            for stream in streams:
                zkey, hkey = _keys(stream, self.hub)
                pipe.delete(hkey)
                pipe.zrem(zkey, self.hub)
            await pipe.execute()

    async def refresh(self, streams: Iterable[str]) -> None:
        """Heartbeat: keep this server's hashes of ``streams`` (and their listing) from expiring."""
        expires = time.time() + self.ttl
        ttl_ms = int(self.ttl * 1000)
        async with self._client.pipeline(transaction=False) as pipe:
            for stream in streams:
                zkey, hkey = _keys(stream, self.hub)
                pipe.pexpire(hkey, ttl_ms)
                pipe.zadd(zkey, {self.hub: expires})
                pipe.pexpire(zkey, ttl_ms)
            await pipe.execute()

    async def read(self, streams: list[str]) -> dict[str, dict[str, HubEntries]]:
        """Every other live server's entries of each stream (two round trips for all of them)."""
        now = time.time()
        async with self._client.pipeline(transaction=False) as pipe:
            for stream in streams:
                zkey = PREFIX + stream
                pipe.zremrangebyscore(zkey, "-inf", now)
                pipe.zrangebyscore(zkey, now, "+inf")
            listed = await pipe.execute()
        hubs = {stream: [h for h in listed[2 * i + 1] if h != self.hub] for i, stream in enumerate(streams)}
        async with self._client.pipeline(transaction=False) as pipe:
            for stream in streams:
                for hub in hubs[stream]:
                    pipe.hgetall(_keys(stream, hub)[1])
            hashes = iter(await pipe.execute())
        result: dict[str, dict[str, HubEntries]] = {}
        for stream in streams:
            found = result[stream] = {}
            for hub in hubs[stream]:
                raw: dict[str, str] = next(hashes)
                if not raw:
                    continue  # expired between the two trips
                version = int(raw.pop(VERSION_FIELD, "0") or 0)
                entries = {int(uid): e for uid, value in raw.items() if (e := Entry.decode(value)) is not None}
                found[hub] = HubEntries(version, entries)
        return result

    async def close(self) -> None:
        await self._client.aclose()
