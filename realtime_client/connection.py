"""Opening one WebSocket connection and reading its welcome; how it ended."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from realtime_client.codes import CloseCode


@dataclass(frozen=True, slots=True)
class Closed:
    """How a connection (or an attempt to open one) ended. ``code`` None: no close frame."""

    code: int | None
    reason: str | None = None
    fatal: bool = False  # an HTTP refusal that retrying cannot fix (bad URL, 403 origin, 404 path)


class ConnectFailed(Exception):
    def __init__(self, closed: Closed) -> None:
        super().__init__(f"connection failed: {closed}")
        self.closed = closed


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    open_timeout: float = 10.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    max_size: int | None = 2**24
    headers: tuple[tuple[str, str], ...] = ()


def ended(ws: ClientConnection) -> Closed:
    code = ws.close_code
    if code is None or code == CloseCode.ABNORMAL:
        return Closed(None)
    return Closed(code, ws.close_reason or None)


async def open_connection(
    url: str, token: str | None, options: ConnectOptions
) -> tuple[ClientConnection, dict[str, Any]]:
    """Connect and wait for ``session.welcome``; raises :class:`ConnectFailed` with how it ended."""
    headers = list(options.headers)
    if token:
        headers.append(("Authorization", f"Bearer {token}"))
    try:
        ws = await connect(
            url,
            additional_headers=headers,
            open_timeout=options.open_timeout,
            ping_interval=options.ping_interval,
            ping_timeout=options.ping_timeout,
            max_size=options.max_size,
            compression=None,  # the server does not negotiate it (docs/protocol.md)
            close_timeout=2.0,
        )
    except InvalidURI as exc:
        raise ConnectFailed(Closed(None, f"invalid_uri: {exc}", fatal=True)) from exc
    except InvalidStatus as exc:
        status = exc.response.status_code
        retryable = status >= 500 or status in (408, 429)
        raise ConnectFailed(Closed(None, f"http_{status}", fatal=not retryable)) from exc
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise ConnectFailed(Closed(None, type(exc).__name__)) from exc
    try:
        raw = await asyncio.wait_for(ws.recv(), options.open_timeout)
    except ConnectionClosed:
        raise ConnectFailed(ended(ws)) from None
    except TimeoutError:
        await ws.close()
        raise ConnectFailed(Closed(None, "welcome_timeout")) from None
    try:
        frame = json.loads(raw)
    except ValueError:
        frame = None
    if not isinstance(frame, dict) or frame.get("event") != "session.welcome":
        await ws.close(CloseCode.NORMAL)
        raise ConnectFailed(Closed(None, "no_welcome"))
    welcome: dict[str, Any] = frame.get("data") or {}
    return ws, welcome
