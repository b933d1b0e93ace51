"""Per-connection ``seq`` tracking and the reply cache for retransmissions (section 5)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

REPLY_CACHE_SIZE = 100


class SeqVerdict(Enum):
    ACCEPT = "accept"  # the next expected seq (or the connection's first): process it
    RETRANSMIT = "retransmit"  # already processed: answer with the cached reply
    GAP = "gap"  # numbers were skipped: refuse, name the expected seq
    STALE = "stale"  # a retransmission older than the cache: refuse, name the expected seq


@dataclass(slots=True)
class SequenceTracker:
    """Accepts contiguous ``seq`` values; the first one a connection sends sets the start."""

    expected: int | None = None
    _replies: dict[int, str] = field(default_factory=dict)

    def check(self, seq: int) -> SeqVerdict:
        if self.expected is None or seq == self.expected:
            return SeqVerdict.ACCEPT
        if seq > self.expected:
            return SeqVerdict.GAP
        return SeqVerdict.RETRANSMIT if seq in self._replies else SeqVerdict.STALE

    def record(self, seq: int, reply: str) -> None:
        """Remember the reply to an accepted ``seq`` and move past it."""
        self.expected = seq + 1
        self._replies[seq] = reply
        self._replies.pop(seq - REPLY_CACHE_SIZE, None)

    def cached_reply(self, seq: int) -> str:
        return self._replies[seq]

    @property
    def in_use(self) -> bool:
        return self.expected is not None
