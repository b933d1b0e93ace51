"""Acked means durable (section 6: "an ack of a publish is sent only after the event is committed").

Row: Fault tolerance (a power cut of the machine running the embedded SQLite database).
On SQLite in WAL mode, ``synchronous=NORMAL`` commits without syncing the WAL, so an acked
publish can vanish with the power and its offset be handed out again under the same
epoch. The server's connections use ``synchronous=FULL`` unless the operator opts out
(``REALTIME_SQLITE_SYNCHRONOUS=NORMAL``, documented in docs/operations.md). A power cut
cannot be simulated here; what is checked is the setting every server connection runs with.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import PYTHON, REPO, base_env

PROBE = (
    "from django.db import connection\n"
    "with connection.cursor() as cursor:\n"
    "    cursor.execute('PRAGMA synchronous')\n"
    "    print('SYNCHRONOUS=%d' % cursor.fetchone()[0])\n"
)


def _synchronous(tmp_path: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    env = base_env(f"sqlite:///{tmp_path / 'durable.sqlite3'}", **overrides)
    return subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(("setting", "expected"), [(None, 2), ("NORMAL", 1), ("full", 2)])
def test_sqlite_commits_sync_the_wal_unless_the_operator_opts_out(
    tmp_path: Path, setting: str | None, expected: int
) -> None:
    overrides = {} if setting is None else {"REALTIME_SQLITE_SYNCHRONOUS": setting}
    done = _synchronous(tmp_path, **overrides)
    assert done.returncode == 0, done.stderr
    assert f"SYNCHRONOUS={expected}" in done.stdout  # 2 = FULL, 1 = NORMAL


def test_an_unknown_synchronous_mode_stops_the_process_naming_the_variable(tmp_path: Path) -> None:
    done = _synchronous(tmp_path, REALTIME_SQLITE_SYNCHRONOUS="OFF")
    assert done.returncode != 0
    assert "REALTIME_SQLITE_SYNCHRONOUS" in done.stderr
