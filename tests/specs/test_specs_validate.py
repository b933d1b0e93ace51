"""Both generated specs pass their official validators (issue 18).

The AsyncAPI document written by ``manage.py realtime_asyncapi`` is checked by
``tests/specs/validate_asyncapi.mjs`` with ``@asyncapi/parser`` (pinned in package-lock.json,
installed by ``npm ci``); a deliberately broken document must be rejected, so the validator
cannot pass vacuously. The OpenAPI document must pass ``manage.py spectacular --validate
--fail-on-warn`` (drf-spectacular's generator warnings plus the OpenAPI 3 JSON schema).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import call_command

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = ROOT / "tests" / "specs" / "validate_asyncapi.mjs"


def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.fail("node is not installed: scripts/test.sh installs Debian's nodejs and npm when missing")
    if not (ROOT / "node_modules" / "@asyncapi" / "parser").is_dir():
        pytest.fail("@asyncapi/parser is not installed: run `npm ci` (scripts/test.sh does)")
    return path


def validate(document: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node(), str(VALIDATOR), str(document)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def generate(tmp_path: Path, fmt: str) -> Path:
    output = tmp_path / f"asyncapi.{fmt}"
    call_command("realtime_asyncapi", output=str(output), format=fmt)
    return output


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_generated_asyncapi_document_passes_the_asyncapi_parser(tmp_path: Path, fmt: str) -> None:
    document = generate(tmp_path, fmt)
    done = validate(document)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ": 0 error(s)" in done.stdout, done.stdout


def _broken(tmp_path: Path, name: str, damage: Any) -> Path:
    document = json.loads(generate(tmp_path, "json").read_text())
    damage(document)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(
    ("name", "damage", "expected"),
    [
        # A schema that a message points to is missing: an unresolvable $ref.
        ("dangling-ref", lambda d: d["components"]["schemas"].pop("PingData"), "invalid-ref"),
        # AsyncAPI 2's verb in a 3.0 document.
        ("bad-action", lambda d: d["operations"]["send_ping"].update(action="publish"), '"action"'),
    ],
)
def test_validator_rejects_a_broken_document(tmp_path: Path, name: str, damage: Any, expected: str) -> None:
    done = validate(_broken(tmp_path, name, damage))
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stdout.splitlines() if line.startswith("error ")]
    assert [line for line in errors if expected in line], done.stdout


def test_yaml_and_json_outputs_are_the_same_document(tmp_path: Path) -> None:
    as_json = json.loads(generate(tmp_path, "json").read_text())
    assert yaml.safe_load(generate(tmp_path, "yaml").read_text()) == as_json
    assert as_json["asyncapi"].startswith("3.0")


def test_openapi_schema_validates_without_warnings(tmp_path: Path) -> None:
    output = tmp_path / "openapi.yaml"
    # Raises (SchemaGenerationError) on any generator warning or schema validation error.
    call_command("spectacular", validate=True, fail_on_warn=True, file=str(output))
    schema = yaml.safe_load(output.read_text())
    assert set(schema["paths"]) == {
        "/api/auth/token/",
        "/api/auth/token/refresh/",
        "/api/auth/logout/",
        "/api/resources/",
        "/api/resources/{id}/",
        # Issue 16: the server HTTP API (realtime/server_api.py).
        "/api/server/publish/",
        "/api/server/publish-many/",
        "/api/server/users/{user_id}/disconnect/",
        "/api/server/streams/{stream}/",
        "/api/server/streams/{stream}/history/",
        # Issue 17: presence and online status (realtime/server_api_presence.py).
        "/api/server/streams/{stream}/presence/",
        "/api/server/users/{user_id}/",
    }
    publish = schema["paths"]["/api/server/publish/"]["post"]
    assert publish["security"] == [{"serverApiKey": []}, {"jwtAuth": []}]
    assert {"200", "400", "401", "403", "404", "413", "429"} <= set(publish["responses"])
    put = schema["paths"]["/api/resources/{id}/"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ResourceUpdateRequest"
    }
    assert {"200", "400", "401", "404", "409"} <= set(put["responses"])
    login = schema["paths"]["/api/auth/token/"]["post"]["responses"]
    assert login["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/TokenPair"}
    assert "429" in login
    assert schema["components"]["securitySchemes"]["jwtAuth"]["scheme"] == "bearer"
