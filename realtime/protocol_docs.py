"""``/docs/protocol/`` and ``/docs/asyncapi.json``: the generated AsyncAPI document, browsable.

Both are built from :func:`asyncapi_document`, the same document ``manage.py
realtime_asyncapi`` writes. The page is a plain server-side template with inline styles and
no scripts, so it works offline and needs no CDN. The document depends only on the code,
so it is built once per process.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from realtime.client_events import protocol_table
from realtime.protocol import PROTOCOL_VERSION
from realtime.protocol.asyncapi import build_document

DEFAULT_HOST = "127.0.0.1:8000"


@cache
def _document(host: str) -> dict[str, Any]:

    return build_document(PROTOCOL_VERSION, protocol_table(), host)


def asyncapi_document(host: str = DEFAULT_HOST) -> dict[str, Any]:
    return _document(host)


def _pretty(schema: Any) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False)


def _message(document: dict[str, Any], ref: dict[str, str]) -> dict[str, Any]:
    key = ref["$ref"].rsplit("/", 1)[1]
    channel = next(iter(document["channels"].values()))
    message: dict[str, Any] = channel["messages"][key]
    return message


def _data(document: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """A frame's ``data`` schema, resolved one level so the page shows it beside the event."""
    schema: dict[str, Any] = message["payload"]["properties"]["data"]
    ref = schema.get("$ref")
    if ref is None:
        return {"name": None, "schema": _pretty(schema)}
    name = ref.rsplit("/", 1)[1]
    return {"name": name, "schema": _pretty(document["components"]["schemas"][name])}


def _page_context(document: dict[str, Any]) -> dict[str, Any]:
    sends, pushes = [], []
    for key, operation in document["operations"].items():
        message = _message(document, operation["messages"][0])
        envelope = [name for name in message["payload"]["properties"] if name != "data"]
        entry: dict[str, Any] = {
            "key": key,
            "title": operation["title"],
            "summary": operation.get("summary", ""),
            "envelope": envelope,
            "data": _data(document, message),
        }
        if operation["action"] == "send":
            entry["replies"] = [
                {"title": reply["title"], "data": _data(document, reply)}
                for reply in (_message(document, ref) for ref in operation["reply"]["messages"])
            ]
            sends.append(entry)
        else:
            pushes.append(entry)
    return {
        "info": document["info"],
        "server": next(iter(document["servers"].values())),
        "sends": sends,
        "pushes": pushes,
        "schemas": [{"name": name, "schema": _pretty(s)} for name, s in document["components"]["schemas"].items()],
        "close_codes": document["x-close-codes"],
        "error_codes": document["x-error-codes"],
    }


@require_GET
def asyncapi_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(asyncapi_document(), json_dumps_params={"indent": 2})


@require_GET
def protocol_page(request: HttpRequest) -> HttpResponse:
    response = render(request, "realtime/protocol_docs.html", _page_context(asyncapi_document()))
    # No scripts at all; the styles are inline in the page.
    response["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return response
