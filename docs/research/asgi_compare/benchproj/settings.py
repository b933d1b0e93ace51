"""Minimal Django settings for the ASGI server comparison (scratch project).

BENCH_LAYER=inmemory (default) -> channels.layers.InMemoryChannelLayer (tutorial shape)
BENCH_LAYER=none               -> no CHANNEL_LAYERS at all (consumers get no channel)
"""
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "asgi-bench-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "channels",
]
MIDDLEWARE = []
ROOT_URLCONF = "benchproj.urls"
ASGI_APPLICATION = "benchproj.asgi.application"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BENCH_DB", "/tmp/asgi-bench-db.sqlite3"),
    }
}
USE_TZ = True

if os.environ.get("BENCH_LAYER", "inmemory") == "inmemory":
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
else:
    CHANNEL_LAYERS = {}
