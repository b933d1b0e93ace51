"""A private, killable PostgreSQL cluster for tests that crash the database (and the chaos soak).

The suite's shared PostgreSQL (scripts/services.sh) serves every other test; a test that
stops or crashes the database gets its own ``initdb`` cluster (about 2 s to start).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.redis_server import free_port


@contextlib.contextmanager
def private_directory(prefix: str = "realtime-pg-") -> Iterator[Path]:
    """A scratch directory PostgreSQL's own user can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _pg_bin() -> Path:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL is not installed (scripts/services.sh installs it)")


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster (PostgreSQL refuses to run as root: it runs as ``postgres``)."""

    workdir: Path
    port: int = field(default_factory=free_port)
    restarts: int = 0

    def _run(self, *argv: str) -> None:
        runas = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        subprocess.run([*runas, *argv], check=True, capture_output=True, timeout=120)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _options(self) -> str:
        return f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"

    def _pg_ctl(self, *argv: str) -> None:
        self._run(str(_pg_bin() / "pg_ctl"), "-D", str(self.workdir / "pg"), *argv)

    def start(self) -> PostgresServer:
        if os.getuid() == 0:
            if subprocess.run(["id", "postgres"], check=False, capture_output=True).returncode != 0:
                subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
            shutil.chown(self.workdir, "postgres")
        initdb = str(_pg_bin() / "initdb")
        self._run(initdb, "-D", str(self.workdir / "pg"), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.resume()
        return self

    def crash(self) -> None:
        """An immediate stop: no checkpoint, clients cut, WAL recovery at the next start."""
        self._pg_ctl("-m", "immediate", "-w", "stop")

    def resume(self) -> None:
        self._pg_ctl("-l", str(self.workdir / "pg.log"), "-w", "-o", self._options(), "start")

    def restart(self) -> None:
        """Crash and recover, as after a failure of the database host."""
        self.restarts += 1
        self.crash()
        self.resume()

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.crash()
