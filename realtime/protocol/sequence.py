"""Per-connection ``seq`` tracking and the reply cache for retransmissions (section 5).

The cache remembers the last :data:`REPLY_CACHE_SIZE` sequence numbers, as the contract
requires, but keeps their reply texts only while together they fit in ``max_bytes``
(PROTOCOL.md section 11: every cached reply counts against a byte bound). The newest
reply is always kept, whatever its size. A retransmission of a remembered ``seq`` whose
text was dropped for size is :data:`SeqVerdict.EVICTED`: it was processed and is not
processed again, but its original reply can no longer be sent.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

REPLY_CACHE_SIZE = 100
DEFAULT_REPLY_CACHE_BYTES = 1_048_576


class SeqVerdict(Enum):
    ACCEPT = "accept"  # the next expected seq (or the connection's first): process it
    RETRANSMIT = "retransmit"  # already processed: answer with the cached reply
    EVICTED = "evicted"  # already processed, but its reply was dropped to bound the cache's bytes
    GAP = "gap"  # numbers were skipped: refuse, name the expected seq
    STALE = "stale"  # a retransmission older than the cache: refuse, name the expected seq


@dataclass(slots=True)
class SequenceTracker:
    """Accepts contiguous ``seq`` values; the first one a connection sends sets the start."""

    max_bytes: int = DEFAULT_REPLY_CACHE_BYTES
    expected: int | None = None
    # seq -> reply text, or None once the text was dropped for size; oldest first.
    _replies: dict[int, str | None] = field(default_factory=dict)
    _kept: deque[int] = field(default_factory=deque)  # seqs whose text is kept, oldest first
    _bytes: int = 0

    def check(self, seq: int) -> SeqVerdict:
        if self.expected is None or seq == self.expected:
            return SeqVerdict.ACCEPT
        if seq > self.expected:
            return SeqVerdict.GAP
        if seq not in self._replies:
            return SeqVerdict.STALE
        return SeqVerdict.RETRANSMIT if self._replies[seq] is not None else SeqVerdict.EVICTED

    def record(self, seq: int, reply: str) -> None:
        """Remember the reply to an accepted ``seq`` and move past it."""
        self.expected = seq + 1
        self._replies[seq] = reply
        self._kept.append(seq)
        self._bytes += len(reply)
        if len(self._replies) > REPLY_CACHE_SIZE:
            self._forget(next(iter(self._replies)))
        # Drop the oldest texts until the rest fit; the newest stays even when it alone does not.
        while self._bytes > self.max_bytes and len(self._kept) > 1:
            oldest = self._kept.popleft()
            text = self._replies.get(oldest)
            if text is not None:
                self._bytes -= len(text)
                self._replies[oldest] = None

    def _forget(self, seq: int) -> None:
        text = self._replies.pop(seq)
        if text is not None:
            self._bytes -= len(text)
            self._kept.remove(seq)  # the oldest kept text, when it is kept: the deque's head

    def cached_reply(self, seq: int) -> str:
        reply = self._replies[seq]
        if reply is None:
            raise KeyError(seq)
        return reply

    @property
    def cached_bytes(self) -> int:
        """Characters of reply text held (the JSON is ASCII unless users wrote other scripts)."""
        return self._bytes

    @property
    def in_use(self) -> bool:
        return self.expected is not None
