#!/usr/bin/env bash
# Create .venv and install the locked requirements; a no-op when they are already installed.
# Usage: scripts/bootstrap.sh [requirements-file]   (default: requirements.txt)
#
# requirements.txt and requirements-dev.txt state compatible ranges; what gets installed is
# their lock, requirements.lock or requirements-dev.lock: exact versions with hashes, so every
# machine and CI get the same packages. A file without a lock beside it is installed as named.
#
# REALTIME_DEPS switches to the newest releases instead of the lock (scripts/test-newest.sh
# sets it in its own copy of the tree; never set it for the main checkout's .venv):
#   newest  the newest releases inside the ranges of the requirements file (pip --upgrade)
#   latest  the newest releases, ignoring the ranges' bounds
set -euo pipefail
cd "$(dirname "$0")/.."
req="${1:-requirements.txt}"
mode="${REALTIME_DEPS:-lock}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
case "$mode" in
  lock)
    lock="${req%.txt}.lock"
    [ -f "$lock" ] || lock="$req"
    install=("${pip[@]}" -r "$lock")
    ;;
  newest)
    install=("${pip[@]}" --upgrade --upgrade-strategy eager -r "$req")
    ;;
  latest)
    # Every requirement of the file (and of the files it includes) by name and extras only.
    flat=$(mktemp)
    trap 'rm -f "$flat"' EXIT
    files=("$req")
    while read -r included; do files+=("$(dirname "$req")/$included"); done \
      < <(sed -nE 's/^-r[[:space:]]+//p' "$req")
    grep -hvE '^[[:space:]]*(#|-r|$)' "${files[@]}" | sed -E 's/[[:space:]]*[<>=!~;].*$//' >"$flat"
    install=("${pip[@]}" --upgrade --upgrade-strategy eager -r "$flat")
    ;;
  *)
    echo "bootstrap.sh: REALTIME_DEPS must be lock, newest or latest, not '$mode'" >&2
    exit 2
    ;;
esac
stamp=".venv/.installed-$(basename "$req")"
[ "$mode" = lock ] || stamp="$stamp.$mode"
digest=$(cat requirements*.txt requirements*.lock 2>/dev/null | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  "${install[@]}"
  echo "$digest" >"$stamp"
fi
