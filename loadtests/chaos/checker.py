"""The chaos soak's verdict: what every client saw, checked against the database log.

Pure functions over plain records, so the rules are unit-tested without servers
(``tests/unit/test_chaos_checker.py``). The rules are the delivery guarantees of the
protocol (docs/protocol.md, "Delivery guarantees"):

- the log of each stream holds offsets 1..head with no gap;
- no publish (one user's client ``id``) is stored twice;
- every acked publish is in the log exactly once, at the offset its ack named;
- every subscription saw every offset after the one it started from, up to the
  stream's head at the end of the run, in order, each exactly once.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One row of the event log."""

    stream: str
    offset: int
    sender_id: int | None
    client_id: str | None


@dataclass(frozen=True, slots=True)
class Ack:
    """A publish the server acknowledged to a client."""

    user_id: int
    client_id: str
    stream: str
    offset: int


@dataclass(slots=True)
class SubscriptionRecord:
    """The offsets one subscription handed to its application, in the order it did."""

    client: str
    stream: str
    start: int  # the offset the subscription started after
    received: list[int] = field(default_factory=list)
    ended: str | None = None  # why the subscription ended early, if it did


@dataclass(slots=True)
class Verdict:
    streams: int = 0
    events: int = 0
    acks: int = 0
    subscriptions: int = 0
    deliveries: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "streams": self.streams,
            "events": self.events,
            "acks": self.acks,
            "subscriptions": self.subscriptions,
            "deliveries": self.deliveries,
            "violations": self.violations[:50],
            "violation_count": len(self.violations),
        }


def _describe_sequence(received: list[int], start: int, head: int) -> str:
    """The first way ``received`` differs from ``start+1 .. head``."""
    expected = start + 1
    seen: set[int] = set()
    for position, offset in enumerate(received):
        if offset in seen:
            return f"offset {offset} delivered twice (at position {position})"
        if offset != expected:
            if offset > expected:
                return f"gap: expected offset {expected}, got {offset}"
            return f"out of order: expected offset {expected}, got {offset}"
        seen.add(offset)
        expected += 1
    if expected <= head:
        return f"missing offsets {expected}..{head} at the end (head {head})"
    return f"offsets past the head {head}"


def check(
    log: list[LoggedEvent],
    acks: list[Ack],
    subscriptions: list[SubscriptionRecord],
) -> Verdict:
    verdict = Verdict(acks=len(acks), subscriptions=len(subscriptions), events=len(log))
    by_stream: dict[str, list[int]] = defaultdict(list)
    by_key: dict[tuple[int, str], list[LoggedEvent]] = defaultdict(list)
    at: dict[tuple[str, int], LoggedEvent] = {}
    for row in log:
        by_stream[row.stream].append(row.offset)
        at[(row.stream, row.offset)] = row
        if row.client_id is not None and row.sender_id is not None:
            by_key[(row.sender_id, row.client_id)].append(row)
    verdict.streams = len(by_stream)
    heads: dict[str, int] = {}
    for stream, offsets in sorted(by_stream.items()):
        counts = Counter(offsets)
        doubled = sorted(o for o, n in counts.items() if n > 1)
        if doubled:
            verdict.violations.append(f"{stream}: offsets stored twice: {doubled[:10]}")
        heads[stream] = max(offsets)
        missing = sorted(set(range(1, heads[stream] + 1)) - set(offsets))
        if missing:
            verdict.violations.append(f"{stream}: the log has holes at offsets {missing[:10]}")
    for (sender, client_id), rows in sorted(by_key.items()):
        if len(rows) > 1:
            places = ", ".join(f"{r.stream}@{r.offset}" for r in rows)
            verdict.violations.append(f"publish {client_id!r} of user {sender} stored {len(rows)} times: {places}")
    for ack in acks:
        found = at.get((ack.stream, ack.offset))
        if found is None or found.sender_id != ack.user_id or found.client_id != ack.client_id:
            stored = by_key.get((ack.user_id, ack.client_id), [])
            where = ", ".join(f"{r.stream}@{r.offset}" for r in stored) or "nowhere"
            verdict.violations.append(
                f"acked publish {ack.client_id!r} of user {ack.user_id} at {ack.stream}@{ack.offset} "
                f"is not in the log there (stored: {where})"
            )
    for sub in subscriptions:
        verdict.deliveries += len(sub.received)
        if sub.ended is not None:
            verdict.violations.append(f"{sub.client} {sub.stream}: subscription ended early: {sub.ended}")
            continue
        head = heads.get(sub.stream, 0)
        if sub.received != list(range(sub.start + 1, head + 1)):
            problem = _describe_sequence(sub.received, sub.start, head)
            verdict.violations.append(f"{sub.client} {sub.stream} (from {sub.start}): {problem}")
    return verdict
