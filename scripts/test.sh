#!/usr/bin/env bash
# The whole test suite from scratch: .venv with pinned dependencies, real PostgreSQL and
# Redis servers, then pytest (unit, integration, e2e against real `manage.py serve`
# processes). Extra arguments go to pytest, e.g. scripts/test.sh -m slow.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh requirements-dev.txt
# Node runs the browser client's conformance fixtures; npm ci installs the TypeScript pinned in
# package-lock.json into node_modules/ for `tsc --checkJs` (tests/unit/client/test_conformance_js.py).
if ! command -v npm >/dev/null; then
  echo "installing nodejs npm (Debian packages)" >&2
  (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm) >&2
fi
npm ci --silent --no-audit --no-fund
services_dir=$(mktemp -d /tmp/realtime-test-services.XXXXXX)
trap 'scripts/services.sh stop "$services_dir"' EXIT
eval "$(scripts/services.sh start "$services_dir")"
export DATABASE_URL="$REALTIME_TEST_POSTGRES_URL"
unset REDIS_URL DJANGO_SECRET_KEY
# Quality gates first: they are fast and a red one means nothing should land.
.venv/bin/ruff format --check --quiet .
.venv/bin/ruff check --quiet .
.venv/bin/mypy . 2>/dev/null | tail -n 1
.venv/bin/lint-imports --no-cache | tail -n 1  # the layers and forbidden imports of pyproject.toml
status=0
.venv/bin/python -m pytest "$@" || status=$?
exit "$status"
