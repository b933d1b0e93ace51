"""``stream.history`` pages bounded in bytes as well as in events (PROTOCOL.md sections 4 and 11).

A page holds the events after ``since``, oldest first, at most ``limit`` of them and at
most ``budget`` bytes of push frames; a single event larger than the budget still goes
alone. Rows are read from the database a few at a time and reading stops at the budget,
so a page of huge events never brings more than a few of them into memory. ``more`` says
whether events after the page's last one exist: the next row was read and left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from channels.db import database_sync_to_async

from realtime.models import Event
from realtime.streams.event_log import CommittedEvent

# Rows fetched per database round trip: one row may be ~400 KB (65,536 escaped characters),
# so a chunk holds at most ~13 MB; a page of 1,000 small events is ~32 round trips.
_CHUNK = 32
# The ack around the frames: {"event":"ack","ref":…,"seq":…,"data":{"stream":…,"events":[…],"more":false}},
# with room for a 64-character ref of escaped control characters.
_ENVELOPE_BYTES = 512


@dataclass(frozen=True, slots=True)
class HistoryPage:
    frames: list[str]  # each exactly the push frame subscribers received
    more: bool

    def ack(self, stream: str) -> dict[str, object]:
        # Fragments splice the already rendered frames into the ack: no second rendering.
        return {"stream": stream, "events": [orjson.Fragment(frame) for frame in self.frames], "more": self.more}


def _size(frame: str) -> int:
    return len(frame) if frame.isascii() else len(frame.encode())


def history_page(stream: str, since: int, limit: int, budget: int) -> HistoryPage:
    rows = (
        Event.objects.filter(stream__name=stream, offset__gt=since)
        .order_by("offset")
        .values_list("offset", "event", "data")[: limit + 1]
    )
    frames: list[str] = []
    room = budget - _ENVELOPE_BYTES - len(stream)
    for offset, name, data in rows.iterator(chunk_size=_CHUNK):
        if len(frames) == limit:
            return HistoryPage(frames, more=True)
        frame = CommittedEvent(stream, offset, name, data).frame
        room -= _size(frame) + 1  # and its comma
        if room < 0 and frames:
            return HistoryPage(frames, more=True)
        frames.append(frame)
    return HistoryPage(frames, more=False)


ahistory_page = database_sync_to_async(history_page)
