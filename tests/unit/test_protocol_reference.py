"""Issue 18: ``docs/protocol.md`` is the whole contract, and the repository's docs never
point outside the repository.

Each name the code defines (client events, pushes, error codes, close codes with their
reasons, environment variables, URL paths) must appear in the reference, so adding one
without documenting it fails here. The names are collected from the code itself, never
from a list kept in this test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from realtime.client_events import registry
from realtime.protocol.close_codes import CLOSE_CODE_FOR, CloseReason
from realtime.protocol.errors import ErrorCode
from realtime.protocol.pushes import PUSHES

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "protocol.md"

# Where the server reads its configuration. The four files named in the issue are scanned
# for every name with a settings prefix; the server packages are scanned for any upper-case
# name on a line that reads the environment (``os.environ``, ``env.get``, ``env.str``, ...).
SETTINGS_FILES = (
    "realtime/conf.py",
    "project/settings.py",
    "accounts/keys.py",
    "realtime/management/commands/serve.py",
)
SERVER_PACKAGES = ("realtime", "accounts", "project")
_PREFIXED = re.compile(r"""["'](?P<name>(?:REALTIME|DJANGO|JWT|DATABASE|REDIS|PROMETHEUS)_[A-Z0-9_]*)["']""")
_UPPER_LITERAL = re.compile(r"""["'](?P<name>[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)["']""")
_READS_ENV = re.compile(r"(?i)\benv|environ")


def _reference() -> str:
    return REFERENCE.read_text(encoding="utf-8")


def _mentioned(name: str, text: str) -> bool:
    # As a code span of its own: the word "ping" in prose does not document the event `ping`.
    return f"`{name}`" in text


def environment_variables() -> set[str]:
    names: set[str] = set()
    for rel in SETTINGS_FILES:
        names |= {m["name"] for m in _PREFIXED.finditer((ROOT / rel).read_text(encoding="utf-8"))}
    for package in SERVER_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for line in path.read_text(encoding="utf-8").splitlines():
                if _READS_ENV.search(line):
                    names |= {m["name"] for m in _UPPER_LITERAL.finditer(line)}
    return names


def _paths(patterns: list[URLPattern | URLResolver], prefix: str = "") -> set[str]:
    found: set[str] = set()
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            if route == "admin/":  # Django's admin site: documented as one endpoint
                found.add("/" + route)
                continue
            found |= _paths(entry.url_patterns, route)
        else:
            found.add("/" + route)
    return found


def url_paths() -> set[str]:
    # As written in the doc: `<int:pk>` becomes `ID`, `<str:stream>` becomes `STREAM`.
    paths = {re.sub(r"<int:\w+>", "ID", path) for path in _paths(get_resolver().url_patterns)}
    return {path.replace("<str:stream>", "STREAM") for path in paths}


def test_collectors_find_names() -> None:
    """The collectors themselves work: a regex that matches nothing would pass everything."""
    env = environment_variables()
    assert {"REALTIME_RATE_LIMIT", "DJANGO_SECRET_KEY", "JWT_ALGORITHM", "DATABASE_URL", "REDIS_URL"} <= env
    assert {"/ws/", "/api/auth/token/", "/api/resources/ID/"} <= url_paths()
    assert _mentioned("ping", "send `ping`")
    assert not _mentioned("ping", "transport pings, a ping, `ping_x`")


@pytest.mark.parametrize("name", sorted(registry.builtin()))
def test_every_client_event_is_documented(name: str) -> None:
    """The realtime package's own events; an app's events are the app's to document."""
    assert _mentioned(name, _reference()), f"client event {name!r} is missing from docs/protocol.md"


@pytest.mark.parametrize("name", sorted(PUSHES))
def test_every_push_is_documented(name: str) -> None:
    assert _mentioned(name, _reference()), f"push {name!r} is missing from docs/protocol.md"


@pytest.mark.parametrize("code", sorted(ErrorCode))
def test_every_error_code_is_documented(code: ErrorCode) -> None:
    assert _mentioned(code.value, _reference()), f"error code {code.value!r} is missing from docs/protocol.md"


@pytest.mark.parametrize("reason", sorted(CloseReason))
def test_every_close_code_and_reason_is_documented(reason: CloseReason) -> None:
    """The close-code table has a row naming both the number and the reason."""
    number = int(CLOSE_CODE_FOR[reason])
    rows = [line for line in _reference().splitlines() if line.startswith("|") and f"| {number} |" in line]
    assert rows, f"close code {number} has no row in a table of docs/protocol.md"
    assert any(f"`{reason.value}`" in row for row in rows), (
        f"close {number} {reason.value!r} is not in a table row of close code {number} in docs/protocol.md"
    )


@pytest.mark.parametrize("name", sorted(environment_variables()))
def test_every_environment_variable_is_documented(name: str) -> None:
    assert _mentioned(name, _reference()), f"environment variable {name} is missing from docs/protocol.md"


@pytest.mark.parametrize("path", sorted(url_paths()))
def test_every_url_path_is_documented(path: str) -> None:
    assert f"`{path}`" in _reference() or f" {path}`" in _reference(), (
        f"endpoint {path} is missing from docs/protocol.md"
    )


def _docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.mark.parametrize("path", _docs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_never_point_outside_the_repository(path: Path) -> None:
    """Docs are read by someone who has only the repository: no ``../shared`` or ``shared/``."""
    text = path.read_text(encoding="utf-8")
    hits = [
        f"{number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), 1)
        if re.search(r"(?<![\w-])(\.\./)*shared/", line)
    ]
    assert not hits, f"{path.relative_to(ROOT)} points outside the repository:\n" + "\n".join(hits)


def test_reference_does_not_defer_to_another_contract() -> None:
    text = _reference()
    assert "PROTOCOL.md" not in text
    assert "protocol v1" in text
