"""Medians of ``loadtests.bench`` runs: ``python -m loadtests.summarize RESULTS.jsonl``.

Groups the JSON lines by mode, target and parameters and prints, per group, the median
(and the range) of each headline figure over its runs, as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from typing import Any

HEADLINES: dict[str, list[str]] = {
    "throughput": ["msgs_per_s", "msgs_per_server_cpu_s", "server_cpu_pct", "loadgen_cpu_pct", "cpu0_busy_pct"],
    "latency": [
        "latency.p50_ms",
        "latency.p95_ms",
        "latency.p99_ms",
        "sent_rate",
        "open_seconds",
        "server_cpu_pct",
        "cpu0_busy_pct",
    ],
    "idle-memory": ["kb_per_conn", "open_seconds", "opens_per_s", "rss_before_kb", "rss_after_kb"],
    "active-memory": ["kb_per_conn", "idle_kb_per_conn", "latency.p50_ms", "latency.p99_ms"],
    "fanout": [
        "deliveries_per_s",
        "deliveries_per_server_cpu_s",
        "latency.p50_ms",
        "latency.p99_ms",
        "deliveries_missing",
        "server_cpu_pct",
    ],
    "publish": ["acks_per_s", "acks_per_server_cpu_s", "ack_latency.p50_ms", "ack_latency.p99_ms", "server_cpu_pct"],
    "scaling": [
        "levels.0.msgs_per_s",
        "levels.1.msgs_per_s",
        "levels.2.msgs_per_s",
        "levels.0.msgs_per_server_cpu_s",
        "levels.1.msgs_per_server_cpu_s",
        "levels.2.msgs_per_server_cpu_s",
        "levels.2.open_seconds",
    ],
    "churn": ["cycles_per_s", "slope_kb_per_1000_cycles", "rss_start_kb", "rss_after_warmup_kb", "rss_end_kb"],
}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
    elif isinstance(value, list) and prefix.startswith("levels."):
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = value
    return out


def summarize(lines: list[dict[str, Any]]) -> str:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in lines:
        params = json.dumps(record.get("params", {}), sort_keys=True)
        groups[(record["mode"], record["target"], params)].append(record)
    rows = ["| mode | target | params | runs | figure | median | min .. max |", "|---|---|---|---|---|---|---|"]
    for (mode, target, params), records in groups.items():
        ok = [flatten(r["results"]) for r in records if r.get("ok")]
        for key in HEADLINES.get(mode, []):
            values = [r[key] for r in ok if isinstance(r.get(key), int | float)]
            if not values:
                continue
            median = statistics.median(values)
            rows.append(
                f"| {mode} | {target} | `{params}` | {len(ok)}/{len(records)} | {key} | "
                f"{median:g} | {min(values):g} .. {max(values):g} |"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    lines: list[dict[str, Any]] = []
    for path in args.files:
        with open(path) as handle:
            lines += [json.loads(line) for line in handle if line.strip().startswith("{")]
    print(summarize(lines))


if __name__ == "__main__":
    main()
