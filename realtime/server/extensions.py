"""ASGI extensions the transport offers the application, by the names a consumer looks up.

Kept apart from the protocol classes so that a consumer can name them without importing the
server (the same consumer runs under daphne for ``runserver``, where no extension is offered).
"""

# ``scope["extensions"][SEND_NOW]["send"](text) -> bool``: write a text frame synchronously when
# nothing is queued ahead of it and the transport has room; False means "use the ASGI send".
SEND_NOW = "realtime.send_now"
