"""The /demo/ page: a plain HTML page driving the browser client (docs/browser-client.md).

No server-side state: the page signs in with ``POST /api/auth/token/`` and talks to ``/ws/``
with ``/static/realtime/client.js``. The WebSocket's origin is the page's, so the server's
``REALTIME_ALLOWED_ORIGINS`` must list the address the page is served from.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET


@require_GET
def demo_page(request: HttpRequest) -> HttpResponse:
    response = render(request, "realtime/demo.html")
    # The page only loads its own module and styles; user text is rendered as text anyway.
    response["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    response["Cache-Control"] = "no-store"
    return response
