"""The task board's settings: a plain Django project plus what the realtime and accounts apps read.

Environment: ``DJANGO_SECRET_KEY`` (required), ``DATABASE_URL`` (default: SQLite next to this
project), ``REDIS_URL`` (several servers), and the service's ``REALTIME_*`` / ``JWT_ACCESS_TTL``
variables (``REALTIME_ALLOWED_ORIGINS`` above all: the origins pages are served from).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import environ
from realtime.conf import RealtimeSettings

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",  # refresh tokens are revoked on logout and rotation
    "accounts",
    "realtime",
    "tasks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # /static/ (the browser client) from `manage.py serve`
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "taskboard_site.urls"
ASGI_APPLICATION = "taskboard_site.asgi.application"
# The realtime app's sessions and events refer to the accounts app's user (tokens carry its version).
AUTH_USER_MODEL = "accounts.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]

DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Readers beside the one writer; writers queue for the lock instead of failing to upgrade.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", "transaction_mode": "IMMEDIATE"}
    )

# The service's settings, REALTIME_* variables over their defaults (docs/operations.md).
REALTIME = RealtimeSettings.from_env(os.environ)

# Without Redis: one server process, the in-memory layer. With it: any number of servers.
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # Longer than the layer's 5 s blocking pop, so an idle connection does not time out.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15, "socket_keepalive": True}],
                "group_expiry": REALTIME.group_expiry,
            },
        }
    }
    # Login throttles and the server API's rate, shared by every server.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

REST_FRAMEWORK = {
    # simplejwt's check plus the account's state (disabled users, revoked tokens).
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.JWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_THROTTLE_RATES": {"login_username": REALTIME.login_rate, "login_address": REALTIME.login_address_rate},
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=REALTIME.access_token_ttl),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=1),
    "SIGNING_KEY": SECRET_KEY,
    "UPDATE_LAST_LOGIN": False,
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    # Tokens carry the user's token version: a password change revokes them.
    "TOKEN_OBTAIN_SERIALIZER": "accounts.serializers.TokenObtainSerializer",
    "TOKEN_REFRESH_SERIALIZER": "accounts.serializers.TokenRefreshSerializer",
}

STATIC_URL = "static/"
# For a deployment, set STATIC_ROOT and run collectstatic.
WHITENOISE_USE_FINDERS = True  # without collectstatic, files come from the apps' static/ folders

USE_TZ = True
TIME_ZONE = "UTC"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "INFO"},
}
