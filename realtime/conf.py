"""Typed ``REALTIME_*`` settings (PROTOCOL.md section 1), read from the environment once.

``project/settings.py`` builds one :class:`RealtimeSettings` with :meth:`from_env`
and stores it as ``settings.REALTIME``; everything else reads it through
:func:`realtime_settings`, never through ``os.environ``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_ALLOWED_ORIGINS = ("http://localhost:8000", "http://127.0.0.1:8000")


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot run with."""


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a number") from None
    if not value >= minimum:  # also rejects NaN
        raise SettingsError(f"{name}={raw!r}: must be >= {minimum:g}")
    return value


def _integer(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r}: must be >= {minimum}")
    return value


def _origins(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = env.get("REALTIME_ALLOWED_ORIGINS")
    if raw is None:
        return DEFAULT_ALLOWED_ORIGINS
    return tuple(o.strip().rstrip("/").lower() for o in raw.split(",") if o.strip())


_RATE = re.compile(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)")


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if raw not in ("0", "1"):
        raise SettingsError(f"{name} must be 0 or 1, not {raw!r}")
    return raw == "1"


def _rate(env: Mapping[str, str], name: str, default: str) -> str:
    """A DRF throttle rate: requests per second, minute, hour or day (``10/min``)."""
    raw = env.get(name, "").strip() or default
    if not _RATE.fullmatch(raw):
        raise SettingsError(f"{name}={raw!r}: expected requests per period, like 10/min (s, min, hour, day)")
    return raw


# RFC 6750 token68 characters, the ones the log filter redacts after "Bearer " (ops/structured_logging.py).
_API_KEY = re.compile(r"[A-Za-z0-9._~+/=-]{24,256}")


def _api_keys(env: Mapping[str, str]) -> tuple[str, ...]:
    """``REALTIME_API_KEYS``: comma-separated keys of the server HTTP API; never echoed in errors."""
    keys = tuple(key.strip() for key in env.get("REALTIME_API_KEYS", "").split(",") if key.strip())
    for number, key in enumerate(keys, 1):
        if not _API_KEY.fullmatch(key):
            raise SettingsError(
                f"REALTIME_API_KEYS: key {number} must be 24 to 256 characters of A-Z a-z 0-9 . _ ~ + / = -"
            )
    return keys


def _networks(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None:
        return default
    parts = tuple(part.strip() for part in raw.split(",") if part.strip())
    for part in parts:
        try:
            ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise SettingsError(f"{name}: {part!r} is not an IP address or network") from None
    return parts


@dataclass(frozen=True, slots=True)
class RealtimeSettings:
    allowed_origins: tuple[str, ...] = DEFAULT_ALLOWED_ORIGINS
    idle_timeout: float = 300.0
    max_message_bytes: int = 1_048_576
    rate_limit: float = 200.0
    send_queue: int = 1000
    send_queue_bytes: int = 4_194_304
    heartbeat_interval: float = 25.0
    heartbeat_timeout: float = 20.0
    access_token_ttl: int = 300
    server_id: str | None = None
    retention_hours: float = 24.0
    server_heartbeat_interval: float = 10.0
    metrics_allow: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    # Failed login attempts (POST /api/auth/token/) per username and per client address.
    login_rate: str = "10/min"
    login_address_rate: str = "30/min"
    # Issue 14: how long the core Redis layer keeps a group member that is not refreshed.
    group_expiry: int = 86400
    # Section 11 limits: what one connection or one account may hold.
    max_subscriptions: int = 1000
    max_connections_per_user: int = 100
    max_reply_bytes: int = 1_048_576  # defaults to max_message_bytes
    max_page_size: int = 100  # REST list pages (GET /api/resources/?limit=)
    # Issue 13: the server alone must not fall over (docs/protocol.md, "HTTP limits").
    max_connections: int = 0  # 0: the open-file limit less a reserve (serve decides)
    http_header_timeout: float = 10.0
    max_request_body_bytes: int = 1_048_576  # the larger of 1 MiB and max_message_bytes
    # Issue 17: stream.signal calls per second per connection (bursts of one second's worth).
    signal_rate: float = 20.0
    # Issue 16: the server HTTP API (realtime/server_api.py). No keys: only staff access tokens.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    server_api_rate: str = "6000/min"  # requests per API key (or staff user)
    # Issue 19: the server's garbage-collector policy (realtime/server/gc_policy.py).
    gc_freeze: bool = True
    gc_trace: str = ""  # a file for one JSON line per collection; empty: no collector callback
    # Issue 19: WebSocket handshakes in the application at a time per process (0: no limit).
    handshake_slots: int = 32

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RealtimeSettings:
        max_message_bytes = _integer(env, "REALTIME_MAX_MESSAGE_BYTES", 1_048_576, minimum=64)
        return cls(
            allowed_origins=_origins(env),
            idle_timeout=_number(env, "REALTIME_IDLE_TIMEOUT", 300.0, minimum=0.001),
            max_message_bytes=max_message_bytes,
            rate_limit=_number(env, "REALTIME_RATE_LIMIT", 200.0, minimum=0),
            send_queue=_integer(env, "REALTIME_SEND_QUEUE", 1000, minimum=1),
            send_queue_bytes=_integer(env, "REALTIME_SEND_QUEUE_BYTES", 4_194_304, minimum=1024),
            heartbeat_interval=_number(env, "REALTIME_HEARTBEAT_INTERVAL", 25.0, minimum=0.001),
            heartbeat_timeout=_number(env, "REALTIME_HEARTBEAT_TIMEOUT", 20.0, minimum=0.001),
            access_token_ttl=_integer(env, "JWT_ACCESS_TTL", 300, minimum=1),
            server_id=env.get("REALTIME_SERVER_ID") or None,
            retention_hours=_number(env, "REALTIME_RETENTION_HOURS", 24.0, minimum=0.001),
            server_heartbeat_interval=_number(env, "REALTIME_SERVER_HEARTBEAT_INTERVAL", 10.0, minimum=0.1),
            metrics_allow=_networks(env, "REALTIME_METRICS_ALLOW", ("127.0.0.1/32", "::1/128")),
            login_rate=_rate(env, "REALTIME_LOGIN_RATE", "10/min"),
            login_address_rate=_rate(env, "REALTIME_LOGIN_ADDRESS_RATE", "30/min"),
            group_expiry=_integer(env, "REALTIME_GROUP_EXPIRY", 86400, minimum=4),
            max_subscriptions=_integer(env, "REALTIME_MAX_SUBSCRIPTIONS", 1000, minimum=1),
            max_connections_per_user=_integer(env, "REALTIME_MAX_CONNECTIONS_PER_USER", 100, minimum=1),
            max_reply_bytes=_integer(env, "REALTIME_MAX_REPLY_BYTES", max_message_bytes, minimum=1024),
            max_page_size=_integer(env, "REALTIME_MAX_PAGE_SIZE", 100, minimum=1),
            max_connections=_integer(env, "REALTIME_MAX_CONNECTIONS", 0, minimum=0),
            http_header_timeout=_number(env, "REALTIME_HTTP_HEADER_TIMEOUT", 10.0, minimum=0.1),
            # Not below 1 MiB by default: a small WebSocket message limit must not refuse REST bodies.
            max_request_body_bytes=_integer(
                env, "REALTIME_MAX_REQUEST_BODY_BYTES", max(max_message_bytes, 1_048_576), minimum=1024
            ),
            signal_rate=_number(env, "REALTIME_SIGNAL_RATE", 20.0, minimum=0.1),
            api_keys=_api_keys(env),
            server_api_rate=_rate(env, "REALTIME_SERVER_API_RATE", "6000/min"),
            gc_freeze=_switch(env, "REALTIME_GC_FREEZE", True),
            gc_trace=env.get("REALTIME_GC_TRACE", "").strip(),
            handshake_slots=_integer(env, "REALTIME_HANDSHAKE_SLOTS", 32, minimum=0),
        )

    def origin_allowed(self, origin: str) -> bool:
        return "*" in self.allowed_origins or origin.rstrip("/").lower() in self.allowed_origins


def realtime_settings() -> RealtimeSettings:
    from django.conf import settings

    value: RealtimeSettings = settings.REALTIME
    return value


_server_id: str | None = None


def set_server_id(value: str) -> None:
    """Called once by ``manage.py serve`` when the listening port is known."""
    global _server_id
    _server_id = value


def server_id() -> str:
    """``REALTIME_SERVER_ID``, else ``hostname:port`` as set by ``serve``, else the hostname."""
    import socket

    return realtime_settings().server_id or _server_id or socket.gethostname()


# A comma starts another URL only when a scheme follows it: a single URL whose password holds
# a raw comma is still one URL, read exactly as before the list existed.
_NEXT_URL = re.compile(r",(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")
_REDIS_SCHEMES = ("redis", "rediss", "unix")


def _redacted(url: str) -> str:
    """``url`` without its password, for error messages (they reach logs and terminals)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:
        return "<unparseable>"


def redis_urls(raw: str) -> tuple[str, ...]:
    """``REDIS_URL``: empty (no broker), one URL (taken as it is, as it always was) or a
    comma-separated list of ``redis://`` / ``rediss://`` / ``unix://`` URLs, one per bus shard
    (docs/operations.md, "Several Redis servers"). A list that cannot be right fails here,
    at start, naming the entry."""
    from urllib.parse import urlsplit

    if not raw.strip():
        return ()
    parts = _NEXT_URL.split(raw)
    if len(parts) == 1:
        return (raw,)
    urls: list[str] = []
    for index, part in enumerate(parts, 1):
        url = part.strip()
        shown = _redacted(url)
        try:
            parsed = urlsplit(url)
            port = parsed.port
        except ValueError as exc:
            raise SettingsError(f"REDIS_URL entry {index} ({shown}): {exc}") from None
        if parsed.scheme not in _REDIS_SCHEMES:
            raise SettingsError(f"REDIS_URL entry {index} ({shown}): expected a redis://, rediss:// or unix:// URL")
        if parsed.scheme != "unix" and not parsed.hostname:
            raise SettingsError(f"REDIS_URL entry {index} ({shown}): no host")
        if parsed.scheme == "unix" and not parsed.path:
            raise SettingsError(f"REDIS_URL entry {index} ({shown}): no socket path")
        if "," in url or port == 0:
            # In a list every comma must start a URL: an empty entry, or a raw comma in a
            # password (percent-encode it as %2C there).
            raise SettingsError(f"REDIS_URL entry {index} ({shown}): a comma that starts no URL, or no port")
        if url in urls:
            raise SettingsError(f"REDIS_URL entry {index} ({shown}) is listed twice")
        urls.append(url)
    return tuple(urls)
