"""Settings for pytest's own process and for mypy's Django plugin: the production settings
with a throwaway secret key, since project/settings.py refuses to load without one outside
debug. Servers started by the tests get their key from ``tests/e2e/helpers.base_env``."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "pytest-and-mypy-only-key-0123456789abcdef0123456789abcdef")

from project.settings import *  # noqa: F403

# A test app that declares its own stream namespaces and client events (issue 16).
INSTALLED_APPS = [*INSTALLED_APPS, "tests.platform_app"]  # noqa: F405
