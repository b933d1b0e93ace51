"""The browser client against the conformance fixtures, and its JSDoc types (issue 20).

``node tests/conformance/run.mjs`` plays tests/conformance/*.json against
realtime/static/realtime/client.js with a fake WebSocket and a virtual clock (no browser);
test_conformance.py plays the same fixtures against the Python client. ``tsc --checkJs``
(TypeScript pinned in package-lock.json, installed by ``npm ci`` into the git-ignored
node_modules/) checks client.js with the strict options of tsconfig.json.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.client.test_conformance import BROKEN

ROOT = Path(__file__).resolve().parents[3]
RUNNER = ROOT / "tests" / "conformance" / "run.mjs"
TSC = ROOT / "node_modules" / ".bin" / "tsc"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: scripts/test.sh installs Debian's nodejs and npm when missing")
    return path


def test_browser_client_passes_every_conformance_fixture() -> None:
    """Every fixture scenario, played against client.js; the runner's report is the failure message."""
    done = subprocess.run(
        [tool("node"), str(RUNNER)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    assert " passed, 0 failed" in report, report


def test_the_js_runner_fails_a_scenario_the_client_does_not_satisfy(tmp_path: Path) -> None:
    """run.mjs is not vacuous: a wrong expectation exits 1, naming the step and what happened."""
    (tmp_path / "broken.json").write_text(json.dumps({"description": "a self-check", "scenarios": [BROKEN]}))
    done = subprocess.run(
        [tool("node"), str(RUNNER), f"--dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL broken: expects a wrong order on purpose" in done.stdout
    assert "events delivered: [1,2]" in done.stdout
    assert "0 passed, 1 failed" in done.stdout


def test_browser_client_type_checks_with_tsc() -> None:
    """``tsc --checkJs`` (tsconfig.json: strict, noUncheckedIndexedAccess, ...) finds nothing in client.js."""
    if not TSC.exists():
        installed = subprocess.run(
            [tool("npm"), "ci", "--silent", "--no-audit", "--no-fund"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert installed.returncode == 0, f"npm ci failed:\n{installed.stdout}{installed.stderr}"
    done = subprocess.run(
        [tool("node"), str(TSC), "-p", str(ROOT / "tsconfig.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
