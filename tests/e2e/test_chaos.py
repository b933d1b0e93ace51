"""The chaos soak's 60-second run (docs/reliability.md), as part of the default suite.

Rows: Fault tolerance: Network drop, Server restart, Broker failure; risks Reconnection
state sync, Message ordering, No built-in delivery guarantees, Scaling complexity.

Three ``serve`` processes (one with ``--workers 2``) on a private PostgreSQL and Redis,
52 clients (40 of the project's Python client, 12 raw WebSocket clients) on 20 streams,
and one random fault every 1-4 s: ``kill -9`` and restart of a server or worker,
SIGSTOP/SIGCONT, Redis restart, PostgreSQL crash and restart, connections cut or
half-opened, a client that stops reading. The checker then verifies every
subscription, every acked publish and the log (loadtests/chaos/checker.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import scaled
from tests.e2e.helpers import PYTHON, REPO


@pytest.mark.timeout(900)
def test_chaos_soak_60_seconds_loses_nothing(tmp_path: Path) -> None:
    report_path = tmp_path / "chaos.json"
    done = subprocess.run(
        [PYTHON, "-m", "loadtests.chaos", "--duration", "60", "--report", str(report_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=scaled(840),
        check=False,
    )
    assert report_path.exists(), f"no report; exit {done.returncode}\n{done.stderr[-4000:]}"
    report = json.loads(report_path.read_text())
    verdict = report["verdict"]
    assert verdict["ok"], json.dumps(report, indent=2)
    assert done.returncode == 0
    # The run really exercised what it claims: faults of several kinds, reconnects, traffic.
    assert report["fault_count"] >= 10, report["faults"]
    assert len(report["faults"]) >= 4, report["faults"]
    assert verdict["acks"] > 500
    assert verdict["deliveries"] > 2000
    assert verdict["subscriptions"] >= 100
