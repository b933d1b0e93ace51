"""realtime.protocol.sequence: PROTOCOL.md section 5, sequence_gap and retransmissions."""

from __future__ import annotations

import pytest

from realtime.protocol.sequence import REPLY_CACHE_SIZE, SequenceTracker, SeqVerdict


def tracker_after(*seqs: int) -> SequenceTracker:
    tracker = SequenceTracker()
    for seq in seqs:
        assert tracker.check(seq) is SeqVerdict.ACCEPT
        tracker.record(seq, f"reply-{seq}")
    return tracker


def test_reply_cache_holds_at_least_100_replies():
    """Errors: retransmission gets the first reply for at least the last 100 messages"""
    assert REPLY_CACHE_SIZE >= 100


def test_new_tracker_is_not_in_use_and_accepts_any_first_seq():
    """Frames: once a connection uses seq ... (the first seq sets the start)"""
    tracker = SequenceTracker()
    assert not tracker.in_use
    assert tracker.expected is None
    for seq in (0, 1, 17, 2**63 - 1):
        assert tracker.check(seq) is SeqVerdict.ACCEPT


@pytest.mark.parametrize("start", [0, 1, 41, 10**12])
def test_record_moves_expected_past_the_seq(start):
    """Frames: each message must carry the previous seq + 1"""
    tracker = tracker_after(start)
    assert tracker.in_use
    assert tracker.expected == start + 1
    assert tracker.check(start + 1) is SeqVerdict.ACCEPT


def test_contiguous_seqs_are_accepted():
    """Frames: each message must carry the previous seq + 1 -> accepted in order"""
    tracker = tracker_after(*range(5, 300))
    assert tracker.expected == 300


@pytest.mark.parametrize("skip", [1, 2, 99, 10**6])
def test_seq_gap_is_reported(skip):
    """Errors: sequence_gap when seq skipped numbers; expected stays the next seq wanted"""
    tracker = tracker_after(0, 1, 2)
    assert tracker.check(3 + skip) is SeqVerdict.GAP
    # checking does not move the tracker: the skipped-to message is not processed
    assert tracker.expected == 3
    assert tracker.check(3) is SeqVerdict.ACCEPT


def test_retransmit_returns_original_reply():
    """Errors: a seq lower than expected is a retransmission and gets the reply it got the first time"""
    tracker = tracker_after(10, 11, 12)
    for seq in (10, 11, 12):
        assert tracker.check(seq) is SeqVerdict.RETRANSMIT
        assert tracker.cached_reply(seq) == f"reply-{seq}"
    assert tracker.expected == 13


def test_retransmission_within_last_100_is_cached_and_older_is_stale():
    """Errors: retransmission cached for at least the last 100 messages; older -> stale (sequence_gap)"""
    tracker = tracker_after(*range(250))
    for seq in range(250 - REPLY_CACHE_SIZE, 250):
        assert tracker.check(seq) is SeqVerdict.RETRANSMIT, seq
        assert tracker.cached_reply(seq) == f"reply-{seq}"
    for seq in (0, 1, 100, 250 - REPLY_CACHE_SIZE - 1):
        assert tracker.check(seq) is SeqVerdict.STALE, seq


def test_cache_is_bounded():
    """Errors: retransmission cache keeps the last messages only (memory per connection is bounded)"""
    tracker = tracker_after(*range(1000))
    assert len(tracker._replies) <= REPLY_CACHE_SIZE


def test_seq_below_the_first_seq_is_stale():
    """Errors: a lower seq that was never processed cannot be answered from the cache -> stale"""
    tracker = tracker_after(50, 51)
    assert tracker.check(49) is SeqVerdict.STALE
    assert tracker.check(0) is SeqVerdict.STALE


def test_trackers_are_independent():
    """Frames: seq is per connection"""
    first = tracker_after(0, 1)
    second = SequenceTracker()
    assert not second.in_use
    assert second.check(7) is SeqVerdict.ACCEPT
    assert first.expected == 2


# Issue 13: the retransmission cache is bounded in bytes too (PROTOCOL.md section 11).


def test_small_replies_keep_the_last_100_within_the_byte_bound():
    """Section 5: at least the last 100 replies are retransmitted as sent while they fit the byte bound"""
    tracker = SequenceTracker(max_bytes=100 * 20)
    for seq in range(250):
        tracker.check(seq)
        tracker.record(seq, f"reply-{seq:013d}")  # 19 characters
    assert all(tracker.check(seq) is SeqVerdict.RETRANSMIT for seq in range(150, 250))
    assert tracker.cached_reply(150) == f"reply-{150:013d}"
    assert tracker.check(149) is SeqVerdict.STALE
    assert tracker.cached_bytes == 100 * 19


def test_big_replies_are_evicted_oldest_first_past_the_byte_bound():
    """Section 11: every cached reply counts against a byte bound; the oldest texts go first"""
    tracker = SequenceTracker(max_bytes=1000)
    for seq in range(1, 11):
        tracker.record(seq, str(seq % 10) * 300)
    assert tracker.cached_bytes == 900
    assert [tracker.check(seq) for seq in (8, 9, 10)] == [SeqVerdict.RETRANSMIT] * 3
    # older ones were processed: not stale (that would ask for a resend), but their text is gone
    assert [tracker.check(seq) for seq in range(1, 8)] == [SeqVerdict.EVICTED] * 7
    with pytest.raises(KeyError):
        tracker.cached_reply(1)
    assert tracker.check(11) is SeqVerdict.ACCEPT


def test_the_newest_reply_is_kept_even_when_it_alone_exceeds_the_bound():
    """Section 11: a reply larger than the bound still answers its own retransmission"""
    tracker = SequenceTracker(max_bytes=100)
    tracker.record(1, "a" * 50)
    tracker.record(2, "b" * 500)
    assert tracker.check(2) is SeqVerdict.RETRANSMIT
    assert tracker.check(1) is SeqVerdict.EVICTED
    assert tracker.cached_bytes == 500
    tracker.record(3, "c" * 10)
    assert tracker.cached_bytes == 10
    assert (tracker.check(2), tracker.check(3)) == (SeqVerdict.EVICTED, SeqVerdict.RETRANSMIT)


def test_byte_accounting_holds_when_seqs_leave_by_count_and_by_size():
    """Section 11: the cache's byte count never drifts: it always equals the texts it holds"""
    tracker = SequenceTracker(max_bytes=5000)
    for seq in range(1000):
        tracker.record(seq, "x" * (1 + (seq * 37) % 400))
        held = [
            tracker.cached_reply(s)
            for s in range(max(0, seq - 99), seq + 1)
            if tracker.check(s) is SeqVerdict.RETRANSMIT
        ]
        assert tracker.cached_bytes == sum(map(len, held)) <= max(5000, len(held[-1]))
    assert sum(1 for s in range(1000) if tracker.check(s) is not SeqVerdict.STALE) == REPLY_CACHE_SIZE
