"""HeadTracker: a hub learns the committed heads of the streams it follows, independently of
the broker, and reads from the log what the broker dropped, delayed or was never given.

Once per interval (0.5 s) one query reads the heads of every followed stream
(``stream_heads``, chunked for many streams). A stream whose hub is still below a head
seen one interval earlier is read from the log up to its head now, so an event the bus
lost (channel capacity or expiry while a server stalled, a crash between commit and bus
send, a hub closed with sends queued, an idempotent retry, a publisher whose ack write is
blocked) arrives within about two intervals (1 s), with no later publish needed. Waiting one
interval leaves the broker its chance: in normal operation events are milliseconds behind
their commit, and reading them from the log as well would double the database's work.
While the broker is down (``urgent``) every stream behind is read at once: in degraded
mode the polling is still one heads query per interval for all followed streams, plus a
read only for the streams that have new events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from django.db import Error as DatabaseError

from realtime.streams.hub_state import REPLAY_PAGE, LogReader, StreamState, skip_hole

logger = logging.getLogger("realtime.fanout")

HEAD_INTERVAL = 0.5


class HeadTracker:
    def __init__(
        self,
        streams: dict[str, StreamState],
        log: LogReader,
        deliver: Callable[[str, int, str], None],
        urgent: Callable[[], bool],
        interval: float = HEAD_INTERVAL,
    ) -> None:
        self.streams = streams
        self.log = log
        self.deliver = deliver
        self.urgent = urgent
        self.interval = interval
        self.checks = 0  # head queries made (tests and metrics read it)

    async def run(self) -> None:
        seen: dict[str, int] = {}
        while True:
            await asyncio.sleep(self.interval)
            try:
                seen = await self.check(seen, urgent=self.urgent())
            except DatabaseError:
                logger.warning("reading stream heads failed", exc_info=True, extra={"event": "head_tracking"})
            except Exception:
                logger.exception("head tracking failed", extra={"event": "head_tracking"})

    async def check(self, seen: dict[str, int], *, urgent: bool) -> dict[str, int]:
        """Catch up the streams still behind a head in ``seen`` (every stream behind when
        ``urgent``); return the heads of the streams behind now, for the next check."""
        names = [key for key, state in self.streams.items() if state.head is not None]
        if not names:
            return {}
        self.checks += 1
        heads = await self.log.heads(names)
        behind: dict[str, int] = {}
        late: list[tuple[StreamState, int]] = []
        for key, head in heads.items():
            state = self.streams.get(key)
            if state is None or state.head is None or head <= state.head:
                continue
            behind[key] = head
            if urgent or state.head < seen.get(key, 0):
                late.append((state, head))
        for state, head in late:
            await self.catch_up_to(state, head)
        return behind

    async def catch_up_to(self, state: StreamState, target: int) -> None:
        key = str(state.name)
        while state.head is not None and state.head < target and self.streams.get(key) is state:
            events = await self.log.read_since(key, state.head, min(target - state.head, REPLAY_PAGE))
            if self.streams.get(key) is not state or state.head is None:
                return
            first = events[0].offset if events else target + 1
            if first > state.head + 1:  # committed up to target (the head says so), yet missing: deleted
                skip_hole(state, first - 1)
            for event in events:
                self.deliver(key, event.offset, event.frame)
            if not events:
                return
