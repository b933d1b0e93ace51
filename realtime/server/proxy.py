"""Client address and scheme behind a reverse proxy (``FORWARDED_ALLOW_IPS``).

A request's ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed only when the peer
(the TCP connection's other end) is a trusted proxy: an address or network listed in
``FORWARDED_ALLOW_IPS`` (default ``127.0.0.1,::1``), or any peer when the setting is ``*``.

Each proxy appends the address it saw to ``X-Forwarded-For``, so only the right end of the
list was written by proxies; the left end is whatever the client sent. The client is the
rightmost entry that is not itself a listed proxy (with ``*`` nothing is listed, so the
rightmost entry: the address the one proxy in front saw). A client that sends
``X-Forwarded-For: 127.0.0.1`` through nginx gets ``127.0.0.1, <its address>`` and is
seen as ``<its address>``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = frozenset({"http", "https", "ws", "wss"})


def host_of(entry: str) -> str:
    """The host of an ``X-Forwarded-For`` entry: ``1.2.3.4``, ``1.2.3.4:5``, ``[::1]:5`` or ``::1``."""
    entry = entry.strip()
    if entry.startswith("["):
        end = entry.find("]")
        return entry[1:end] if end > 0 else entry
    if entry.count(":") == 1:
        return entry.split(":", 1)[0]
    return entry


class TrustedProxies:
    """``FORWARDED_ALLOW_IPS``: comma-separated addresses, networks (``10.0.0.0/8``) or ``*``."""

    __slots__ = ("addresses", "any_peer", "literals", "networks")

    def __init__(self, spec: str) -> None:
        items = [item.strip() for item in spec.split(",") if item.strip()]
        self.any_peer = "*" in items
        self.addresses: set[Address] = set()
        self.networks: list[Network] = []
        self.literals: set[str] = set()
        for item in items:
            if item == "*":
                continue
            try:
                if "/" in item:
                    self.networks.append(ipaddress.ip_network(item, strict=False))
                else:
                    self.addresses.add(ipaddress.ip_address(item))
            except ValueError:
                self.literals.add(item)  # a name, or a Unix socket path

    def listed(self, host: str) -> bool:
        """Whether ``host`` is named by the setting (``*`` names no one)."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host in self.literals
        return address in self.addresses or any(address in network for network in self.networks)

    def trusts_peer(self, host: str | None) -> bool:
        return host is not None and (self.any_peer or self.listed(host))

    def client_host(self, forwarded_for: str) -> str | None:
        """The rightmost address of ``forwarded_for`` that is not a listed proxy."""
        entries = [host_of(entry) for entry in forwarded_for.split(",")]
        entries = [entry for entry in entries if entry]
        for host in reversed(entries):
            if not self.listed(host):
                return host
        # Every hop is a listed proxy: the client is one of them, the leftmost.
        return entries[0] if entries else None

    def resolve(
        self, client: tuple[str, int] | None, scheme: str, headers: Iterable[tuple[bytes, bytes]], websocket: bool
    ) -> tuple[tuple[str, int] | None, str]:
        """``(client, scheme)`` for a request from ``client`` with ``headers`` (lower-case names)."""
        if client is None or not self.trusts_peer(client[0]):
            return client, scheme
        forwarded_for: list[bytes] = []
        proto: bytes | None = None
        for name, value in headers:
            if name == b"x-forwarded-for":
                forwarded_for.append(value)
            elif name == b"x-forwarded-proto":
                proto = value
        if proto is not None:
            # The proxy in front overwrites or appends: its value is the last one.
            claimed = proto.decode("latin-1").rsplit(",", 1)[-1].strip().lower()
            if claimed in SCHEMES:
                scheme = claimed.replace("http", "ws") if websocket else claimed
        if forwarded_for:
            host = self.client_host(b",".join(forwarded_for).decode("latin-1"))
            if host:
                client = (host, 0)
        return client, scheme
