"""Batches with the same idempotency keys committed at once by several processes (issue 7).

Real processes on a real database shared between them (PostgreSQL when the test command
started one, else a SQLite file). Each worker does what GroupCommit does: one
``append_batch``, and when the batch fails (a key raced with another process) each
publish again alone.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.e2e.helpers import PYTHON, REPO, base_env, db_query, migrated_database

PROCESSES, THREADS, ROUNDS, SHARED, OWN = 3, 2, 15, 6, 4

WORKER = """
import django, sys, threading
django.setup()
from django.db import connection
from realtime.streams.event_log import AppendRequest, EventLog
from accounts.models import User
tag = sys.argv[1]
sender = User.objects.get(username="racer").pk
lines = []
def work(thread):
    try:
        for n in range({rounds}):
            batch = [AppendRequest("room:race", "message.new", {{"k": f"s{{n}}-{{i}}"}}, key=(sender, f"s{{n}}-{{i}}"))
                     for i in range({shared})]
            batch += [AppendRequest("room:race", "message.new", {{"k": f"{{tag}}-{{thread}}-{{n}}-{{i}}"}})
                      for i in range({own})]
            try:
                results = EventLog.append_batch(batch)
            except Exception:
                results = [EventLog.append(r.stream, r.event, r.data, sender_id=r.key[0] if r.key else None,
                                           client_id=r.key[1] if r.key else None) for r in batch]
            for request, result in zip(batch, results):
                lines.append(f"{{request.data['k']}}={{result.event.offset}}={{int(result.created)}}")
    finally:
        connection.close()
threads = [threading.Thread(target=work, args=(t,)) for t in range({threads})]
for t in threads: t.start()
for t in threads: t.join()
print("RESULTS=" + ",".join(lines))
"""


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with migrated_database("racing", tmp_path_factory.mktemp("racing")) as url:
        subprocess.run(
            [
                PYTHON,
                "manage.py",
                "shell",
                "-c",
                "from accounts.models import User; User.objects.create(username='racer')",
            ],
            cwd=REPO,
            env=base_env(url),
            check=True,
            capture_output=True,
        )
        yield url


def test_racing_batches_store_each_key_once_with_gapless_offsets(database_url: str) -> None:
    """Delivery guarantees: the same ids published in batches by 3 processes x 2 threads at once
    are stored once each, every publisher gets the same offset for an id, and the stream's
    offsets stay 1..N without a gap (a batch that lost a race gave its offsets back)."""
    script = WORKER.format(rounds=ROUNDS, shared=SHARED, own=OWN, threads=THREADS)
    procs = [
        subprocess.Popen(
            [PYTHON, "-c", script, f"p{i}"],
            cwd=REPO,
            env=base_env(database_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    seen: dict[str, set[int]] = {}
    created: dict[str, int] = {}
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        line = next(line for line in out.splitlines() if line.startswith("RESULTS="))
        for item in line.removeprefix("RESULTS=").split(","):
            key, offset, was_created = item.rsplit("=", 2)
            seen.setdefault(key, set()).add(int(offset))
            created[key] = created.get(key, 0) + int(was_created)
    assert all(len(offsets) == 1 for offsets in seen.values())
    assert all(count == 1 for count in created.values())  # exactly one publisher stored each
    total = ROUNDS * SHARED + PROCESSES * THREADS * ROUNDS * OWN
    assert len(seen) == total
    assert sorted(offset for offsets in seen.values() for offset in offsets) == list(range(1, total + 1))
    stored = db_query(
        database_url,
        'SELECT e."offset" FROM realtime_event e JOIN realtime_stream s ON s.id = e.stream_id'
        ' WHERE s.name = %s ORDER BY e."offset"',
        ("room:race",),
    )
    assert [row[0] for row in stored] == list(range(1, total + 1))
    assert db_query(database_url, "SELECT head FROM realtime_stream WHERE name = %s", ("room:race",)) == [(total,)]
