"""Issue 19, first bullet: a real ``manage.py serve`` freezes the collector after start-up.

With ``REALTIME_GC_TRACE`` set the server records the policy it applied (objects frozen,
thresholds) and every collection; the trace ends with the state at shutdown.
"""

from __future__ import annotations

import json
from pathlib import Path

from realtime.server.gc_policy import THRESHOLDS
from tests.e2e.conftest import ServerFactory


def test_serve_freezes_the_collector_after_startup_and_traces_collections(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    trace = tmp_path / "gc.jsonl"
    server = server_factory(REALTIME_GC_TRACE=str(trace))
    assert server.stop() == 0
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    policy = next(line for line in lines if line.get("event") == "policy")
    assert policy["freeze"] is True
    assert policy["frozen"] > 50_000  # Django, the app and the modules: never walked again
    assert policy["threshold"] == list(THRESHOLDS)
    assert any(line.get("why") == "startup" and line["gen"] == 2 for line in lines)
    assert lines[-1]["event"] == "stopped"


def test_serve_with_freeze_off_keeps_cpythons_collector(server_factory: ServerFactory, tmp_path: Path) -> None:
    """``REALTIME_GC_FREEZE=0`` keeps CPython's defaults (the load test's baseline)."""
    trace = tmp_path / "gc.jsonl"
    server = server_factory(REALTIME_GC_TRACE=str(trace), REALTIME_GC_FREEZE="0")
    assert server.stop() == 0
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    policy = next(line for line in lines if line.get("event") == "policy")
    assert policy["freeze"] is False
    assert policy["frozen"] == 0
    assert policy["threshold"] == [700, 10, 10]
