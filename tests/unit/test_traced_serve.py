"""The tracemalloc snapshots of ``loadtests/traced_serve.py`` count live objects only.

The server's garbage-collector policy (``realtime/server/gc_policy.py``) freezes what
survives, and ``gc.collect()`` never reaches frozen objects: without unfreezing first, a
snapshot would also count the reference cycles of connections that closed since the last
reclaim, so the diff of two snapshots would swing with the phase of that reclaim.
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

from loadtests.traced_serve import take_snapshot

THIS_FILE = str(Path(__file__))


def garbage_cycles(count: int) -> None:
    for _ in range(count):
        node: list[object] = [bytearray(1000)]
        node.append(node)  # a cycle: only the cyclic collector frees it


def test_snapshot_leaves_out_frozen_garbage_and_keeps_the_freeze(tmp_path: Path) -> None:
    tracemalloc.start(1)
    try:
        gc.collect()
        garbage_cycles(2000)
        gc.freeze()  # as the policy's tick does: the unreachable cycles are frozen with the rest
        path = tmp_path / "snapshot.pickle"
        take_snapshot(path)
        assert gc.get_freeze_count() > 0, "the snapshot must leave the policy's freeze in place"
        snapshot = tracemalloc.Snapshot.load(str(path))
        ours = snapshot.filter_traces([tracemalloc.Filter(True, THIS_FILE)])
        assert sum(stat.size for stat in ours.statistics("filename")) < 100_000
    finally:
        gc.unfreeze()
        gc.collect()
        tracemalloc.stop()


def test_snapshot_does_not_freeze_a_server_whose_policy_is_off(tmp_path: Path) -> None:
    tracemalloc.start(1)
    try:
        gc.unfreeze()
        take_snapshot(tmp_path / "snapshot.pickle")
        assert gc.get_freeze_count() == 0
    finally:
        tracemalloc.stop()
