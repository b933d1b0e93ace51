#!/usr/bin/env bash
# Set up and run the service for development: SQLite, in-memory channel layer, demo users,
# http://127.0.0.1:8000 (WebSocket at ws://127.0.0.1:8000/ws/).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh requirements.txt
# Outside debug the server refuses to start without a secret key (docs/operations.md,
# "Credentials"): this checkout gets a random one, made once and kept in .secret_key
# (git-ignored, readable by its owner only), so tokens survive restarts.
if [ -z "${DJANGO_SECRET_KEY:-}" ]; then
    if [ ! -s .secret_key ]; then
        (umask 077 && .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(50))' >.secret_key)
        echo "generated a secret key for this checkout in .secret_key"
    fi
    DJANGO_SECRET_KEY=$(cat .secret_key)
    export DJANGO_SECRET_KEY
fi
.venv/bin/python manage.py migrate --noinput
.venv/bin/python manage.py seed_demo_users
exec .venv/bin/python manage.py serve --host 127.0.0.1 --port 8000
