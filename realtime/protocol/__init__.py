"""The realtime protocol core: pure and synchronous, no Django, Channels, asyncio or sockets.

- ``envelope``: parse client envelopes, render ``ack``/``error``/push frames
- ``errors``: ``ErrorCode`` and the ``ProtocolError`` hierarchy
- ``close_codes``: ``CloseCode``, ``CloseReason`` and the table tying them
- ``schemas`` / ``events``: each client event's data schema and permission
- ``sequence``: ``seq`` tracking and the retransmission reply cache
- ``session``: ``ProtocolSession``, one connection's protocol state
"""

from realtime.protocol.close_codes import CLOSE_CODE_FOR, CloseCode, CloseReason
from realtime.protocol.envelope import PROTOCOL_VERSION, render_ack, render_error, render_push
from realtime.protocol.errors import ErrorCode, ProtocolError
from realtime.protocol.session import Command, Immediate, ProtocolSession

__all__ = [
    "CLOSE_CODE_FOR",
    "PROTOCOL_VERSION",
    "CloseCode",
    "CloseReason",
    "Command",
    "ErrorCode",
    "Immediate",
    "ProtocolError",
    "ProtocolSession",
    "render_ack",
    "render_error",
    "render_push",
]
