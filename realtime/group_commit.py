"""GroupCommit: many concurrent publishes, one transaction (issue 7's persisted-publish target).

Publishes wait in a list while the database thread commits the previous batch, then
go together through :meth:`EventLog.append_batch`. At low load a batch is one publish
and nothing is delayed; under load the cost of a commit is shared. Every publish's
future resolves only after its batch committed, so acks still follow the commit. If a
batch fails as a whole (say an idempotency key raced with another process), each of
its publishes is retried alone, so one bad request cannot fail the others.
"""

from __future__ import annotations

import asyncio
import weakref

from channels.db import database_sync_to_async

from realtime.event_log import Appended, AppendRequest, EventLog

MAX_BATCH = 500

_append_batch = database_sync_to_async(EventLog.append_batch)
_append_one = database_sync_to_async(EventLog.append)


class GroupCommit:
    def __init__(self) -> None:
        self._pending: list[tuple[AppendRequest, asyncio.Future[Appended]]] = []
        self._running = False
        self._drainer: asyncio.Task[None] | None = None

    async def append(self, request: AppendRequest) -> Appended:
        future: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if not self._running:
            self._running = True
            self._drainer = asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while True:
                # One turn of the event loop before each batch lets every publisher that the
                # previous batch's acks released (a connection runs one command at a time and
                # its next one is usually buffered already) join this batch. Without it the
                # batches alternated between nearly all publishers and the few that arrived
                # while the previous one committed: twice the transactions, half the size.
                await asyncio.sleep(0)
                if not self._pending:
                    return
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                try:
                    results = await _append_batch([request for request, _ in batch])
                except Exception:
                    await self._one_by_one(batch)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._running = False

    @staticmethod
    async def _one_by_one(batch: list[tuple[AppendRequest, asyncio.Future[Appended]]]) -> None:
        for request, future in batch:
            try:
                sender, client_id = request.key if request.key else (None, None)
                result = await _append_one(
                    request.stream, request.event, request.data, sender_id=sender, client_id=client_id
                )
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)


_instances: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupCommit] = weakref.WeakKeyDictionary()


def get_group_commit() -> GroupCommit:
    loop = asyncio.get_running_loop()
    instance = _instances.get(loop)
    if instance is None:
        instance = _instances[loop] = GroupCommit()
    return instance
