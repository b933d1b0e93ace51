"""The production server: uvicorn with websockets' Sans-I/O protocol, closed where the contract needs it.

uvicorn + ``websockets-sansio`` was chosen by measurement (docs/decisions.md). Three
gaps between it and PROTOCOL.md are closed here, by subclassing rather than by
touching framing or handshake parsing, which stay in the ``websockets`` library:

- an unsupported ``Sec-WebSocket-Version`` gets 426 with ``Sec-WebSocket-Version: 13``
  (RFC 6455 section 4.4) instead of a plain 400;
- a message over the size limit is closed with 1009 reason ``message_too_large``;
- server shutdown closes with 1012 reason ``service_restart``;
- invalid UTF-8 in a text frame closes with 1007 and one warning line, not a traceback
  per message (a client could otherwise flood the log).
"""

from __future__ import annotations

import asyncio
import http
import logging
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.exceptions import InvalidHeaderValue
from websockets.frames import CloseCode as WsCloseCode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from realtime.protocol.close_codes import CloseCode, CloseReason

logger = logging.getLogger("realtime.server")


class ContractServerProtocol(ServerProtocol):
    def accept(self, request: Request) -> Response:
        response = super().accept(request)
        exc = self.handshake_exc
        if (
            response.status_code == http.HTTPStatus.BAD_REQUEST
            and isinstance(exc, InvalidHeaderValue)
            and exc.name == "Sec-WebSocket-Version"
        ):
            response = self.reject(
                http.HTTPStatus.UPGRADE_REQUIRED, "Unsupported WebSocket version: this server speaks version 13.\n"
            )
            response.headers["Sec-WebSocket-Version"] = "13"
        return response

    def fail(self, code: WsCloseCode | int, reason: str = "") -> None:
        if code == CloseCode.MESSAGE_TOO_BIG:
            reason = CloseReason.MESSAGE_TOO_LARGE.value
        super().fail(code, reason)


class RealtimeWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.conn = ContractServerProtocol(
            extensions=self.conn.available_extensions,
            max_size=config.ws_max_size,
            logger=logging.getLogger("uvicorn.error"),
        )

    def shutdown(self) -> None:
        if self.handshake_complete and not self.close_sent and not self.transport.is_closing():
            self.stop_keepalive()
            code, reason = int(CloseCode.SERVICE_RESTART), CloseReason.SERVICE_RESTART.value
            self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
            self.conn.send_close(code, reason)
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()
            return
        super().shutdown()

    def send_receive_event_to_app(self) -> None:
        # uvicorn's own version, except for the invalid-UTF-8 branch.
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return
        if self.curr_msg_data_type == "text":
            try:
                text = data.decode()
            except UnicodeDecodeError as exc:
                logger.warning("closing connection: invalid UTF-8 in a text frame at byte %d", exc.start)
                self.conn.fail(WsCloseCode.INVALID_DATA, "invalid_utf8")
                self.handle_parser_exception()
                return
            self.queue.put_nowait({"type": "websocket.receive", "text": text})
        else:
            self.queue.put_nowait({"type": "websocket.receive", "bytes": data})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()
