"""Django settings, driven by the environment variables of PROTOCOL.md section 1."""

from __future__ import annotations

import contextlib
import os
import sys
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from realtime.conf import RealtimeSettings

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

_DEV_SECRET_KEY = "dev-insecure-key-change-me-0123456789abcdef0123456789abcdef"  # noqa: S105
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="") or _DEV_SECRET_KEY
if SECRET_KEY == _DEV_SECRET_KEY and "pytest" not in sys.modules:
    sys.stderr.write("warning: DJANGO_SECRET_KEY is not set; using the development key (never in production)\n")

DEBUG = env.bool("DJANGO_DEBUG", default=False)
# The service sits behind a proxy or is reached on loopback; Host is not used to build
# URLs, so any host is accepted unless the operator narrows it.
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["*"])

REALTIME = RealtimeSettings.from_env(os.environ)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "channels",
    "accounts",
    "realtime",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves /static/ (admin assets, the browser client) from the production server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"
AUTH_USER_MODEL = "accounts.User"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the single writer; IMMEDIATE transactions take the
    # write lock up front so concurrent writers queue instead of failing to upgrade.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    )
# Keep connections open between requests and between async ORM calls (all of which run
# in one database thread): opening a connection per call was ~10-20 % of the publish and
# connect profiles on SQLite (docs/performance.md).
DATABASES["default"].setdefault("CONN_MAX_AGE", 600)
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
# Which channels-redis layer carries the bus (docs/decisions.md): "core" (lists, one
# message per process group member) or "pubsub" (Redis PUBLISH/SUBSCRIBE).
REDIS_LAYER = env.str("REALTIME_REDIS_LAYER", default="core")
if REDIS_LAYER not in ("core", "pubsub"):
    raise ImproperlyConfigured(f"REALTIME_REDIS_LAYER={REDIS_LAYER!r}: expected core or pubsub")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": {
                "core": "channels_redis.core.RedisChannelLayer",
                "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
            }[REDIS_LAYER],
            # redis-py's default 5 s socket timeout equals channels-redis's blocking-pop
            # timeout, so an idle connection timed out every 5 s and looked like a broker
            # outage (system.degraded / system.recovered). Broker health is judged by the
            # bus's own short ping (realtime/bus.py), not by this socket.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15, "socket_keepalive": True}]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# WhiteNoise warns at every start when the collectstatic target is missing; an empty one is fine.
with contextlib.suppress(OSError):
    STATIC_ROOT.mkdir(exist_ok=True)
# Without collectstatic (development, tests) files are found in the apps' static/ folders.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": None,
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=REALTIME.access_token_ttl),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=1),
    "ALGORITHM": "HS256",
    "SIGNING_KEY": SECRET_KEY,
    "UPDATE_LAST_LOGIN": False,
}

LOG_FORMAT = env.str("REALTIME_LOG_FORMAT", default="json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact_tokens": {"()": "realtime.log.RedactTokensFilter"}},
    "formatters": {
        "json": {"()": "realtime.log.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "json" if LOG_FORMAT == "json" else "text",
            "filters": ["redact_tokens"],
        },
    },
    "root": {"handlers": ["stderr"], "level": env.str("REALTIME_LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # uvicorn logs every accepted WebSocket at INFO; the consumer's own connect line,
        # which carries the connection id and user, replaces it.
        "uvicorn.error": {"level": "WARNING"},
        "uvicorn.access": {"level": "WARNING"},
    },
}
