"""Issue 20, "dependencies can move": requirements*.txt state compatible ranges and
requirements*.lock pin what everything installs. These tests keep the two from drifting: every
requirement is locked at a version inside its range, with hashes, and the runtime lock agrees
with the dev lock (docs/operations.md, "Dependencies: ranges, lock, newest")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s\\;]+)")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def requirements(path: Path) -> list[Requirement]:
    """The requirements of a requirements file, following its ``-r`` includes."""
    found: list[Requirement] = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-r "):
            found += requirements(path.parent / line.removeprefix("-r ").strip())
            continue
        assert not line.startswith("-"), f"{path.name}: unexpected option line {line!r}"
        found.append(Requirement(line))
    return found


def lock_entries(path: Path) -> dict[str, tuple[Version, int]]:
    """Each locked package's version and how many hashes it carries."""
    entries: dict[str, tuple[Version, int]] = {}
    blocks = re.split(r"\n(?=\S)", path.read_text())
    for block in blocks:
        if block.startswith("#") or not block.strip():
            continue
        pin = PIN.match(block)
        assert pin is not None, f"{path.name}: not an exact pin: {block.splitlines()[0]!r}"
        name = canonicalize_name(pin["name"])
        assert name not in entries, f"{path.name}: {name} is locked twice"
        entries[name] = (Version(pin["version"]), len(HASH.findall(block)))
    return entries


@pytest.mark.parametrize(
    ("source", "lock"), [("requirements.txt", "requirements.lock"), ("requirements-dev.txt", "requirements-dev.lock")]
)
def test_every_requirement_is_locked_inside_its_range(source: str, lock: str) -> None:
    """Issue 20: each package that requirements*.txt names is in its lock, at a version its range allows."""
    locked = lock_entries(REPO / lock)
    wanted = requirements(REPO / source)
    assert wanted, f"{source} names no requirement"
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} ({source}) is missing from {lock}: run `make lock`"
        version = locked[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock} pins {requirement.name}=={version}, outside {source}'s range "
            f"'{requirement.specifier}': run `make lock`"
        )


def test_ranges_have_both_bounds() -> None:
    """Issue 20: every range has a lower bound; all but date-versioned packages have an upper bound too."""
    for requirement in requirements(REPO / "requirements-dev.txt"):
        operators = {spec.operator for spec in requirement.specifier}
        assert operators & {">=", "~=", "=="}, f"{requirement.name}: no lower bound in '{requirement.specifier}'"
        lowest = min(Version(spec.version) for spec in requirement.specifier if spec.operator in {">=", "~=", "=="})
        if lowest.major < 2000:  # calendar-versioned releases (YYYY.M.D) have no major to stay below
            assert operators & {"<", "~=", "=="}, f"{requirement.name}: no upper bound in '{requirement.specifier}'"


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock"])
def test_every_pin_is_exact_and_hashed(lock: str) -> None:
    """Issue 20: the lock pins every package (dependencies of dependencies too) to one version with hashes."""
    entries = lock_entries(REPO / lock)
    assert len(entries) >= len(requirements(REPO / lock.replace(".lock", ".txt")))
    unhashed = sorted(name for name, (_, hashes) in entries.items() if hashes == 0)
    assert not unhashed, f"{lock}: no hashes for {unhashed}"


def test_runtime_lock_agrees_with_dev_lock() -> None:
    """Issue 20: the service's packages are the same versions in production and under test."""
    runtime = lock_entries(REPO / "requirements.lock")
    dev = lock_entries(REPO / "requirements-dev.lock")
    missing = sorted(set(runtime) - set(dev))
    assert not missing, f"requirements-dev.lock lacks {missing}: run `make lock`"
    differing = {
        name: (str(runtime[name][0]), str(dev[name][0])) for name in runtime if runtime[name][0] != dev[name][0]
    }
    assert not differing, f"runtime and dev locks disagree (runtime, dev): {differing}: run `make lock`"


def test_lock_parser_catches_drift(tmp_path: Path) -> None:
    """Issue 20: the checks above fail on a lock that left its range or lost its hashes."""
    (tmp_path / "base.txt").write_text("# comment\nDjango>=5.2,<6\n")
    (tmp_path / "dev.txt").write_text("-r base.txt\npytest>=9.2,<10  # runner\n")
    lock = tmp_path / "dev.lock"
    lock.write_text(
        "# header\ndjango==6.0.1 \\\n    --hash=sha256:" + "a" * 64 + "\n    # via -r base.txt\npytest==9.2.0\n"
    )
    wanted = {str(canonicalize_name(r.name)): r.specifier for r in requirements(tmp_path / "dev.txt")}
    entries = lock_entries(lock)
    assert set(wanted) == {"django", "pytest"}
    assert entries == {"django": (Version("6.0.1"), 1), "pytest": (Version("9.2.0"), 0)}
    assert not wanted["django"].contains(entries["django"][0])
    assert wanted["pytest"].contains(entries["pytest"][0])
