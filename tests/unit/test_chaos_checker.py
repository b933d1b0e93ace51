"""The chaos soak's checker (loadtests/chaos/checker.py): each delivery rule catches its violation.

Risks: Message ordering, No built-in delivery guarantees (the checker is what proves them).
"""

from __future__ import annotations

from loadtests.chaos.checker import Ack, LoggedEvent, SubscriptionRecord, check


def _log(stream: str, head: int, sender: int = 1) -> list[LoggedEvent]:
    return [LoggedEvent(stream, offset, sender, f"c-{stream}-{offset}") for offset in range(1, head + 1)]


def test_a_clean_run_has_no_violation() -> None:
    log = _log("room:a", 5)
    acks = [Ack(1, "c-room:a-3", "room:a", 3)]
    subs = [
        SubscriptionRecord("lib0", "room:a", 0, [1, 2, 3, 4, 5]),
        SubscriptionRecord("raw1", "room:a", 2, [3, 4, 5]),
    ]
    verdict = check(log, acks, subs)
    assert verdict.ok, verdict.violations
    assert verdict.deliveries == 8
    assert verdict.as_dict()["violation_count"] == 0


def test_a_gap_a_duplicate_and_reordering_are_each_reported() -> None:
    log = _log("room:a", 4)
    subs = [
        SubscriptionRecord("gap", "room:a", 0, [1, 3, 4]),
        SubscriptionRecord("dup", "room:a", 0, [1, 2, 2, 3, 4]),
        SubscriptionRecord("order", "room:a", 0, [2, 1, 3, 4]),
        SubscriptionRecord("short", "room:a", 0, [1, 2]),
    ]
    problems = "\n".join(check(log, [], subs).violations)
    assert "gap: expected offset 2, got 3" in problems
    assert "offset 2 delivered twice" in problems
    assert "expected offset 1, got 2" in problems
    assert "missing offsets 3..4 at the end" in problems


def test_an_acked_publish_missing_or_elsewhere_in_the_log_is_reported() -> None:
    log = _log("room:a", 2)
    acks = [Ack(1, "lost", "room:a", 7), Ack(1, "c-room:a-1", "room:a", 2)]
    problems = check(log, acks, []).violations
    assert any("'lost'" in p and "stored: nowhere" in p for p in problems)
    assert any("'c-room:a-1'" in p and "room:a@1" in p for p in problems)


def test_a_publish_stored_twice_and_holes_in_the_log_are_reported() -> None:
    log = [
        LoggedEvent("room:a", 1, 1, "x"),
        LoggedEvent("room:a", 3, 1, "x"),
        LoggedEvent("room:b", 1, 2, None),
        LoggedEvent("room:b", 1, 2, None),
    ]
    problems = "\n".join(check(log, [], []).violations)
    assert "publish 'x' of user 1 stored 2 times" in problems
    assert "room:a: the log has holes at offsets [2]" in problems
    assert "room:b: offsets stored twice: [1]" in problems


def test_a_subscription_that_ended_early_is_a_violation() -> None:
    subs = [SubscriptionRecord("lib0", "room:a", 0, [1], ended="not_recovered")]
    assert check(_log("room:a", 1), [], subs).violations == ["lib0 room:a: subscription ended early: not_recovered"]
