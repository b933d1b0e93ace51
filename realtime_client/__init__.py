"""An asyncio client of the realtime protocol v1, importable without Django (docs/client.md).

- ``client``: :class:`RealtimeClient` (connection task, calls, subscriptions, reconnects)
- ``outbox``: queued calls, the in-flight window, retries and replies (composed by the client)
- ``dispatch``: routing server frames to the outbox, subscriptions and ``on_push``
- ``subscription`` / ``reorder``: offset-ordered, duplicate-free iterators with gap filling
- ``calls`` / ``ids``: pending calls, retry bookkeeping, idempotency ids
- ``backoff`` / ``flow`` / ``codes``: reconnect delays, ``flow.pause`` gate, close-code policy
- ``connection``: opening one WebSocket and reading its welcome
- ``errors``: the :class:`RealtimeError` hierarchy
"""

from realtime_client.backoff import Backoff
from realtime_client.client import RealtimeClient
from realtime_client.codes import CloseCode, State
from realtime_client.errors import (
    ClientClosed,
    ConnectionLost,
    MessageTooLarge,
    NotRecovered,
    RealtimeError,
    ServerError,
)
from realtime_client.subscription import Subscription

__all__ = [
    "Backoff",
    "ClientClosed",
    "CloseCode",
    "ConnectionLost",
    "MessageTooLarge",
    "NotRecovered",
    "RealtimeClient",
    "RealtimeError",
    "ServerError",
    "State",
    "Subscription",
]
