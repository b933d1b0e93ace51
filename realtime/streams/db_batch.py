"""DbBatcher: requests that arrive while the database thread is busy go to it together.

Channels runs ORM work on one thread per process (``database_sync_to_async``), so a
burst of 500 connections opening, or 500 publishes, means 500 round trips through that
thread and, on SQLite, 500 commits. A batcher queues requests while one batch is on the
thread and hands the next batch over in one call, usually one transaction: at low load a
batch is a single request and nothing waits; under load the cost of a round trip and a
commit is shared. Each caller's future resolves with its own result only after its batch
returned, so "written" still means committed. ``run`` may answer a request with an
exception instead of a result: that caller alone gets it (a request the batch refused
while committing the others). If a whole batch fails, ``retry_alone``
(when given) runs each of its requests on its own, so one bad request cannot fail the
others; without it every caller of the batch gets the batch's exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Request = TypeVar("Request")
Result = TypeVar("Result")

MAX_BATCH = 500


class DbBatcher(Generic[Request, Result]):
    """``run`` takes a list of requests (on the database thread) and returns one result (or the
    exception refusing it) per request, in order."""

    def __init__(
        self,
        run: Callable[[list[Request]], Awaitable[Sequence[Result | Exception]]],
        *,
        retry_alone: Callable[[Request], Awaitable[Result]] | None = None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._run = run
        self._retry_alone = retry_alone
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
                # One turn of the event loop before each batch lets every caller that the
                # previous batch released (a connection runs one command at a time and its
                # next one is usually buffered already) join this batch. Without it batches
                # alternated between nearly everyone and the few that arrived while the
                # previous one committed: twice the transactions, half the size.
                await asyncio.sleep(0)
                if not self._pending:
                    return
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
                try:
                    results = await self._run([request for request, _ in batch])
                except Exception as exc:
                    await self._failed(batch, exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._running = False

    async def _failed(self, batch: list[tuple[Request, asyncio.Future[Result]]], exc: Exception) -> None:
        for request, future in batch:
            if self._retry_alone is None:
                if not future.done():
                    future.set_exception(exc)
                continue
            try:
                result = await self._retry_alone(request)
            except Exception as alone:
                if not future.done():
                    future.set_exception(alone)
            else:
                if not future.done():
                    future.set_result(result)
