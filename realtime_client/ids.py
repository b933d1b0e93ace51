"""Call ids: unique per client instance and process, stable across retries. Pure.

The server de-duplicates publishes by ``(user, id)`` for at least 24 hours, so ids must
not repeat across client instances of the same user: each generator has a random prefix.
"""

from __future__ import annotations

import itertools
import secrets

MAX_ID_LENGTH = 64


class IdGenerator:
    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix if prefix is not None else f"rc-{secrets.token_hex(8)}"
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self.prefix}-{next(self._counter)}"


def check_id(value: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
        raise ValueError(f"a call id is a string of 1 to {MAX_ID_LENGTH} characters")
    return value
