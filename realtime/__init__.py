"""The realtime app. ``realtime.publish`` and friends load lazily (:mod:`realtime.publishing`), so
``import realtime`` stays cheap and works before Django is set up."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from realtime.publishing import PublishRefused, aposition, apublish, position, publish

__all__ = ["PublishRefused", "aposition", "apublish", "position", "publish"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from realtime import publishing

        return getattr(publishing, name)
    raise AttributeError(f"module 'realtime' has no attribute {name!r}")
