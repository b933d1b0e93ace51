"""HTTP endpoints of the realtime service: health, readiness, and the plain-HTTP answer on /ws/."""

from __future__ import annotations

import asyncio

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from realtime.streams.bus import broker_ping

# /readyz must answer within 10 s of a failure (PROTOCOL.md section 1); each probe gets less.
PROBE_TIMEOUT = 3.0


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _database_ping() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _database_state() -> str:
    try:
        await asyncio.wait_for(database_sync_to_async(_database_ping)(), PROBE_TIMEOUT)
    except Exception:
        return "unavailable"
    return "ok"


async def _broker_state() -> str:
    layer = get_channel_layer()
    if layer is None:
        return "unavailable"
    if not getattr(settings, "REDIS_URL", ""):  # the in-memory layer lives in this process
        return "ok"
    # Two tries: after a broker restart the client may hold one stale connection first.
    for _ in range(2):
        try:
            await asyncio.wait_for(broker_ping(), PROBE_TIMEOUT)
        except Exception:  # noqa: S112 - any failure means "not ready"; try a fresh connection
            continue
        return "ok"
    return "unavailable"


async def readyz(request: HttpRequest) -> JsonResponse:
    database, broker = await asyncio.gather(_database_state(), _broker_state())
    ok = database == "ok" and broker == "ok"
    return JsonResponse({"database": database, "broker": broker}, status=200 if ok else 503)


def websocket_required(request: HttpRequest) -> JsonResponse:
    response = JsonResponse(
        {
            "code": "upgrade_required",
            "message": "this endpoint speaks WebSocket only: send an Upgrade: websocket handshake",
        },
        status=426,
    )
    response["Upgrade"] = "websocket"
    response["Connection"] = "Upgrade"
    return response
