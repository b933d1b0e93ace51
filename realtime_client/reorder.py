"""The reorder buffer of one subscription: offset order, no duplicates, gaps found. Pure."""

from __future__ import annotations

from typing import Any

Frame = dict[str, Any]


class ReorderBuffer:
    """Delivers push frames in offset order, each offset once.

    Until :meth:`start` gives the position (the last offset already delivered, or the
    stream's head for a live-only subscription) every frame is held. A frame whose offset
    is not above the position is a duplicate and dropped. A frame beyond the next offset
    waits; :attr:`gap` then names what is missing so the caller can fetch it from history.
    """

    def __init__(self) -> None:
        self.last: int | None = None
        self._held: dict[int, Frame] = {}
        self.duplicates = 0

    def start(self, last: int) -> list[Frame]:
        self.last = last
        return self._drain()

    def add(self, frame: Frame) -> list[Frame]:
        offset = frame.get("offset")
        if type(offset) is not int:
            return []
        if (self.last is not None and offset <= self.last) or offset in self._held:
            self.duplicates += 1
            return []
        self._held[offset] = frame
        return [] if self.last is None else self._drain()

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def gap(self) -> tuple[int, int] | None:
        """``(first missing, first held)`` when frames wait behind missing offsets."""
        if self.last is None or not self._held:
            return None
        return self.last + 1, min(self._held)

    def _drain(self) -> list[Frame]:
        assert self.last is not None
        for offset in [o for o in self._held if o <= self.last]:
            del self._held[offset]
            self.duplicates += 1
        ready: list[Frame] = []
        while (self.last + 1) in self._held:
            self.last += 1
            ready.append(self._held.pop(self.last))
        return ready
