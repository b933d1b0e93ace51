"""`manage.py serve` lifts its soft open-file limit to the hard one (Row: Connection scaling).

Every connection is a file descriptor; a distribution's default soft limit (often 1024)
would cap a server at about a thousand connections whatever its memory, and the connection
limit (REALTIME_MAX_CONNECTIONS, default: the open-file limit less a reserve) follows it.
"""

from __future__ import annotations

import resource
import subprocess
import time
from pathlib import Path

from tests.conftest import scaled
from tests.e2e.conftest import E2EDatabase
from tests.e2e.helpers import PYTHON, REPO, base_env


def _lower_soft_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))


def test_serve_raises_its_soft_open_file_limit_to_the_hard_one(e2e_db: E2EDatabase, tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [PYTHON, "manage.py", "serve", "--host", "127.0.0.1", "--port", "0"],
            cwd=REPO,
            env=base_env(e2e_db.url),
            stdout=subprocess.PIPE,
            stderr=log,
            preexec_fn=_lower_soft_limit,
        )
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + scaled(60)
            while not proc.stdout.readline().startswith(b"listening on "):
                assert proc.poll() is None, (tmp_path / "server.log").read_text()
                assert time.monotonic() < deadline
            limits = Path(f"/proc/{proc.pid}/limits").read_text()
            line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
            soft = line.split()[3]
            expected = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
            assert soft == expected, line
        finally:
            proc.terminate()
            proc.wait(timeout=scaled(20))
            assert proc.stdout is not None
            proc.stdout.close()
