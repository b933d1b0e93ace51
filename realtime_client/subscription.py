"""One stream subscription: an async iterator of push frames in offset order across reconnects."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from realtime_client.calls import Outcome
from realtime_client.errors import NotRecovered, RealtimeError
from realtime_client.reorder import Frame, ReorderBuffer

if TYPE_CHECKING:
    from typing import Self

logger = logging.getLogger("realtime_client")

HISTORY_PAGE = 1000
FILL_RETRY_DELAY = 0.5


class Owner(Protocol):
    """What a subscription needs from its client."""

    def send_internal(self, event: str, data: dict[str, Any], on_done: Outcome) -> None: ...

    def forget(self, subscription: Subscription, *, unsubscribe: bool) -> None: ...


class Phase(Enum):
    SUBSCRIBING = "subscribing"  # the first stream.subscribe is not acked yet: frames are held
    LIVE = "live"
    RESUMING = "resuming"  # re-subscribed after a reconnect, waiting for the ack
    ENDED = "ended"


class _End:
    def __init__(self, error: RealtimeError | None) -> None:
        self.error = error


class Subscription(AsyncIterator[Frame]):
    """Push frames of ``stream`` (``{"event","stream","offset","data"}``), each offset once, in order.

    The iterator ends (``StopAsyncIteration``) after :meth:`unsubscribe` or ``client.close()``,
    and raises :class:`RealtimeError` when the subscription cannot go on: ``not_recovered``
    when a resume is answered ``recovered: false``, or the reason the client stopped.
    """

    def __init__(
        self, owner: Owner, stream: str, since: int | None, epoch: str | None = None, presence: bool = False
    ) -> None:
        self._owner = owner
        self.stream = stream
        self.since = since
        self.epoch: str | None = epoch
        self.wants_presence = presence  # ask for presence pushes and signals on every (re)subscribe
        # Where delivery began: ``since``, or the head the first ack reported (None until then).
        # Unlike last_offset, frames read with the ack do not move it.
        self.start_offset: int | None = None
        self.phase = Phase.SUBSCRIBING
        self._buffer = ReorderBuffer()
        self._queue: asyncio.Queue[Frame | _End] = asyncio.Queue()
        self._filling = False
        self._fill_timer: asyncio.TimerHandle | None = None
        self.fills = 0
        self.resumes = 0
        # Presence-enabled streams (issue 17): user id -> {"id","username","sessions","meta"}, kept
        # current by presence.state (a whole snapshot, after every (re)subscribe) and
        # presence.join / presence.leave; ``presence_degraded`` while the server's broker is away.
        self.presence: dict[int, dict[str, Any]] = {}
        self.presence_degraded = False

    def __repr__(self) -> str:
        return f"<Subscription {self.stream} last_offset={self.last_offset} {self.phase.value}>"

    @property
    def last_offset(self) -> int | None:
        """The offset of the last frame handed to the iterator (or the starting position)."""
        return self._buffer.last

    @property
    def duplicates_dropped(self) -> int:
        return self._buffer.duplicates

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Frame:
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # every later __anext__ ends the same way
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item

    async def unsubscribe(self) -> None:
        """Stop following the stream; the iterator ends after the frames already delivered."""
        if self.phase is not Phase.ENDED:
            self.end(None)
            self._owner.forget(self, unsubscribe=True)

    # Called by the client ---------------------------------------------------------------

    def subscribe_data(self) -> dict[str, Any]:
        """``stream.subscribe`` data: the first subscribe, or a resume from the last offset."""
        if self.phase is Phase.SUBSCRIBING:
            first: dict[str, Any] = {"stream": self.stream}
            if self.since is not None:
                first["since"] = self.since
                if self.epoch is not None:  # a snapshot's position: refuse to replay another epoch
                    first["epoch"] = self.epoch
            if self.wants_presence:
                first["presence"] = True
            return first
        data: dict[str, Any] = {"stream": self.stream, "since": self.last_offset}
        if self.epoch is not None:
            data["epoch"] = self.epoch
        if self.wants_presence:
            data["presence"] = True
        return data

    def subscribed(self, ack: dict[str, Any]) -> None:
        """The ack of the first subscribe or of a resume."""
        if self.phase is Phase.ENDED:
            return
        resuming = self.phase is Phase.RESUMING
        if (resuming or self.since is not None) and not ack.get("recovered", True):
            self.end(NotRecovered(data={"stream": self.stream, "since": self.last_offset or self.since}))
            self._owner.forget(self, unsubscribe=True)
            return
        self.epoch = ack.get("epoch", self.epoch)
        self.phase = Phase.LIVE
        if not resuming:
            start = self.since if self.since is not None else int(ack["offset"])
            self.start_offset = start
            self._deliver(self._buffer.start(start))
        self._check_gap()

    def reset(self, data: dict[str, Any]) -> None:
        """``stream.reset``: like a resume answered ``recovered: false``; the application reloads."""
        if self.phase is Phase.ENDED:
            return
        self.end(NotRecovered(data={"stream": self.stream, "since": self.last_offset, "reset_at": data.get("offset")}))
        self._owner.forget(self, unsubscribe=True)

    def presence_push(self, event: str, data: dict[str, Any]) -> None:
        """``presence.state`` replaces the map; ``presence.join`` adds or updates, ``presence.leave``
        removes (both may repeat what the map already says: applying them twice is harmless)."""
        users = [u for u in data.get("users", []) if isinstance(u, dict) and isinstance(u.get("id"), int)]
        if event == "presence.state":
            self.presence = {u["id"]: u for u in users}
            self.presence_degraded = bool(data.get("degraded", False))
        elif event == "presence.join":
            self.presence.update({u["id"]: u for u in users})
        elif event == "presence.leave":
            for user in users:
                self.presence.pop(user["id"], None)

    def resuming(self) -> None:
        """A new connection: the client re-subscribes from :attr:`last_offset`."""
        if self.phase is Phase.LIVE:
            self.phase = Phase.RESUMING
            self.resumes += 1
        self._filling = False
        self._cancel_fill_timer()

    def push(self, frame: Frame) -> None:
        if self.phase is Phase.ENDED:
            return
        self._deliver(self._buffer.add(frame))
        self._check_gap()

    def end(self, error: RealtimeError | None) -> None:
        if self.phase is not Phase.ENDED:
            self.phase = Phase.ENDED
            self._cancel_fill_timer()
            self._queue.put_nowait(_End(error))

    # Gap filling --------------------------------------------------------------------------

    def _deliver(self, frames: list[Frame]) -> None:
        for frame in frames:
            self._queue.put_nowait(frame)

    def _check_gap(self) -> None:
        gap = self._buffer.gap
        if gap is None or self._filling or self.phase is not Phase.LIVE or self._fill_timer is not None:
            return
        self._filling = True
        self.fills += 1
        logger.info("filling %s offsets %d..%d from history", self.stream, gap[0], gap[1] - 1)
        since = self._buffer.last
        data = {"stream": self.stream, "since": since, "limit": HISTORY_PAGE}
        self._owner.send_internal("stream.history", data, lambda ack, error: self._filled(since, ack, error))

    def _filled(self, since: int | None, ack: Any, error: RealtimeError | None) -> None:
        self._filling = False
        if self.phase is not Phase.LIVE:
            return  # a reconnect's resume replays what is missing
        if error is None:
            for frame in ack.get("events", []):
                self._deliver(self._buffer.add(frame))
        if self._buffer.gap is not None and self._buffer.last == since:
            # No progress (history not readable yet, or the call failed): try again shortly.
            loop = asyncio.get_running_loop()
            self._fill_timer = loop.call_later(FILL_RETRY_DELAY, self._fill_again)
            return
        self._check_gap()

    def _fill_again(self) -> None:
        self._fill_timer = None
        self._check_gap()

    def _cancel_fill_timer(self) -> None:
        if self._fill_timer is not None:
            self._fill_timer.cancel()
            self._fill_timer = None
