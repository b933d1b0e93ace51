"""Smoke run of the compressed day (``loadtests/day.py``, the memory-growth row of the test plan).

A day scaled down to a few seconds must issue every kind of traffic (connects, resumes with
replay, echoes, publishes and their deliveries, token refreshes, history reads), report the
RSS figures and finish without a single error. Figures are never asserted: they belong in
docs/performance.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
SMALL_DAY = ["--minutes", "0.05", "--stable", "30", "--rooms", "3", "--scale", "0.002", "--sample", "0.5"]
RSS_KEYS = {
    "rss_fresh_kb",
    "rss_stable_open_kb",
    "rss_after_warmup_kb",
    "rss_end_kb",
    "rss_after_close_kb",
    "rss_steady_min_max_kb",
    "rss_slope_kb_per_hour",
    "rss_slope_kb_per_day",
    "rss_slope_stderr_kb_per_day",
    "rss_samples",
}


def run_day(*extra: str) -> dict[str, Any]:
    proc = subprocess.run(
        [PYTHON, "-m", "loadtests.day", *SMALL_DAY, *extra], cwd=REPO, capture_output=True, text=True, timeout=55
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    (record,) = lines
    assert proc.returncode == 0, (record, proc.stderr[-3000:])
    assert record["mode"] == "day"
    assert record["ok"] is True
    results: dict[str, Any] = record["results"]
    assert results["errors"] == {}, results["first_errors"]
    return results


@pytest.mark.timeout(60)
def test_compressed_day_runs_without_errors() -> None:
    """Performance: Memory growth (24 hours, stable connections) -> the compressed day runs
    every kind of traffic, reports RSS and its slope, and counts no error of any kind."""
    results = run_day()
    assert results["close_codes"] == {}
    assert results.keys() >= RSS_KEYS
    assert all(isinstance(results[key], int) for key in ("rss_fresh_kb", "rss_end_kb", "rss_after_close_kb"))
    issued, day = results["issued"], results["day"]
    assert issued["connects"] == day["stable"] + day["sessions"]
    assert issued["reconnects"] == issued["resumes"] == day["sessions"] - day["visits"]
    assert issued["token_refreshes"] == issued["auth.refresh"] == day["token_refreshes"]
    assert issued["history_reads"] == day["history_reads"]
    assert issued["message.send"] == day["stable_publishes"] + day["sessions"]
    assert issued["echo"] == day["stable_echoes"] + 2 * day["sessions"]
    assert issued["deliveries"] >= issued["message.send"] * day["stable"] // day["rooms"]
    assert results["tracemalloc_top"] is None


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_compressed_day_under_tracemalloc_lists_the_sites_that_grew() -> None:
    """Memory growth -> ``--tracemalloc`` runs the same day on a traced server and reports
    the allocation sites that grew after the warm-up."""
    top = run_day("--tracemalloc", "1")["tracemalloc_top"]
    assert isinstance(top, list)
    assert top
    assert top[0].keys() >= {"site", "size_diff_kb", "count_diff"}
