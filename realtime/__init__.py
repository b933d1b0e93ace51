"""The realtime app. ``realtime.publish`` and friends load lazily (:mod:`realtime.publishing`), so
``import realtime`` stays cheap and works before Django is set up. So do the declarations of
stream namespaces (:mod:`realtime.namespaces`) and client events (:mod:`realtime.client_events`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from realtime.client_events import ClientConnection, client_event
    from realtime.namespaces import Namespace, register_namespace
    from realtime.publishing import PublishRefused, aposition, apublish, position, publish

__all__ = [
    "ClientConnection",
    "Namespace",
    "PublishRefused",
    "aposition",
    "apublish",
    "client_event",
    "position",
    "publish",
    "register_namespace",
]

_HOMES = {
    "ClientConnection": "realtime.client_events",
    "client_event": "realtime.client_events",
    "Namespace": "realtime.namespaces",
    "register_namespace": "realtime.namespaces",
}


def __getattr__(name: str) -> Any:
    if name in __all__:
        from importlib import import_module

        return getattr(import_module(_HOMES.get(name, "realtime.publishing")), name)
    raise AttributeError(f"module 'realtime' has no attribute {name!r}")
