#!/usr/bin/env bash
# Set up and run the service for development: SQLite, in-memory channel layer, demo users,
# http://127.0.0.1:8000 (WebSocket at ws://127.0.0.1:8000/ws/).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh requirements.txt
.venv/bin/python manage.py migrate --noinput
.venv/bin/python manage.py seed_demo_users
exec .venv/bin/python manage.py serve --host 127.0.0.1 --port 8000
