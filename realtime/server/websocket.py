"""The production server's WebSocket connection: the ASGI ``websocket`` interface.

:class:`WebSocketConnection` is the ASGI side of a connection whose I/O is
:class:`~realtime.server.websocket_wire.WebSocketWire` (the ``websockets`` Sans-I/O
protocol, the contract's close codes, the close handshake kept while a client still sends,
the ping limit and keepalive). It answers the handshake the application decides
(``websocket.accept`` with a subprotocol and headers, ``websocket.close`` before accepting
is 403, an application that fails before accepting gets 500), delivers messages through a
receive queue that allocates nothing while idle (reading pauses while a message waits),
sends through the protocol, closes with the application's code and reason (aborting if the
client's reply does not come within ``close_timeout``) and, on server shutdown, closes with
1012 ``service_restart``.

The scope offers the extension ``realtime.send_now`` (docs/protocol.md, "Server
extension"), a synchronous ``send(text) -> bool`` that writes a text frame at once when the
transport can take it and returns False otherwise (then the app awaits the ordinary
``send``, which waits for room). The handshake's request, response and header list are
released once the connection is accepted (the app reads headers in ``connect``, before it
accepts), and the object has ``__slots__``: memory per idle connection is the budget.
"""

from __future__ import annotations

import http
import logging
from typing import Any
from urllib.parse import unquote

from websockets.exceptions import InvalidState
from websockets.http11 import Request

from realtime.protocol.close_codes import CloseCode, CloseReason
from realtime.server.extensions import SEND_NOW
from realtime.server.state import ClientDisconnected, Message
from realtime.server.websocket_wire import WebSocketWire

logger = logging.getLogger("realtime.server")

__all__ = ["WebSocketConnection"]


class WebSocketConnection(WebSocketWire):
    __slots__ = ()

    # Shutdown

    def shutdown(self) -> None:
        self.stop_keepalive()
        transport = self.transport
        if self.handshake_complete and not self.close_sent and not transport.is_closing():
            code, reason = int(CloseCode.SERVICE_RESTART), CloseReason.SERVICE_RESTART.value
            self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
            self.conn.send_close(code, reason)
            self.close_sent = True
            self.write_pending()
        elif not self.handshake_complete:
            self.send_500()
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        transport.close()

    # The application

    def handle_connect(self, request: Request) -> None:
        response = self.conn.accept(request)
        if response.status_code != 101:
            self.handshake_done()
            self.close_sent = True
            self.conn.send_response(response)
            self.write_pending()
            self.transport.close()
            return
        self.response = response
        headers = [(name.encode("ascii"), value.encode("latin-1")) for name, value in request.headers.raw_items()]
        raw_path, _, query = request.path.partition("?")
        subprotocols = [
            token.strip()
            for header in request.headers.get_all("Sec-WebSocket-Protocol")
            for token in header.split(",")
            if token.strip()
        ]
        # websockets' parser keeps its Request as a local for the connection's lifetime:
        # empty its headers so that they are not kept too.
        request.headers.clear()
        self.scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": self.scheme,
            "server": self.server,
            "client": self.client,
            "root_path": "",
            "path": unquote(raw_path),
            "raw_path": raw_path.encode("ascii", "replace"),
            "query_string": query.encode("ascii", "replace"),
            "headers": headers,
            "subprotocols": subprotocols,
            "extensions": {SEND_NOW: {"send": self.send_now}},
        }
        self.queue.put_nowait({"type": "websocket.connect"})
        self.state.start(self.run_asgi(self.scope))

    async def run_asgi(self, scope: dict[str, Any]) -> None:
        try:
            await self.state.app(scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except Exception:
            logger.exception("exception in the ASGI application")
            self.send_500()
        else:
            if not self.handshake_complete:
                logger.error("the ASGI application returned without completing the handshake")
                self.send_500()
        self.scope = None
        if self.close_timer is None:
            self.transport.close()

    def send_500(self) -> None:
        if self.handshake_complete:
            return
        self.handshake_done()
        self.close_sent = True
        self.conn.send_response(self.conn.reject(http.HTTPStatus.INTERNAL_SERVER_ERROR, "Internal Server Error"))
        self.write_pending()

    async def receive(self) -> Message:
        message = await self.queue.get()
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            if not self.write_paused and not self.transport.is_closing():
                self.transport.resume_reading()
        return message

    async def send(self, message: Message) -> None:
        if self.write_paused:
            await self.writable.wait()
        if self.disconnected:
            raise ClientDisconnected
        kind = message["type"]
        if not self.handshake_complete:
            if kind == "websocket.accept":
                self.accept(message)
            elif kind == "websocket.close":
                self.queue.put_nowait({"type": "websocket.disconnect", "code": 1006})
                self.handshake_done()
                self.close_sent = True
                self.conn.send_response(self.conn.reject(http.HTTPStatus.FORBIDDEN, ""))
                self.write_pending()
                self.transport.close()
            else:
                raise RuntimeError(f"expected 'websocket.accept' or 'websocket.close', got {kind!r}")
        elif not self.close_sent:
            try:
                if kind == "websocket.send":
                    data = message.get("bytes")
                    if data is not None:
                        self.conn.send_binary(data)
                    else:
                        self.conn.send_text(message["text"].encode())
                    self.write_pending()
                elif kind == "websocket.close":
                    self.close(int(message.get("code") or 1000), message.get("reason") or "")
                else:
                    raise RuntimeError(f"expected 'websocket.send' or 'websocket.close', got {kind!r}")
            except InvalidState as exc:
                raise ClientDisconnected from exc
        else:
            raise RuntimeError(f"{kind!r} sent after the connection was closed")

    def accept(self, message: Message) -> None:
        response = self.response
        assert response is not None
        assert self.scope is not None
        for name, value in message.get("headers") or ():
            response.headers[name.decode("latin-1")] = value.decode("latin-1")
        if message.get("subprotocol"):
            response.headers["Sec-WebSocket-Protocol"] = message["subprotocol"]
        if self.transport.is_closing():
            return
        self.handshake_done()
        self.conn.send_response(response)
        self.write_pending()
        self.start_keepalive()
        # The handshake's data is no longer needed (the app read its headers in connect).
        response.headers.clear()
        self.response = None
        self.scope["headers"].clear()

    def close(self, code: int, reason: str) -> None:
        if self.transport.is_closing():
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.write_pending()
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            if not self.write_paused:
                self.transport.resume_reading()
        # Aborted, not closed, when it times out: a graceful close waits for the write
        # buffer to drain, forever for a peer that stopped reading.
        self.close_timer = self.loop.call_later(self.state.settings.close_timeout, self.transport.abort)
