"""The client's exceptions: one hierarchy, every one a :class:`RealtimeError`.

    RealtimeError(code, data)        anything a call or a subscription can fail with
    ├── ServerError                  the server answered ``error`` (code and data from the frame)
    ├── ConnectionLost               closed for good: the server refused or ended the session
    │                                (invalid_token, missing_token, token_expired, account_disabled,
    │                                kicked, connection_closed, idle_timeout, ...)
    ├── ClientClosed                 ``closed``: the application closed the client first
    ├── MessageTooLarge              ``message_too_large``: the call is bigger than the server accepts
    └── NotRecovered                 ``not_recovered``: a resume was answered ``recovered: false``

``RealtimeError("not_recovered")`` and ``NotRecovered()`` are the same error; code is
always the wire word, so ``except RealtimeError as e: if e.code == ...`` works everywhere.
"""

from __future__ import annotations

from typing import Any


class RealtimeError(Exception):
    """A call or subscription that cannot complete; ``code`` is the protocol's word for why."""

    def __init__(self, code: str, data: dict[str, Any] | None = None) -> None:
        self.code = code
        self.data: dict[str, Any] = dict(data or {})
        message = self.data.get("message")
        super().__init__(f"{code}: {message}" if message else code)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.data!r})"


class ServerError(RealtimeError):
    """The server replied ``error`` to the call; ``data`` is the error frame's data."""


class ConnectionLost(RealtimeError):
    """The connection ended and the client will not reconnect (its code names the close reason)."""


class ClientClosed(RealtimeError):
    """The application closed the client before the call completed."""

    def __init__(self, code: str = "closed", data: dict[str, Any] | None = None) -> None:
        super().__init__(code, data)


class MessageTooLarge(RealtimeError):
    """The call's frame is over the server's ``max_message_bytes``; it is never retried."""

    def __init__(self, code: str = "message_too_large", data: dict[str, Any] | None = None) -> None:
        super().__init__(code, data)


class NotRecovered(RealtimeError):
    """A subscription could not resume from its offset (history pruned, or the stream's epoch changed)."""

    def __init__(self, code: str = "not_recovered", data: dict[str, Any] | None = None) -> None:
        super().__init__(code, data)
