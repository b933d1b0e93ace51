"""Request bodies, bounded before Django buffers them (issue 13).

Django's ``ASGIHandler`` reads a request's whole body (into memory, then a temporary file)
before any view runs, and ``DATA_UPLOAD_MAX_MEMORY_SIZE`` applies only to some later reads;
so a 1 GB ``POST`` would be read whole. :class:`BodyLimitMiddleware` sits in front of
Django: a ``POST``, ``PUT`` or ``PATCH`` (every endpoint that takes a body: login,
refresh, resources, the admin's forms) may carry up to ``REALTIME_MAX_REQUEST_BODY_BYTES``,
any other method none. A declared ``Content-Length`` past the bound is answered 413 before
a byte of the body is read; a body without one (chunked) is counted as it streams and
answered 413 as soon as it passes the bound, with Django told the client went away.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# Django's handler types its callables more narrowly than this module needs to.
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
TOO_LARGE_BODY = b'{"code": "payload_too_large", "message": "request body too large"}'


async def send_413(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(TOO_LARGE_BODY)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": TOO_LARGE_BODY})


def declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length``; -1 when it is not a number (refused as too large)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return None


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        bound = self.max_body_bytes if scope.get("method") in METHODS_WITH_BODY else 0
        length = declared_length(scope)
        if length is not None and not 0 <= length <= bound:
            await send_413(send)
            return
        received = 0
        refused = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > bound:
                    # Django stops reading and answers nothing; this middleware answers.
                    refused = True
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counting_receive, tracking_send)
        if refused and not started:
            await send_413(send)
