"""Issue 18: ``realtime_client`` builds as its own wheel (clients/python) with no server dependency.

The wheel is built from the repository, installed into a fresh virtual environment that
has never seen Django, and used there against a real server: the library and the installed
``realtime`` console script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import scaled
from tests.e2e.helpers import PYTHON, REPO, obtain_tokens

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, sys
    import realtime_client
    from realtime_client import RealtimeClient

    async def main() -> None:
        async with RealtimeClient(sys.argv[1], os.environ["REALTIME_TOKEN"]) as client:
            ack = await client.call("echo", {"x": 1})
        print(json.dumps({"ack": ack, "file": realtime_client.__file__}))

    asyncio.run(main())
    """
)


def isolated_env(**extra: str) -> dict[str, str]:
    """No trace of the repository's environment: the venv must stand on its own."""
    drop = ("PYTHON", "VIRTUAL_ENV", "REALTIME_", "DJANGO_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env or isolated_env(),
        capture_output=True,
        text=True,
        timeout=scaled(240),
    )


@pytest.mark.slow  # ~7 s: builds the client wheel and a fresh venv; run with -m slow
def test_client_wheel_installs_alone_and_connects(server, tmp_path: Path) -> None:
    """Installable client: the built wheel, in a fresh venv without Django, connects and gets an
    echo ack; its `realtime` console script works there too."""
    built = run(
        PYTHON, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", REPO / "clients" / "python", cwd=REPO
    )
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("realtime_client-*.whl")

    venv = tmp_path / "venv"
    made = run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    # The wheel alone, then the websockets this repository is tested with (from PyPI or pip's cache).
    for args in (("--no-deps", wheel), (f"websockets=={version('websockets')}",)):
        installed = run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args, cwd=tmp_path)
        assert installed.returncode == 0, installed.stderr

    # The declared dependencies are exactly websockets: pip check would name anything missing.
    checked = run(python, "-m", "pip", "check", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout
    assert run(python, "-c", "import django", cwd=tmp_path).returncode != 0, "django is importable in the venv"

    token = obtain_tokens(server, "alice")["access"]
    script = tmp_path / "connect.py"
    script.write_text(SCRIPT)
    used = run(python, script, server.ws_url, cwd=tmp_path, env=isolated_env(REALTIME_TOKEN=token))
    assert used.returncode == 0, used.stderr
    result = json.loads(used.stdout)
    assert result["ack"] == {"x": 1}
    assert Path(result["file"]).is_relative_to(venv), result["file"]  # the installed copy, not the repo's

    helped = run(venv / "bin" / "realtime", "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "tail" in helped.stdout
    sent = run(
        venv / "bin" / "realtime", "--url", server.ws_url, "send", "echo", '{"y":2}',
        cwd=tmp_path, env=isolated_env(REALTIME_TOKEN=token),
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout) == {"y": 2}
