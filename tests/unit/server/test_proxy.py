"""Issue 20 addendum: the client address behind proxies is the rightmost X-Forwarded-For entry
that is not a trusted proxy (realtime/server/proxy.py)."""

from __future__ import annotations

import pytest

from realtime.server.proxy import TrustedProxies, host_of


@pytest.mark.parametrize(
    ("entry", "host"),
    [("1.2.3.4", "1.2.3.4"), ("1.2.3.4:80", "1.2.3.4"), ("[::1]:80", "::1"), ("::1", "::1"), (" x ", "x")],
)
def test_host_of_an_entry(entry: str, host: str) -> None:
    assert host_of(entry) == host


@pytest.mark.parametrize(
    ("allowed", "forwarded_for", "client"),
    [
        ("*", "127.0.0.1, 198.51.100.9", "198.51.100.9"),  # spoofed leftmost entry ignored
        ("*", "198.51.100.9", "198.51.100.9"),
        ("127.0.0.1", "127.0.0.1, 198.51.100.9", "198.51.100.9"),
        ("127.0.0.1,10.0.0.0/8", "198.51.100.9, 10.1.2.3", "198.51.100.9"),  # a listed inner proxy is skipped
        ("127.0.0.1,10.0.0.0/8", "10.9.9.9, 10.1.2.3", "10.9.9.9"),  # all listed: the leftmost
        ("::1", "2001:db8::1, [2001:db8::2]:443", "2001:db8::2"),
    ],
)
def test_client_is_the_rightmost_untrusted_entry(allowed: str, forwarded_for: str, client: str) -> None:
    assert TrustedProxies(allowed).client_host(forwarded_for) == client


def test_headers_only_from_a_trusted_peer() -> None:
    proxies = TrustedProxies("127.0.0.1")
    headers = [(b"x-forwarded-for", b"198.51.100.9"), (b"x-forwarded-proto", b"https")]
    assert proxies.resolve(("127.0.0.1", 1), "http", headers, websocket=False) == (("198.51.100.9", 0), "https")
    assert proxies.resolve(("127.0.0.1", 1), "ws", headers, websocket=True) == (("198.51.100.9", 0), "wss")
    assert proxies.resolve(("203.0.113.1", 1), "http", headers, websocket=False) == (("203.0.113.1", 1), "http")
    bogus = [(b"x-forwarded-proto", b"gopher")]
    assert proxies.resolve(("127.0.0.1", 1), "http", bogus, websocket=False) == (("127.0.0.1", 1), "http")
