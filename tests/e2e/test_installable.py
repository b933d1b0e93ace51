"""Issue 16, installable: the server builds as a wheel that an existing Django project installs.

The wheel is built from a copy of what it packages (``pyproject.toml``, ``requirements.txt``,
``realtime/``, ``accounts/``: setuptools writes ``build/`` and ``*.egg-info`` next to its
input, never into the checkout). It is installed into a fresh virtual environment, without
this repository on ``sys.path``, next to a copy of ``examples/taskboard``; there the example
migrates, passes ``check`` and serves: the browser client (package data) and a WebSocket
subscribe to one of its boards.

For speed the new environment takes the dependencies from this one's site-packages (a
``.pth`` line: the same releases the suite is tested with) instead of downloading them;
``pip check`` then proves the wheel's declared dependencies are all satisfied.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
import urllib.request
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import scaled
from tests.e2e.helpers import PASSWORD, PYTHON, REPO, ServerProcess, call, connect, obtain_tokens, recv_json
from tests.e2e.redis_server import free_port

PACKAGED = ("pyproject.toml", "requirements.txt", "realtime", "accounts")
SECRET_KEY = "installable-test-secret-key-0123456789abcdef0123456789abcdef"


def isolated_env(**extra: str) -> dict[str, str]:
    """No trace of the repository's environment: nothing of it on the path, no settings."""
    drop = ("PYTHON", "VIRTUAL_ENV", "REALTIME_", "DJANGO_", "DATABASE_URL", "REDIS_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env or isolated_env(),
        capture_output=True,
        text=True,
        timeout=scaled(180),
    )
    assert done.returncode == 0, f"{' '.join(map(str, args))}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    source.mkdir()
    for name in PACKAGED:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    run(PYTHON, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", source, cwd=tmp_path)
    [wheel] = (tmp_path / "dist").glob("realtime_service-*.whl")
    return wheel


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=scaled(10)) as response:  # noqa: S310 - loopback test URL
        assert response.status == 200
        body: str = response.read().decode()
        return body


def requirements_txt() -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def install_example(tmp_path: Path) -> tuple[Path, Path, dict[str, str], int]:
    """The wheel built, checked and installed in a new venv beside a copy of the example,
    migrated, checked and seeded there: (the venv's python, the project, its env, a board id)."""
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = Parser().parsestr(archive.read("realtime_service-0.1.0.dist-info/METADATA").decode())
    assert {
        "realtime/asgi.py",
        "realtime/urls.py",
        "realtime/migrations/0001_initial.py",
        "accounts/migrations/0001_initial.py",
        "realtime/static/realtime/client.js",
        "realtime/templates/realtime/demo.html",
    } <= names
    assert not {name for name in names if name.startswith(("project/", "tests/", "loadtests/", "realtime_client/"))}
    # One place for the ranges: the wheel declares exactly requirements.txt's.
    declared = sorted(str(Requirement(value)) for value in metadata.get_all("Requires-Dist", []))
    assert declared == sorted(str(requirement) for requirement in requirements_txt())

    venv = tmp_path / "venv"
    run(PYTHON, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(PYTHON, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel, cwd=tmp_path)
    site_packages = Path(
        run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).strip()
    )
    (site_packages / "suite-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(PYTHON, "-m", "pip", "--python", python, "check", cwd=tmp_path)

    site = tmp_path / "taskboard"
    shutil.copytree(
        REPO / "examples" / "taskboard",
        site,
        ignore=shutil.ignore_patterns("__pycache__", ".mypy_cache", "db.sqlite3*"),
    )
    env = isolated_env(DJANGO_SECRET_KEY=SECRET_KEY, DATABASE_URL=f"sqlite:///{tmp_path / 'site.sqlite3'}")
    found = run(python, "-c", "import realtime, accounts; print(realtime.__file__); print(accounts.__file__)", cwd=site)
    for path in found.split():
        assert Path(path).is_relative_to(site_packages), found  # the installed copy, not the checkout's
    refused = subprocess.run([python, "-c", "import project"], cwd=site, env=env, capture_output=True)
    assert refused.returncode != 0, "the repository's project package is importable"

    run(python, "manage.py", "migrate", "--noinput", "-v0", cwd=site, env=env)
    checked = run(python, "manage.py", "check", cwd=site, env=env)
    assert "no issues" in checked
    seeded = run(
        python, "manage.py", "shell", "-c",
        "from django.core.management import call_command\n"
        "from accounts.models import User\n"
        f"User.objects.create_user(username='alice', password={PASSWORD!r})\n"
        "call_command('create_board', 'Home', '--member', 'alice')\n",
        cwd=site, env=env,
    )  # fmt: skip
    board = int(seeded.split()[-1])

    return python, site, env, board


@pytest.mark.slow  # ~8 s: builds the wheel and a fresh venv; run with -m slow
async def test_wheel_installs_into_a_project_that_migrates_checks_and_serves(tmp_path: Path) -> None:
    """Installable: pyproject.toml builds a wheel of ``realtime`` and ``accounts`` (migrations,
    templates, static files) whose dependencies are requirements.txt's ranges; installed in a
    fresh venv with the example project and nothing of this repository, the project migrates,
    passes ``check``, serves the browser client and accepts a WebSocket subscribe."""
    python, site, env, board = install_example(tmp_path)
    port = free_port()
    server = ServerProcess(
        env={**env, "REALTIME_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}"},
        log_path=tmp_path / "server.log",
        port=port,
        command=(str(python), str(site / "manage.py"), "serve"),
    )
    server.start()
    try:
        client_js = http_get(f"{server.http_url}/static/realtime/client.js")
        assert "export class RealtimeClient" in client_js
        assert 'src="/static/tasks/board.js"' in http_get(f"{server.http_url}/boards/{board}/")
        ws = await connect(server, obtain_tokens(server, "alice")["access"])
        assert (await recv_json(ws))["event"] == "session.welcome"
        ack = await call(ws, {"event": "stream.subscribe", "id": "s1", "data": {"stream": f"board:{board}"}})
        assert ack["event"] == "ack", ack
    finally:
        server.stop()
