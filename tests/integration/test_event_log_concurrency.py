"""EventLog under concurrent publishers in several processes and threads (issue 3).

Runs against a real database shared by real processes: PostgreSQL when the test
command started one, else a SQLite file (WAL, IMMEDIATE transactions).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.e2e.helpers import PYTHON, REPO, base_env, db_query, migrated_database

PROCESSES, THREADS, PER_THREAD = 3, 4, 25

HAMMER = """
import sys, threading
from django.db import connection
from realtime.streams.event_log import AppendRequest, EventLog
from accounts.models import User
mode, tag = sys.argv[1], sys.argv[2]
sender = User.objects.get(username="hammer").pk
results = []
def work(thread):
    try:
        for n in range({per_thread}):
            if mode == "distinct":
                appended = EventLog.append("room:hammer", "message.new", {{"who": tag, "t": thread, "n": n}})
            elif mode == "batch":
                batch = [AppendRequest("room:batched", "message.new", {{"who": tag, "n": n, "i": i}}) for i in range(5)]
                batch.append(AppendRequest("room:batched-b", "message.new", {{"who": tag}}))
                for appended in EventLog.append_batch(batch):
                    results.append(appended.event.offset if appended.event.stream == "room:batched" else -1)
                continue
            else:
                appended = EventLog.append("room:same-id", "message.new", {{"who": tag}},
                                           sender_id=sender, client_id="one-key")
            results.append(appended.event.offset)
    finally:
        connection.close()
threads = [threading.Thread(target=work, args=(i,)) for i in range({threads})]
for t in threads: t.start()
for t in threads: t.join()
print("OFFSETS=" + ",".join(map(str, results)))
"""


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with migrated_database("hammer", tmp_path_factory.mktemp("hammer")) as url:
        create_user = "from accounts.models import User; User.objects.create(username='hammer')"
        subprocess.run(
            [PYTHON, "manage.py", "shell", "-c", create_user],
            cwd=REPO,
            env=base_env(url),
            check=True,
            capture_output=True,
        )
        yield url


def _hammer(database_url: str, mode: str) -> list[int]:
    script = HAMMER.format(per_thread=PER_THREAD, threads=THREADS)
    env = base_env(database_url)
    procs = [
        subprocess.Popen(
            [PYTHON, "-c", _bootstrap(script), mode, f"p{i}"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    offsets: list[int] = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        line = next(line for line in out.splitlines() if line.startswith("OFFSETS="))
        offsets += [int(x) for x in line[8:].split(",") if x]
    return offsets


def _bootstrap(script: str) -> str:
    return "import django, os; django.setup()\n" + script


def test_concurrent_publishers_get_unique_contiguous_offsets(database_url: str) -> None:
    """Ordering: Concurrent messages -> 3 processes x 4 threads publishing to one stream get offsets 1..N, no gap."""
    offsets = _hammer(database_url, "distinct")
    total = PROCESSES * THREADS * PER_THREAD
    assert sorted(offsets) == list(range(1, total + 1))
    stored = db_query(
        database_url,
        'SELECT e."offset" FROM realtime_event e JOIN realtime_stream s ON s.id = e.stream_id'
        ' WHERE s.name = %s ORDER BY e."offset"',
        ("room:hammer",),
    )
    assert [row[0] for row in stored] == list(range(1, total + 1))
    head = db_query(database_url, "SELECT head FROM realtime_stream WHERE name = %s", ("room:hammer",))
    assert head == [(total,)]


def test_concurrent_retries_of_one_id_store_one_event(database_url: str) -> None:
    """Delivery guarantees: a publish id repeated concurrently from many processes is stored once."""
    offsets = _hammer(database_url, "same-id")
    assert set(offsets) == {1}
    stored = db_query(
        database_url,
        "SELECT COUNT(*) FROM realtime_event e JOIN realtime_stream s ON s.id = e.stream_id WHERE s.name = %s",
        ("room:same-id",),
    )
    assert stored == [(1,)]


def test_concurrent_group_commits_keep_offsets_contiguous(database_url: str) -> None:
    """Ordering: Concurrent messages -> batches committed concurrently by 3 processes x 4 threads,
    each spanning two streams, still give each stream offsets 1..N without gap or repeat."""
    offsets = [o for o in _hammer(database_url, "batch") if o > 0]
    total = PROCESSES * THREADS * PER_THREAD * 5
    assert sorted(offsets) == list(range(1, total + 1))
    heads = db_query(
        database_url, "SELECT name, head FROM realtime_stream WHERE name LIKE %s ORDER BY name", ("room:batched%",)
    )
    assert heads == [("room:batched", total), ("room:batched-b", PROCESSES * THREADS * PER_THREAD)]
