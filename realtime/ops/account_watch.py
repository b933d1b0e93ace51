"""AccountWatch: make open sessions follow their account: deactivation, password, staff status.

The admin, a shell or another service may change a user anywhere; the database is the
one place every server can see it. Each server checks the users it has connections for
every ``INTERVAL`` seconds, one query for all of them, and

- closes their sessions with 4403 ``account_disabled`` when the account is inactive or
  its password hash changed since the connection authenticated (a password change ends
  every session; the tokens issued before it are refused too, accounts/tokens.py);
- tells every other session the account's staff flag, so staff-only events are
  ``forbidden`` from the next message after a demotion and allowed after a promotion,
  on every server, within ``INTERVAL`` plus one query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from channels.db import database_sync_to_async

from accounts.models import User

logger = logging.getLogger("realtime.accounts")

# PROTOCOL.md section 11: "within 2 seconds"; the query takes milliseconds.
INTERVAL = 1.5

# Shared, never mutated: a pass allocates nothing per connection.
STAFF = {"type": "staff", "is_staff": True}
NOT_STAFF = {"type": "staff", "is_staff": False}


class Watched(Protocol):
    user_id: int
    password_hash: str

    def control(self, message: dict[str, object]) -> None: ...


def _accounts(user_ids: list[int]) -> dict[int, tuple[bool, str, bool]]:
    rows = User.objects.filter(pk__in=user_ids).values_list("pk", "is_active", "password", "is_staff")
    return {pk: (active, password, staff) for pk, active, password, staff in rows}


accounts_of = database_sync_to_async(_accounts)


class AccountWatch:
    def __init__(self, connections: Callable[[], Iterable[Watched]]) -> None:
        self._connections = connections
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def check(self) -> int:
        """One pass: close what must be closed; returns how many sessions were told to close."""
        connections = list(self._connections())
        if not connections:
            return 0
        accounts = await accounts_of(sorted({c.user_id for c in connections}))
        closed = 0
        for conn in connections:
            active, password, staff = accounts.get(conn.user_id, (False, "", False))
            if not active or password != conn.password_hash:
                conn.control({"type": "kick", "reason": "account_disabled"})
                closed += 1
            else:
                conn.control(STAFF if staff else NOT_STAFF)
        if closed:
            logger.info("closed sessions of disabled or changed accounts", extra={"sessions": closed})
        return closed

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(INTERVAL)
            try:
                await self.check()
            except Exception:
                logger.warning("account check failed", exc_info=True)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
