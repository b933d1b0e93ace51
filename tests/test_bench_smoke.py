"""CI smoke run of the benchmark harness: every mode runs with tiny parameters and reports.

It asserts only that each run completes and prints one valid JSON line with the expected
keys, never a timing: figures belong in docs/performance.md, not in CI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable

SMALL = ["--conns", "20", "--duration", "0.5", "--warmup", "0.2", "--settle", "0.2", "--warm", "5"]
STREAMS = ["--subscribers", "20", "--publishers", "2", "--window", "2", "--cycles", "20", "--concurrency", "4"]
RESULT_KEYS = {
    "latency": {"latency", "sent_rate"},
    "throughput": {"msgs_per_s", "error_replies"},
    "scaling": {"levels", "msgs_per_s", "relative_to_first"},
    "idle-memory": {"kb_per_conn", "open_seconds", "opens_per_server_cpu_s", "rss_before_kb", "rss_after_kb"},
    "active-memory": {"kb_per_conn", "rss_active_peak_kb", "latency", "rss_slope_kb_per_min"},
    "fanout": {"deliveries_per_s", "latency", "deliveries_missing"},
    "publish": {"acks_per_s", "offsets_gapless", "ack_latency"},
    "churn": {"cycles", "slope_kb_per_1000_cycles", "rss_end_kb"},
}


def run_bench(*args: str, timeout: float = 60.0) -> list[dict[str, object]]:
    proc = subprocess.run(
        [PYTHON, "-m", "loadtests.bench", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert lines, proc.stderr[-3000:]
    return lines


def check_record(record: dict[str, object], mode: str, target: str) -> None:
    assert record["mode"] == mode
    assert record["target"] == target
    assert record["ok"] is True, record.get("error")
    for key in ("params", "results", "server", "date", "machine"):
        assert key in record
    results = record["results"]
    assert isinstance(results, dict)
    assert RESULT_KEYS[mode] <= results.keys(), results.keys()
    server = record["server"]
    assert isinstance(server, dict)
    assert isinstance(server["rss_start_kb"], int)


def test_every_mode_runs_and_reports() -> None:
    """Performance: Latency, Memory per connection, Memory growth, Connection scaling, Message
    throughput -> the benchmark behind each row (latency, idle/active memory, churn and the
    steady run's RSS slope, scaling, throughput, fan-out, publish) runs and reports; the
    figures themselves are in docs/performance.md, never asserted in CI."""
    modes = list(RESULT_KEYS)
    records = run_bench(
        *modes, "--one-server", *SMALL, *STREAMS, "--levels", "5,20", "--inflight", "20", "--rate", "200"
    )
    assert [r["mode"] for r in records] == modes
    for record in records:
        check_record(record, str(record["mode"]), "realtime")
    server = records[0]["server"]
    assert isinstance(server, dict)
    assert server["env"]["REALTIME_RATE_LIMIT"] == "0"


@pytest.mark.parametrize("mode", ["throughput", "idle-memory"])
def test_raw_target_runs_and_reports(mode: str) -> None:
    (record,) = run_bench(mode, "--target", "raw", *SMALL, timeout=30.0)
    check_record(record, mode, "raw")
