"""realtime.server.wire.wire_bytes: the process-wide broadcast frame cache is bounded in bytes (issue 13)."""

from __future__ import annotations

from websockets.frames import Frame, Opcode

from realtime.server import wire as connection_io
from realtime.server.wire import WIRE_CACHE_BYTES, WIRE_CACHE_SIZE, wire_bytes, wire_cache, wire_cache_bytes


def _expected(text: str) -> bytes:
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


def test_a_broadcast_text_is_framed_once_and_served_from_the_cache():
    """Section 11: the same str reaching many subscribers is framed once"""
    text = "x" * 1000
    first = wire_bytes(text)
    assert first == _expected(text)
    assert wire_bytes(text) is first


def test_the_cache_holds_at_most_its_byte_bound_of_texts_and_frames():
    """Issue 13: hundreds of MB of replies must not stay pinned in the frame cache"""
    texts = [str(i % 10) * 600_000 for i in range(40)]  # 1.2 MB each with its frame
    for text in texts:
        assert wire_bytes(text) == _expected(text)
        assert wire_cache_bytes() <= WIRE_CACHE_BYTES
        assert len(wire_cache) <= WIRE_CACHE_SIZE
    assert wire_cache_bytes() == sum(len(t) + len(w) for t, w in wire_cache.values())
    assert any(entry[0] is texts[-1] for entry in wire_cache.values())  # the newest is kept


def test_a_frame_too_big_to_keep_is_not_cached_at_all():
    """Issue 13: one huge frame does not evict every broadcast frame nor pin its bytes"""
    small = "s" * 100
    wire_bytes(small)
    huge = "h" * (WIRE_CACHE_BYTES // 2)
    assert wire_bytes(huge) == _expected(huge)
    assert all(entry[0] is not huge for entry in wire_cache.values())
    assert any(entry[0] is small for entry in wire_cache.values())
    assert connection_io.wire_cache_bytes() <= WIRE_CACHE_BYTES
