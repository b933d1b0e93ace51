"""Small helpers shared by the benchmark modes: process facts from /proc, statistics, pinning."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

CLK_TCK = os.sysconf("SC_CLK_TCK")


def check_loopback(url: str) -> None:
    """Every benchmark talks to a server on this machine only."""
    host = urlparse(url).hostname or ""
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        raise SystemExit(f"refusing a non-loopback target: {host!r}")


def raise_nofile() -> int:
    """Raise this process's open-file limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pin_to_cpu(cpu: int) -> int | None:
    """Pin this process to ``cpu`` when the machine has it; returns the CPU or None."""
    if cpu >= (os.cpu_count() or 1):
        return None
    os.sched_setaffinity(0, {cpu})
    return cpu


def proc_status_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB, from /proc/PID/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def rss_kb(pid: int) -> int:
    return proc_status_kb(pid)["VmRSS"]


def proc_cpu_by_pid(pid: int) -> dict[int, float]:
    """User + system CPU seconds of a process and of each of its live children, from /proc.

    The children are a ``serve --workers N`` supervisor's workers (the supervisor itself
    is nearly idle); a single ``serve`` has none.
    """
    out: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(entry) == pid or int(fields[1]) == pid:
            out[int(entry)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def proc_cpu_seconds(pid: int) -> float:
    return sum(proc_cpu_by_pid(pid).values())


# Other processes whose CPU every CpuMeter reports by name (the Redis server of a
# ``--workers`` run): a cost of the service that the server's own figure leaves out.
WATCHED: dict[str, int] = {}


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_busy_ticks() -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies per CPU from /proc/stat."""
    out: dict[int, tuple[int, int]] = {}
    with open("/proc/stat") as stat:
        for line in stat:
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                ticks = [int(v) for v in values[:8]]
                idle = ticks[3] + ticks[4]
                out[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    return out


@dataclass
class CpuMeter:
    """CPU use of the server and of this load generator over a measured window, in percent of one core."""

    server_pid: int
    t0: float = 0.0
    server0: float = 0.0
    self0: float = 0.0
    cores0: dict[int, tuple[int, int]] | None = None
    by_pid0: dict[int, float] | None = None
    watched0: dict[str, float] | None = None

    def start(self) -> CpuMeter:
        self.cores0 = cpu_busy_ticks()
        self.t0 = time.monotonic()
        self.by_pid0 = proc_cpu_by_pid(self.server_pid)
        self.server0 = sum(self.by_pid0.values())
        self.watched0 = {name: proc_cpu_seconds(pid) for name, pid in WATCHED.items()}
        self.self0 = self_cpu_seconds()
        return self

    def stop(self) -> dict[str, Any]:
        wall = max(time.monotonic() - self.t0, 1e-9)
        cores1, cores0 = cpu_busy_ticks(), self.cores0 or {}
        busy = {
            f"cpu{n}_busy_pct": round(100 * (cores1[n][0] - b0) / max(1, cores1[n][1] - t0), 1)
            for n, (b0, t0) in cores0.items()
            if n in cores1
        }
        by_pid1 = proc_cpu_by_pid(self.server_pid)
        extra: dict[str, Any] = {}
        if len(by_pid1) > 1:  # a supervisor and its workers: each one's share
            before = self.by_pid0 or {}
            extra["server_cpu_pct_by_pid"] = {
                str(pid): round(100 * (cpu - before.get(pid, 0.0)) / wall, 1) for pid, cpu in by_pid1.items()
            }
        for name, pid in WATCHED.items():
            with contextlib.suppress(OSError):
                used = proc_cpu_seconds(pid) - (self.watched0 or {}).get(name, 0.0)
                extra[f"{name}_cpu_pct"] = round(100 * used / wall, 1)
        return {
            "server_cpu_pct": round(100 * (sum(by_pid1.values()) - self.server0) / wall, 1),
            "loadgen_cpu_pct": round(100 * (self_cpu_seconds() - self.self0) / wall, 1),
            **busy,
            **extra,
        }


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (nan when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(seconds: list[float]) -> dict[str, float | int]:
    """p50/p95/p99/max/mean of latencies given in seconds, reported in milliseconds."""
    values = sorted(seconds)
    if not values:
        return {"samples": 0}

    def ms(value: float) -> float:
        return round(value * 1000, 3)

    return {
        "samples": len(values),
        "p50_ms": ms(percentile(values, 50)),
        "p95_ms": ms(percentile(values, 95)),
        "p99_ms": ms(percentile(values, 99)),
        "max_ms": ms(values[-1]),
        "mean_ms": ms(sum(values) / len(values)),
    }


def slope_per_unit(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs (0 when there are fewer than two distinct xs)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def per_cpu(rate: float, cpu: dict[str, float]) -> int | None:
    """``rate`` per second of server CPU: robust to other processes sharing the server's core."""
    return round(rate / (cpu["server_cpu_pct"] / 100)) if cpu.get("server_cpu_pct") else None


def source_fingerprint(repo: Path) -> str:
    """A short hash of the server's Python sources, so a result names the code it measured.

    Other people edit the server while benchmarks run; the git commit alone would not say
    which working-tree version a run saw.
    """
    digest = hashlib.sha256()
    for package in ("realtime", "accounts", "project"):
        for path in sorted((repo / package).rglob("*.py")):
            digest.update(str(path.relative_to(repo)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
