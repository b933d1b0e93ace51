"""The browser client as an npm package with generated TypeScript declarations (issue 18).

``clients/js/build.mjs`` copies the module the server serves (realtime/static/realtime/client.js)
into ``clients/js/dist/`` and generates ``client.d.ts`` from its JSDoc with the TypeScript pinned
in package-lock.json; a TypeScript example written against the package must compile, and a
typed misuse must not, so the declarations are real types, not ``any``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.unit.client import test_conformance_js as js_checks
from tests.unit.client.test_conformance_js import ROOT, TSC, tool

PACKAGE = ROOT / "clients" / "js"


def _build() -> None:
    if not TSC.exists():  # npm ci, as the tsc check does
        js_checks.test_browser_client_type_checks_with_tsc()
    done = subprocess.run(
        [tool("node"), str(PACKAGE / "build.mjs")],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _compile(example_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("node"), str(TSC), "-p", str(example_dir / "tsconfig.json")],
        cwd=example_dir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_package_builds_with_declarations_and_the_typescript_example_compiles(tmp_path: Path) -> None:
    _build()
    declarations = (PACKAGE / "dist" / "client.d.ts").read_text()
    assert "export class RealtimeClient" in declarations
    assert "subscribe(stream: string, options?: SubscribeOptions): Subscription;" in declarations
    assert (PACKAGE / "dist" / "client.js").read_bytes() == (
        ROOT / "realtime" / "static" / "realtime" / "client.js"
    ).read_bytes()
    compiled = _compile(PACKAGE / "example")
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr

    # Not vacuous: the same example with a typed misuse fails to compile.
    broken = tmp_path / "example"
    shutil.copytree(PACKAGE / "example", broken)
    source = (broken / "example.ts").read_text()
    (broken / "example.ts").write_text(source.replace("client.subscribe(`room:${room}`", "client.subscribe(42"))
    config = (
        (broken / "tsconfig.json").read_text().replace("../dist/client.d.ts", str(PACKAGE / "dist" / "client.d.ts"))
    )
    (broken / "tsconfig.json").write_text(config)
    refused = _compile(broken)
    assert refused.returncode != 0
    assert "error TS2345" in refused.stdout, refused.stdout


def test_npm_pack_ships_the_module_its_declarations_and_nothing_else() -> None:
    _build()
    done = subprocess.run(
        [tool("npm"), "pack", "--dry-run", "--json", "--ignore-scripts"],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    files = sorted(entry["path"] for entry in json.loads(done.stdout)[0]["files"])
    assert files == ["README.md", "dist/client.d.ts", "dist/client.js", "package.json"]
