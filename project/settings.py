"""Django settings, driven by the environment variables of PROTOCOL.md section 1."""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from accounts.keys import jwt_keys_from_env, secret_key_from_env
from realtime.conf import RealtimeSettings, SettingsError, redis_urls

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={raw!r}: expected true or false")


def _seconds(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ImproperlyConfigured(f"{name}={raw!r}: expected a whole number of seconds")
    return int(raw)


DEBUG = _flag("DJANGO_DEBUG", False)
# Required outside debug, never a key from the repository (accounts/keys.py).
SECRET_KEY = secret_key_from_env(os.environ, debug=DEBUG)
# Local names only unless the operator lists the public ones: a forged Host never reaches
# anything that builds URLs from it (admin password-reset links, redirects).
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# Behind a TLS-terminating proxy (deploy/nginx sets X-Forwarded-Proto, overwriting whatever
# the client sent): Django then knows requests are HTTPS, cookies are HTTPS-only, plain HTTP
# is redirected (except the probes, which load balancers send over plain HTTP) and browsers
# are told to use HTTPS only (HSTS). docs/operations.md, "Production settings".
HTTPS = _flag("DJANGO_HTTPS", False)
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = _seconds("DJANGO_HSTS_SECONDS", 31_536_000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _flag("DJANGO_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = _flag("DJANGO_HSTS_PRELOAD", False)

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
    # Refresh tokens are recorded when issued and blacklisted when used or logged out.
    "rest_framework_simplejwt.token_blacklist",
    # OpenAPI schema of the REST endpoints; the sidecar serves Swagger UI without a CDN.
    "drf_spectacular",
    "drf_spectacular_sidecar",
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
    # synchronous=FULL syncs the WAL at every commit, so an acked publish survives a power
    # cut and its offset is never handed out again under the same epoch; NORMAL syncs only
    # at checkpoints (faster, but the last commits may vanish with the power: docs/operations.md).
    SQLITE_SYNCHRONOUS = env.str("REALTIME_SQLITE_SYNCHRONOUS", default="FULL").upper()
    if SQLITE_SYNCHRONOUS not in ("FULL", "NORMAL"):
        raise ImproperlyConfigured(f"REALTIME_SQLITE_SYNCHRONOUS={SQLITE_SYNCHRONOUS!r}: expected FULL or NORMAL")
    options = DATABASES["default"].setdefault("OPTIONS", {})
    options.update(
        {
            "init_command": f"PRAGMA journal_mode=WAL; PRAGMA synchronous={SQLITE_SYNCHRONOUS};",
            "transaction_mode": "IMMEDIATE",
        }
    )
    # Seconds to wait for a lock; `sqlite:///path?timeout=N` overrides it.
    options.setdefault("timeout", 20)
# Keep connections open between requests and between async ORM calls (all of which run
# in one database thread): opening a connection per call was ~10-20 % of the publish and
# connect profiles on SQLite (docs/performance.md).
DATABASES["default"].setdefault("CONN_MAX_AGE", 600)
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# One Redis URL, or a comma-separated list of them: one bus shard each, streams spread over
# them by a stable hash of their name (realtime/streams/bus_shards.py; docs/operations.md,
# "Several Redis servers"). REDIS_URL is the first: the cache, the control group and the
# presence store live there, and with one URL everything is as it always was.
try:
    REDIS_URLS = redis_urls(env.str("REDIS_URL", default=""))
except SettingsError as exc:
    raise ImproperlyConfigured(str(exc)) from None
REDIS_URL = REDIS_URLS[0] if REDIS_URLS else ""
# Which channels-redis layer carries the bus (docs/decisions.md): "pubsub" (Redis
# PUBLISH/SUBSCRIBE; the default: it keeps up with a large fan-out, measured) or "core"
# (lists, one message per process group member).
REDIS_LAYER = env.str("REALTIME_REDIS_LAYER", default="pubsub")
if REDIS_LAYER not in ("core", "pubsub"):
    raise ImproperlyConfigured(f"REALTIME_REDIS_LAYER={REDIS_LAYER!r}: expected core or pubsub")


def _redis_layer(url: str) -> dict[str, object]:
    return {
        "BACKEND": {
            "core": "channels_redis.core.RedisChannelLayer",
            "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
        }[REDIS_LAYER],
        # redis-py's default 5 s socket timeout equals channels-redis's blocking-pop
        # timeout, so an idle connection timed out every 5 s and looked like a broker
        # outage (system.degraded / system.recovered). Broker health is judged by the
        # bus's own short ping (realtime/streams/bus.py), not by this socket.
        # group_expiry: the layer drops a group member this long after it joined; the bus
        # re-joins its groups every quarter of it (realtime/streams/bus.py), so memberships last as
        # long as the process while a crashed process's channel still leaves its groups.
        "CONFIG": {
            "hosts": [{"address": url, "socket_timeout": 15, "socket_keepalive": True}],
            **({"group_expiry": REALTIME.group_expiry} if REDIS_LAYER == "core" else {}),
        },
    }


if REDIS_URL:
    # "default" is the first URL's; shard i > 0 is "realtime.shard<i>" (bus_shards.layer_alias).
    CHANNEL_LAYERS = {
        ("default" if index == 0 else f"realtime.shard{index}"): _redis_layer(url)
        for index, url in enumerate(REDIS_URLS)
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# The cache holds login-throttle counters: in Redis they are shared by every server, so N
# servers do not multiply the allowance by N (accounts/throttling.py).
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "realtime",
            "OPTIONS": {"socket_timeout": 1, "socket_connect_timeout": 1},
        }
    }

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
        # simplejwt's, plus the account-state check of accounts/tokens.py.
        "accounts.authentication.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": None,
    # The client address is the one the server resolved (it honours X-Forwarded-For only from
    # FORWARDED_ALLOW_IPS); DRF's default would trust whatever X-Forwarded-For a client sends.
    "NUM_PROXIES": 0,
    "DEFAULT_THROTTLE_RATES": {
        "login_username": REALTIME.login_rate,
        "login_address": REALTIME.login_address_rate,
    },
}

# docs/specs.md: /api/schema/ and /api/docs/ are generated from the views, never hand-written.
SPECTACULAR_SETTINGS = {
    "TITLE": "realtime REST API",
    "DESCRIPTION": "JWT tokens and versioned resources (PROTOCOL.md sections 1 and 7). "
    "The WebSocket protocol is described by the AsyncAPI document at /docs/asyncapi.json.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

JWT_KEYS = jwt_keys_from_env(os.environ, SECRET_KEY)
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=REALTIME.access_token_ttl),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=1),
    "ALGORITHM": JWT_KEYS.algorithm,
    "SIGNING_KEY": JWT_KEYS.signing_key,
    "VERIFYING_KEY": JWT_KEYS.verifying_key,
    "UPDATE_LAST_LOGIN": False,
    # A refresh returns a new refresh token and blacklists the one it used.
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "TOKEN_OBTAIN_SERIALIZER": "accounts.serializers.TokenObtainSerializer",
    "TOKEN_REFRESH_SERIALIZER": "accounts.serializers.TokenRefreshSerializer",
}

LOG_FORMAT = env.str("REALTIME_LOG_FORMAT", default="json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact_tokens": {"()": "realtime.ops.structured_logging.RedactTokensFilter"}},
    "formatters": {
        "json": {"()": "realtime.ops.structured_logging.JsonFormatter"},
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
        # A request with a Host outside DJANGO_ALLOWED_HOSTS gets 400; Django would also log
        # it as an error with a traceback, so anyone could fill the log by probing names.
        "django.security.DisallowedHost": {"level": "CRITICAL"},
    },
}
