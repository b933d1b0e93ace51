.PHONY: serve test test-fast lint types check

serve:  ## set up and run the service on http://127.0.0.1:8000 (SQLite, in-memory layer, demo users)
	scripts/serve.sh

test:  ## the whole suite from scratch: .venv, real PostgreSQL and Redis, pytest
	scripts/test.sh

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
