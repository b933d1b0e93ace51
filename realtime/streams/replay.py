"""Replay, then live: how a new subscription catches up from the log to the hub's head.

Pages are bounded by the connection's page size and, adaptively, by ``page_bytes``; each
frame waits for room in the connection's queue, so a reading client is never closed as a
slow consumer by a replay, however large its events. The subscription turns live with no
await between the last comparison with the head and the flag, so the hub's next delivery
reaches it exactly once.
"""

from __future__ import annotations

import logging

from realtime.streams.hub_state import LogReader, StreamState, Subscription, reset_frame

logger = logging.getLogger("realtime.fanout")

FIRST_REPLAY_PAGE = 16  # until the events' size is known


async def replay_then_live(sub: Subscription, streams: dict[str, StreamState], log: LogReader, page_bytes: int) -> None:
    """Read ``sub``'s stream from its offset to the hub's head into its connection, then mark it
    live; stop quietly if it is detached or the hub stops following the stream meanwhile."""
    state = streams.get(sub.stream)
    conn = sub.conn
    limit = min(conn.replay_page_size(), FIRST_REPLAY_PAGE)
    while sub.active and state is not None and streams.get(sub.stream) is state:
        head = state.head if state.head is not None else sub.offset
        if sub.offset >= head:
            sub.live = True  # no await since the comparison: nothing can slip between
            return
        page = await log.read_since(sub.stream, sub.offset, min(limit, head - sub.offset))
        if not sub.active:
            return
        if not page or page[0].offset > sub.offset + 1:
            _replay_hole(sub, state)  # offsets up to the head are committed: they are gone
            return
        size = 0
        for event in page:
            frame = event.frame
            if not await conn.wait_for_room(1, len(frame)) or not sub.active:
                return
            if event.offset > sub.offset + 1:
                break  # a hole inside the page: the next read starts at it
            if event.offset == sub.offset + 1:
                sub.offset = event.offset
                conn.enqueue(frame)
                size += len(frame)
        average = max(1, size // len(page))
        limit = max(1, min(conn.replay_page_size(), page_bytes // average))


def _replay_hole(sub: Subscription, state: StreamState) -> None:
    """The log lacks offsets the replay needs: go live from the head, saying so (as an ack
    with ``recovered: false`` would have)."""
    assert state.head is not None
    logger.warning(
        "replay found events missing from the log",
        extra={"event": "stream_hole", "stream": sub.stream, "from": sub.offset + 1, "to": state.head},
    )
    sub.offset = state.head
    sub.live = True
    sub.push(reset_frame(sub.stream, state.head, state.epoch))
