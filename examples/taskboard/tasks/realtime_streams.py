"""The board's stream namespace and client event, found by the realtime app when Django starts.

- ``board:<id>``: members of board <id> subscribe; only the server publishes (``Task.save``).
- ``task.create`` ``{"board": <id>, "title": "..."}``: a member adds a task; the ack is the task.
"""

from __future__ import annotations

from typing import Annotated, Any

import realtime
from channels.db import database_sync_to_async
from django.db import IntegrityError
from pydantic import Field
from realtime.protocol.errors import Forbidden
from realtime.protocol.schemas import ClientData
from realtime.protocol.streams import StreamName

from tasks.models import Board, Task


def is_member(user: Any, stream: StreamName) -> bool:
    # Runs in the connection's database thread: the ORM is fine here.
    return Board.objects.filter(pk=int(stream.key), members=user).exists()


def board_exists(stream: StreamName) -> bool:
    return Board.objects.filter(pk=int(stream.key)).exists()


realtime.register_namespace(
    realtime.Namespace(
        "board",
        r"[1-9][0-9]{0,18}",
        can_subscribe=is_member,
        exists=board_exists,
        max_event_bytes=4096,
        shape="board:ID",
        refusal="{stream}: not a member of this board",
        missing="board {key} does not exist",
        description="a task board's tasks",
    )
)


class TaskCreate(ClientData):
    board: Annotated[int, Field(ge=1)]
    title: Annotated[str, Field(min_length=1, max_length=200)]


def create_task(user: Any, data: TaskCreate, ref: str | None) -> Task:
    if not Board.objects.filter(pk=data.board, members=user).exists():
        raise Forbidden(f"not a member of board {data.board}")
    if ref:
        found = Task.objects.filter(created_by=user, client_ref=ref).first()
        if found is not None:
            return found  # the same message again (a reconnect): the task it made
    try:
        return Task.objects.create(board_id=data.board, title=data.title, created_by=user, client_ref=ref or "")
    except IntegrityError:  # the same message, twice at once
        return Task.objects.get(created_by=user, client_ref=ref)


@realtime.client_event("task.create", schema=TaskCreate, idempotent=True)
async def task_create(conn: realtime.ClientConnection, data: TaskCreate, ref: str | None) -> dict[str, Any]:
    task: Task = await database_sync_to_async(create_task)(conn.user, data, ref)
    return task.as_event()
