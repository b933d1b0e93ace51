"""The test app's declarations: the ``todo:`` namespace and ``todo.*`` events of
docs/platform.md, plus namespaces that exercise the other rules."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from pydantic import Field

from accounts.models import User
from realtime import ClientConnection, Namespace, client_event, register_namespace
from realtime.protocol.errors import NotFound
from realtime.protocol.schemas import ClientData
from realtime.protocol.streams import StreamName

LIST = r"[a-z0-9-]{1,32}"


def todo_member(user: Any, stream: StreamName) -> bool:
    """``todo:shared-*`` is everyone's, ``todo:uID`` only user ID's. Uses the ORM (it runs in the
    database thread); ``todo:boom`` stands for a membership check that fails, ``todo:gone``
    for a list that was deleted (a protocol error the client receives as it is)."""
    if stream.key == "boom":
        raise RuntimeError("the membership service is down")
    if stream.key == "gone":
        raise NotFound("todo list gone was deleted")
    if not User.objects.filter(pk=user.pk, is_active=True).exists():
        return False
    return stream.key.startswith("shared-") or stream.key == f"u{user.pk}"


def chat_publisher(user: Any, stream: StreamName) -> bool:
    return stream.key != "readonly"


register_namespace(
    Namespace(
        "todo",
        LIST,
        can_subscribe=todo_member,
        retention=timedelta(hours=48),
        max_event_bytes=512,
        shape="todo:LIST ([a-z0-9-]{1,32})",
        refusal="{stream} is another user's list",
        description="a team's todo lists",
    )
)
# Client-publishable with message.send, except the read-only channel; kept forever.
register_namespace(Namespace("chat", r"[a-z]{1,20}", can_publish=chat_publisher, retention=None, uses_database=False))


class TodoCreate(ClientData):
    list: Annotated[str, Field(pattern=f"^{LIST}$")]
    title: Annotated[str, Field(min_length=1, max_length=200)]


class TodoGet(ClientData):
    list: Annotated[str, Field(pattern=f"^{LIST}$")]


@client_event("todo.create", schema=TodoCreate, idempotent=True)
async def todo_create(conn: ClientConnection, data: TodoCreate, ref: str | None) -> dict[str, Any]:
    stream = f"todo:{data.list}"
    offset = await conn.publish(stream, "todo.created", {"title": data.title, "by": conn.user.pk}, id=ref)
    return {"stream": stream, "offset": offset}


@client_event("todo.get", schema=TodoGet)
async def todo_get(conn: ClientConnection, data: TodoGet, ref: str | None) -> dict[str, Any]:
    raise NotFound(f"todo list {data.list} does not exist")


@client_event("todo.purge", staff_only=True)
async def todo_purge(conn: ClientConnection, data: dict[str, Any], ref: str | None) -> dict[str, Any]:
    return {"purged": True, "by": conn.connection_id}


@client_event("todo.explode")
async def todo_explode(conn: ClientConnection, data: dict[str, Any], ref: str | None) -> dict[str, Any]:
    raise RuntimeError("a bug in the team's handler")
