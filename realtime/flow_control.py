"""SendQueue: the bounded per-connection outbox (PROTOCOL.md section 9). Pure: no I/O."""

from __future__ import annotations

from collections import deque


class SendQueue:
    """Frames waiting for one connection's transport, bounded by count and by bytes.

    ``put`` refuses (returns False) when either bound would be passed: the caller then
    closes the connection with 1013 ``slow_consumer`` and the client resumes from its
    offsets, so nothing is lost. A broadcast puts the same ``str`` object in many
    queues; only its length is counted per queue.
    """

    __slots__ = ("_frames", "bytes", "high_water", "max_bytes", "max_frames")

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self._frames: deque[str] = deque()
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.bytes = 0
        self.high_water = 0

    def put(self, frame: str) -> bool:
        size = len(frame)
        if len(self._frames) >= self.max_frames or (self._frames and self.bytes + size > self.max_bytes):
            return False
        self._frames.append(frame)
        self.bytes += size
        if len(self._frames) > self.high_water:
            self.high_water = len(self._frames)
        return True

    def pop(self) -> str:
        frame = self._frames.popleft()
        self.bytes -= len(frame)
        return frame

    def clear(self) -> None:
        self._frames.clear()
        self.bytes = 0

    def has_room(self, frames: int) -> bool:
        """Whether ``frames`` more frames fit below the frame bound (used to pace replays)."""
        return len(self._frames) + frames <= self.max_frames

    def __len__(self) -> int:
        return len(self._frames)

    def __bool__(self) -> bool:
        return bool(self._frames)
