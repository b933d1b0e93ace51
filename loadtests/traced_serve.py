"""``manage.py serve`` under tracemalloc, for allocation-site diffs (``bench --tracemalloc``).

    BENCH_TRACEMALLOC_DIR=/tmp/x python -m loadtests.traced_serve --host 127.0.0.1 --port 0

Runs the unchanged server command in this process after ``tracemalloc.start()``; each
SIGUSR2 runs a full collection (frozen objects included) and writes a snapshot to
``$BENCH_TRACEMALLOC_DIR/snapshot-N.pickle``. tracemalloc slows the server and adds its own
memory, so RSS and timings of such runs are not figures; only the diff of allocation sites is.
"""

from __future__ import annotations

import gc
import itertools
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

import orjson

SNAPSHOT_SIGNAL = signal.SIGUSR2


def snapshot_path(directory: str, n: int) -> Path:
    return Path(directory) / f"snapshot-{n}.pickle"


def top_diff(before: Path, after: Path, limit: int = 25) -> list[dict[str, object]]:
    """The allocation sites (file:line) whose live memory grew most between two snapshots."""
    old, new = tracemalloc.Snapshot.load(str(before)), tracemalloc.Snapshot.load(str(after))
    rows: list[dict[str, object]] = []
    for stat in new.compare_to(old, "lineno")[:limit]:
        frame = stat.traceback[0]
        rows.append(
            {
                "site": f"{frame.filename.rsplit('site-packages/', 1)[-1]}:{frame.lineno}",
                "size_diff_kb": round(stat.size_diff / 1024, 1),
                "count_diff": stat.count_diff,
            }
        )
    return rows


def take_snapshot(path: Path) -> None:
    """Collect, then write a tracemalloc snapshot of what is still alive to ``path``.

    The server's gc policy freezes survivors, and a collection never reaches frozen cycles:
    unfreeze for the collection (as the policy's reclaim does), then freeze again if it was on.
    """
    frozen = gc.get_freeze_count() > 0
    gc.unfreeze()
    gc.collect()  # count live objects only, not cycles the collector has not reached yet
    if frozen:
        gc.freeze()
    tracemalloc.take_snapshot().dump(f"{path}.tmp")
    os.replace(f"{path}.tmp", path)


def main() -> None:
    directory = os.environ["BENCH_TRACEMALLOC_DIR"]
    tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "1")))
    numbers = itertools.count(1)

    def dump(signum: int, frame: FrameType | None) -> None:
        take_snapshot(snapshot_path(directory, next(numbers)))

    signal.signal(SNAPSHOT_SIGNAL, dump)
    from django.core.management import execute_from_command_line

    sys.stderr.write(orjson.dumps({"msg": "tracemalloc on", "dir": directory}).decode() + "\n")
    execute_from_command_line(["manage.py", "serve", *sys.argv[1:]])


if __name__ == "__main__":
    main()
