.PHONY: serve test test-fast test-newest lock lint types check

serve:  ## set up and run the service on http://127.0.0.1:8000 (SQLite, in-memory layer, demo users)
	scripts/serve.sh

test:  ## the whole suite from scratch: .venv, real PostgreSQL and Redis, pytest
	scripts/test.sh

test-newest:  ## the whole suite on the newest releases inside requirements*.txt's ranges (NEWEST_BEYOND_RANGES=1: beyond)
	scripts/test-newest.sh

# Lock tool in a throwaway venv, not in the project's requirements.
LOCK_TOOL := /tmp/realtime-lock-tool
LOCK_FLAGS := --quiet --generate-hashes --python python3 --custom-compile-command "make lock"
lock:  ## re-pin requirements*.lock from requirements*.txt, keeping pins that still fit; UPGRADE=1 or UPGRADE_PACKAGE=NAME moves them
	test -x $(LOCK_TOOL)/bin/uv || (python3 -m venv $(LOCK_TOOL) && $(LOCK_TOOL)/bin/pip install --quiet uv==0.13.9)
	$(LOCK_TOOL)/bin/uv pip compile $(LOCK_FLAGS) $(if $(UPGRADE),--upgrade) $(if $(UPGRADE_PACKAGE),--upgrade-package $(UPGRADE_PACKAGE)) requirements-dev.txt -o requirements-dev.lock
	$(LOCK_TOOL)/bin/uv pip compile $(LOCK_FLAGS) -c requirements-dev.lock requirements.txt -o requirements.lock

test-fast:  ## unit tests only, no servers
	scripts/bootstrap.sh requirements-dev.txt
	.venv/bin/python -m pytest tests/unit

lint:
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

types:
	.venv/bin/mypy .

check:
	.venv/bin/ruff format --check .
	.venv/bin/ruff check .
	.venv/bin/mypy .
	.venv/bin/lint-imports
