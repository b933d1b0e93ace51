"""The contract's stream namespaces (docs/protocol.md section 4), declared like any app's.

- ``room:NAME``: NAME matches ``[a-z0-9_-]{1,64}``; any authenticated user subscribes and
  publishes with ``message.send``; keeps presence.
- ``user:ID``: only user ID subscribes; reached by ``message.direct`` and the server.
- ``resource:ID``: any authenticated user subscribes; exists only with its resource
  (``not_found`` otherwise, and nothing is created); published by ``resource.update``.
"""

from __future__ import annotations

from typing import Any

from realtime.namespaces import Namespace, anyone, register_namespace
from realtime.protocol.streams import StreamName
from realtime.selectors import resource_exists

ID = r"[1-9][0-9]{0,18}"


def own_user_stream(user: Any, stream: StreamName) -> bool:
    return stream.readable_by(user.pk)


def resource_row_exists(stream: StreamName) -> bool:
    return resource_exists(int(stream.key))


register_namespace(
    Namespace(
        "room",
        r"[a-z0-9_-]{1,64}",
        can_publish=anyone,
        presence=True,
        uses_database=False,
        shape="room:NAME ([a-z0-9_-]{1,64})",
        description="chat rooms: anyone subscribes and sends",
    )
)
register_namespace(
    Namespace(
        "user",
        ID,
        can_subscribe=own_user_stream,
        uses_database=False,
        shape="user:ID",
        refusal="{stream} belongs to another user",
        description="one user's direct messages and notifications",
    )
)
register_namespace(
    Namespace(
        "resource",
        ID,
        exists=resource_row_exists,
        uses_database=False,
        shape="resource:ID",
        missing="resource {key} does not exist",
        description="a resource's versions",
    )
)
