"""GroupCommit: many concurrent publishes, one transaction (issue 7's persisted-publish target).

A :class:`DbBatcher` of publishes: they wait while the database thread commits the
previous batch, then go together through :meth:`EventLog.append_each`. At low load a batch is one publish
and nothing is delayed; under load the cost of a commit is shared. Every publish's
future resolves only after its batch committed, so acks still follow the commit. A
publish whose data cannot be stored is refused alone (its caller gets the error) and the
rest of its batch still commits in one transaction. If a batch fails as a whole (say an
idempotency key raced with another process), each of its publishes is retried alone, so
one bad request cannot fail the others.
"""

from __future__ import annotations

from channels.db import database_sync_to_async

from realtime.loop.local import LoopLocal
from realtime.streams.db_batch import DbBatcher
from realtime.streams.event_log import Appended, AppendRequest, EventLog

_append_batch = database_sync_to_async(EventLog.append_each)
_append_one = database_sync_to_async(EventLog.append)


class GroupCommit(DbBatcher[AppendRequest, Appended]):
    def __init__(self) -> None:
        # Looked up at call time (not bound here), so tests can stand in for the database.
        super().__init__(lambda requests: _append_batch(requests), retry_alone=_append_alone)

    async def append(self, request: AppendRequest) -> Appended:
        return await self.submit(request)


async def _append_alone(request: AppendRequest) -> Appended:
    sender, client_id = request.key if request.key else (None, None)
    result: Appended = await _append_one(
        request.stream, request.event, request.data, sender_id=sender, client_id=client_id
    )
    return result


_instances: LoopLocal[GroupCommit] = LoopLocal(lambda loop: GroupCommit())


def get_group_commit() -> GroupCommit:
    return _instances.get()
