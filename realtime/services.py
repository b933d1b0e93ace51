"""Writes that consumers and views share (HackSoft style: ``<entity>_<action>``)."""

from __future__ import annotations

import uuid
from typing import Any

from django.utils import timezone

from realtime.models import ConnectionSession


async def connection_session_open(
    *, session_id: uuid.UUID, user: Any, server_id: str, remote_addr: str, origin: str, user_agent: str
) -> ConnectionSession:
    return await ConnectionSession.objects.acreate(
        id=session_id,
        user=user,
        server_id=server_id[:200],
        remote_addr=remote_addr[:64],
        origin=origin[:255],
        user_agent=user_agent[:512],
    )


async def connection_session_close(
    *, session_id: uuid.UUID, close_code: int | None, close_reason: str, messages_in: int, messages_out: int
) -> None:
    await ConnectionSession.objects.filter(pk=session_id, disconnected_at__isnull=True).aupdate(
        disconnected_at=timezone.now(),
        close_code=close_code,
        close_reason=close_reason[:123],
        messages_in=messages_in,
        messages_out=messages_out,
    )
