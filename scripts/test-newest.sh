#!/usr/bin/env bash
# The whole test suite against the newest releases of the dependencies instead of the lock:
# Django, channels, channels-redis, websockets, uvloop, httptools, ... resolve to the newest versions
# inside the ranges of requirements*.txt (with NEWEST_BEYOND_RANGES=1: the newest, ranges
# ignored). Prints what resolved next to the locked version, then runs scripts/test.sh.
#
# It works in a copy of this working tree (tracked and untracked files, not the ignored ones)
# in REALTIME_NEWEST_DIR (default /tmp/realtime-newest) with a .venv of its own, because the
# suite starts servers with the tree's .venv/bin/python; the main .venv is left alone.
# Extra arguments go to pytest, e.g. scripts/test-newest.sh tests/unit tests/integration.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${REALTIME_NEWEST_DIR:-/tmp/realtime-newest}"
mode=newest
[ "${NEWEST_BEYOND_RANGES:-0}" = 1 ] && mode=latest

# Refresh the copy's sources; keep its .venv and node_modules so a rerun only upgrades.
mkdir -p "$dest"
find "$dest" -mindepth 1 -maxdepth 1 ! -name .venv ! -name node_modules -exec rm -rf {} +
git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' file; do [ -e "$file" ] && printf '%s\0' "$file"; done \
  | tar --null -T - -cf - | tar -xf - -C "$dest"
cd "$dest"

rm -f .venv/.installed-requirements-dev.txt.*
REALTIME_DEPS="$mode" scripts/bootstrap.sh requirements-dev.txt
echo "dependencies ($mode) in $dest/.venv, against requirements-dev.lock:"
.venv/bin/python - <<'EOF'
import re
from importlib.metadata import distributions
from pathlib import Path


def key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


locked = dict(re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", Path("requirements-dev.lock").read_text(), re.M))
locked = {key(name): version for name, version in locked.items()}
installed = {key(d.metadata["Name"]): d.version for d in distributions()}
watched = ("django", "channels", "channels-redis", "redis", "websockets", "uvloop", "httptools", "daphne")
for name in sorted(installed):
    lock = locked.get(name)
    if name in locked and (lock != installed[name] or name in watched):
        mark = "" if lock == installed[name] else "   <- moved"
        print(f"  {name:32} {installed[name]:14} lock {lock}{mark}")
EOF

# scripts/test.sh calls bootstrap again with the same mode: the stamp makes that a no-op.
REALTIME_DEPS="$mode" exec scripts/test.sh "$@"
