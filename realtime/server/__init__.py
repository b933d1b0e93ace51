"""The transport: the processes, sockets, HTTP and WebSocket protocol objects that run the ASGI
application (``manage.py serve``). It knows nothing of consumers or streams' contents; the
consumer reaches it only through the ASGI interface and the ``realtime.send_now`` extension.
It imports no server library: it owns the transport (docs/decisions.md)."""
