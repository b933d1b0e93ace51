"""DbBatcher: requests that arrive while the database thread is busy go to it together.

Channels runs ORM work on one thread per process (``database_sync_to_async``), so a
burst of 500 connections opening means 500 round trips through that thread and, on
SQLite, 500 commits. A batcher queues requests while one batch is on the thread and
hands the next batch over in one call, usually one transaction: at low load a batch is
a single request and nothing waits; under load the cost of a round trip and a commit is
shared. Each caller's future resolves with its own result only after its batch
returned, so "written" still means committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

from channels.db import database_sync_to_async

Request = TypeVar("Request")
Result = TypeVar("Result")


class DbBatcher(Generic[Request, Result]):
    """``run`` takes a list of requests on the database thread and returns one result per request, in order."""

    def __init__(self, run: Callable[[list[Request]], list[Result]], max_batch: int = 500) -> None:
        self._run = database_sync_to_async(run)
        self._max_batch = max_batch
        self._pending: list[tuple[Request, asyncio.Future[Result]]] = []
        self._running = False
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, request: Request) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if not self._running:
            self._running = True
            self._drainer = asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while True:
                # One turn of the event loop first: callers released by the previous batch
                # (whose next request is usually ready) join this one instead of the next.
                await asyncio.sleep(0)
                if not self._pending:
                    return
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
                try:
                    results = await self._run([request for request, _ in batch])
                except BaseException as exc:  # every waiter learns why its batch failed
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._running = False
