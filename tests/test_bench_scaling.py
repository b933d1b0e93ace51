"""The ``scaling`` benchmark keeps the same total in flight at every connection count.

Otherwise its levels would not compare: with one message per connection at least, 10,000
connections would carry five times the load of 2,000 in flight. It also has to spread that
load over every connection, not keep a few busy while the rest idle. Only the harness's own
bookkeeping is asserted, never a timing.
"""

from __future__ import annotations

import pytest

from tests.test_bench_smoke import run_bench


@pytest.mark.parametrize("target", ["realtime", "raw"])
def test_scaling_keeps_the_total_in_flight_and_uses_every_connection(target: str) -> None:
    (record,) = run_bench(
        "scaling",
        "--target",
        target,
        *("--levels", "3,8,40", "--inflight", "8", "--duration", "0.5", "--warmup", "0.3"),
        timeout=90.0,
    )
    assert record["ok"] is True, record.get("error")
    results = record["results"]
    assert isinstance(results, dict)
    rows = results["levels"]
    assert [row["conns"] for row in rows] == [3, 8, 40]
    assert [row["in_flight"] for row in rows] == [8, 8, 8]
    assert [row["max_per_conn"] for row in rows] == [3, 1, 1]
    # Fewer messages than connections: the free slot moves round robin over all of them.
    assert [row["connections_used"] for row in rows] == [3, 8, 40]
    assert all(row["unanswered"] == 0 and row["error_replies"] == 0 for row in rows)
