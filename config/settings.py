"""Weightgate settings: every value comes from the environment, read once, here.

Each helper fails loudly on a malformed value. A secret may be given as `NAME` or as `NAME_FILE`
(a path to a file holding it, as mounted by Docker or Kubernetes secrets). For local use,
`.local/env` (written by `python -m infra.local start`) fills in what the environment leaves unset.
"""

from __future__ import annotations

import base64
import os
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import dj_database_url
import django_stubs_ext
from celery.schedules import crontab
from csp import constants as csp_constants
from django.core.exceptions import ImproperlyConfigured

from config.logs import FORMATS as LOG_FORMATS
from config.logs import logging_config

# Lets generic classes from Django be subscripted at run time (ModelAdmin[Model]) for mypy.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent


def _read_local_env_file() -> dict[str, str]:
    path = Path(os.environ.get("WEIGHTGATE_ENV_FILE", BASE_DIR / ".local" / "env"))
    if not path.is_file():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs if not key.startswith("#")}


_LOCAL_ENV = _read_local_env_file()


def env_str(name: str, default: str | None = None) -> str:
    """`NAME`, else `NAME_FILE`'s content, else `.local/env`, else the default; else fail."""
    if name in os.environ:
        return os.environ[name]
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as error:
            raise ImproperlyConfigured(
                f"{name}_FILE={file_name} cannot be read: {error}"
            ) from error
    if name in _LOCAL_ENV:
        return _LOCAL_ENV[name]
    if default is None:
        raise ImproperlyConfigured(f"{name} must be set (or {name}_FILE)")
    return default


def env_bool(name: str, default: bool) -> bool:
    raw = env_str(name, "1" if default else "0").strip().lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off", ""}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = env_str(name, str(default))
    try:
        value = int(raw)
    except ValueError as error:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from error
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum {minimum}")
    return value


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
if len(SECRET_KEY) < 32:
    raise ImproperlyConfigured("SECRET_KEY must be at least 32 characters")


def _signing_master_key(name: str) -> bytes:
    """The AES-256-GCM key that encrypts signing keys at rest: base64 of 32 random bytes
    (`openssl rand -base64 32`). Losing it makes every stored signing key unreadable; errors
    never echo the value."""
    try:
        key = base64.b64decode(env_str(name), validate=True)
    except ValueError as error:  # binascii.Error included
        raise ImproperlyConfigured(f"{name} is not valid base64") from error
    if len(key) != 32:
        raise ImproperlyConfigured(f"{name} must be base64 of 32 bytes (AES-256), not {len(key)}")
    return key


SIGNING_MASTER_KEY = _signing_master_key("SIGNING_MASTER_KEY")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
# Public base URL of this service, used in links it hands out (e.g. access request pages).
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

# Behind TLS in production: cookies only over HTTPS. Local HTTP use sets SECURE_COOKIES=0.
SECURE_COOKIES = env_bool("SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    # A Prometheus scraper and a load balancer's or kubelet's probes talk plain HTTP to the
    # process itself, past the proxy: a redirect to https:// would fail every scrape, and a probe
    # counts a redirect as healthy without asking the database.
    SECURE_REDIRECT_EXEMPT = [r"^metrics$", r"^healthz$", r"^readyz$"]
    SECURE_HSTS_SECONDS = 31536000

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "allauth",
    "allauth.account",
    "licensing",
    "release",
]

MIDDLEWARE = [
    # First: request id and metrics for everything below, the others included.
    "config.observability.RequestObservabilityMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "config.request_limits.RequestLimitsMiddleware",
    "config.content_security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "config" / "templates"],
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

try:
    DATABASES = {
        "default": dj_database_url.parse(
            env_str("DATABASE_URL"), conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60)
        )
    }
except ValueError as error:
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {error}") from error
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured("DATABASE_URL must point at PostgreSQL (postgres://...)")
# A connection kept between requests is checked before its first use in each request, so one
# broken by a database restart or failover is replaced instead of failing the request.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# libpq waits for ever for a host that does not answer: bound it (a `connect_timeout` in
# DATABASE_URL's query string wins).
DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
    "connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT_SECONDS", 5, minimum=1)
)
# While the database cannot be reached, requests answer 503 with this Retry-After, and tasks
# retry with backoff for about half an hour (config/outages.py).
DATABASE_RETRY_AFTER_SECONDS = env_int("DATABASE_RETRY_AFTER_SECONDS", 10, minimum=1)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
# A Redis that hangs, rather than dies, must fail requests in seconds (a clean 503), not hang them.
REDIS_SOCKET_TIMEOUT_SECONDS = env_int("REDIS_SOCKET_TIMEOUT_SECONDS", 5, minimum=1)
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {
            "socket_timeout": REDIS_SOCKET_TIMEOUT_SECONDS,
            "socket_connect_timeout": REDIS_SOCKET_TIMEOUT_SECONDS,
        },
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")  # how the admin shows times; they are stored in UTC
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / ".local" / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# The portal's stylesheet and script: plain files, no build step.
STATICFILES_DIRS = [BASE_DIR / "config" / "static"]

# Developer accounts (django-allauth): sign in with an email address, which must be verified
# before the first sign-in. Staff keep signing in to /admin/ with their username.
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "catalog"
ACCOUNT_LOGOUT_REDIRECT_URL = "catalog"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
# A link scanner in a mail gateway that follows the link must not confirm the address: the page
# asks for a click (POST).
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Weightgate] "
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https" if env_bool("BEHIND_TLS_PROXY", False) else "http"
# Counted in Redis (the cache), so every web process shares one count. `key` is the email
# address typed in: a password guesser is slowed per account as well as per address.
ACCOUNT_RATE_LIMITS = {
    "login": "30/m/ip",
    "login_failed": "10/m/ip,5/5m/key",
    "signup": "20/h/ip",
    "reset_password": "20/m/ip,3/h/key",
    "reset_password_from_key": "20/m/ip",
    "confirm_email": "1/3m/key",
    "change_password": "5/m/user",
    "manage_email": "10/m/user",
    "reauthenticate": "10/m/user",
}
# Behind a proxy every request comes from the proxy's address: name how many proxies append to
# X-Forwarded-For, so that per-address limits (and the IP recorded with an access request from
# the portal) use the client's own address. 0 trusts no such header.
ALLAUTH_TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)

# Content-Security-Policy (django-csp; Django 5.2 has none of its own, 6.0 will). Scripts only
# from this origin (or an inline one carrying the per-response nonce); inline styles allowed,
# because the admin and the API docs page use them and they cannot run code.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'", csp_constants.NONCE],
        "style-src": ["'self'", "'unsafe-inline'"],
        # Model cards may show images (badges, diagrams) from other HTTPS hosts.
        "img-src": ["'self'", "data:", "https:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# Logs: one JSON object per line (production: for a log pipeline) or plain lines (`make demo`
# sets LOG_FORMAT=plain); each line made while a request or task runs carries its request id.
LOG_FORMAT = env_str("LOG_FORMAT", "json")
if LOG_FORMAT not in LOG_FORMATS:
    raise ImproperlyConfigured(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
LOGGING: dict[str, Any] = logging_config(log_format=LOG_FORMAT, level=env_str("LOG_LEVEL", "INFO"))

# Prometheus metrics at /metrics. With METRICS_TOKEN set, a scraper sends it as a bearer token;
# without it only a scraper on this host, talking to us directly, is answered.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
if METRICS_TOKEN and len(METRICS_TOKEN) < 16:
    raise ImproperlyConfigured("METRICS_TOKEN must be at least 16 characters")
# One directory per service (web, worker) where each process writes its values, summed at scrape
# time; needed with several processes (gunicorn workers, the prefork pool). prometheus_client
# reads it from the process environment when it is imported, so it comes from there only (not
# from NAME_FILE or .local/env).
PROMETHEUS_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if PROMETHEUS_MULTIPROC_DIR and not Path(PROMETHEUS_MULTIPROC_DIR).is_dir():
    raise ImproperlyConfigured("PROMETHEUS_MULTIPROC_DIR must be an existing directory")
# A Celery worker serves its own metrics over HTTP on this port (0: off), from its main process.
# Loopback by default: the server has no authentication of its own.
CELERY_METRICS_PORT = env_int("CELERY_METRICS_PORT", 0)
if CELERY_METRICS_PORT > 65535:
    raise ImproperlyConfigured("CELERY_METRICS_PORT must be a TCP port (0 turns it off)")
CELERY_METRICS_ADDR = env_str("CELERY_METRICS_ADDR", "127.0.0.1")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "licensing.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    # A JSON API: a form or multipart body is a 415 with the error body, and no upload is ever
    # parsed into memory or onto disk.
    "DEFAULT_PARSER_CLASSES": ["config.parsers.StrictJSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "DEFAULT_PAGINATION_CLASS": "config.pagination.StrictLimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "config.schema.AutoSchema",  # documents the error answers too
    "EXCEPTION_HANDLER": "config.exceptions.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Weightgate API",
    "DESCRIPTION": "Staged release and licensing of model weights.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Request bodies get their own components: what is required, how short a string may be.
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "Phase": "release.models.Phase",
        "UnlockTarget": ["gated", "open"],
    },
}

# Object storage (S3 API). Staging is where training uploads land; gated is private and reached
# only through presigned URLs; public is anonymous-read for open artifacts.
S3_ENDPOINT_URL = env_str("S3_ENDPOINT_URL")
S3_REGION = env_str("S3_REGION", "us-east-1")
S3_ACCESS_KEY_ID = env_str("S3_ACCESS_KEY_ID")
S3_SECRET_ACCESS_KEY = env_str("S3_SECRET_ACCESS_KEY")
S3_ADDRESSING_STYLE = env_str("S3_ADDRESSING_STYLE", "path")
if S3_ADDRESSING_STYLE not in {"path", "virtual", "auto"}:
    raise ImproperlyConfigured("S3_ADDRESSING_STYLE must be path, virtual or auto")
S3_BUCKET_STAGING = env_str("S3_BUCKET_STAGING", "weightgate-staging")
S3_BUCKET_GATED = env_str("S3_BUCKET_GATED", "weightgate-gated")
S3_BUCKET_PUBLIC = env_str("S3_BUCKET_PUBLIC", "weightgate-public")
# Where the public bucket is read anonymously (a CDN in front of it, say).
S3_PUBLIC_BASE_URL = env_str("S3_PUBLIC_BASE_URL", S3_ENDPOINT_URL).rstrip("/")
# Publishing uploads files larger than this as multipart uploads of parts this size (S3's
# minimum part is 5 MiB); smaller ones in one PUT.
S3_PART_SIZE_MIB = env_int("S3_PART_SIZE_MIB", 64, minimum=5)

# Downloads: presigned URLs live long enough for a large file with resumes; per-token requests
# per minute and per-grant downloads per day are counted in Redis.
DOWNLOAD_URL_TTL_SECONDS = env_int("DOWNLOAD_URL_TTL_SECONDS", 12 * 3600, minimum=60)
DOWNLOAD_RATE_PER_MINUTE = env_int("DOWNLOAD_RATE_PER_MINUTE", 1200, minimum=1)
DOWNLOAD_DAILY_QUOTA = env_int("DOWNLOAD_DAILY_QUOTA", 10_000, minimum=1)

# Celery: Redis broker, JSON only, a task is acknowledged after it ran so a killed worker's task
# is redelivered (every task is written to be safe to run twice).
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
# Light control work (ticks, flips, bookkeeping) and heavy transfer work (hashing, pushing
# bytes) go to separate queues, so transfer-only worker hosts can be added for big releases.
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_DEFAULT_QUEUE", "control")
CELERY_TRANSFER_QUEUE = env_str("CELERY_TRANSFER_QUEUE", "transfer")
CELERY_TASK_ROUTES = {
    "release.tasks.ingest_hash_file": {"queue": CELERY_TRANSFER_QUEUE},
    "release.tasks.unlock_push_file": {"queue": CELERY_TRANSFER_QUEUE},
    "release.tasks.open_blob_publish": {"queue": CELERY_TRANSFER_QUEUE},
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 3600, minimum=1)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 3300, minimum=1)
# With acks_late, a task still unacknowledged after this long is handed to another worker:
# it must exceed the longest task.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT + 600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
HEARTBEAT_INTERVAL = timedelta(seconds=env_int("HEARTBEAT_INTERVAL_SECONDS", 30, minimum=1))
# Unlocks are pushed and verified this long before their due time, so the flip itself is
# instant; the tick that drives them runs every UNLOCK_TICK_SECONDS.
UNLOCK_PRESTAGE_LEAD_HOURS = env_int("UNLOCK_PRESTAGE_LEAD_HOURS", 24)
UNLOCK_TICK_SECONDS = env_int("UNLOCK_TICK_SECONDS", 15, minimum=1)
UNLOCK_PUSH_LEASE_SECONDS = env_int("UNLOCK_PUSH_LEASE_SECONDS", 300, minimum=1)
# The signed revocation list expires this long after it is signed (clients then know it is
# stale); it is re-signed on every revocation and every REVOCATION_LIST_REFRESH_SECONDS.
REVOCATION_LIST_TTL_SECONDS = env_int("REVOCATION_LIST_TTL_SECONDS", 600, minimum=60)
REVOCATION_LIST_REFRESH_SECONDS = env_int("REVOCATION_LIST_REFRESH_SECONDS", 60, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "downloads-flush": {
        "task": "release.tasks.downloads_flush",
        "schedule": 10.0,
        "options": {"expires": 10.0},
    },
    "revocation-list": {
        "task": "licensing.tasks.revocation_list_refresh",
        "schedule": float(REVOCATION_LIST_REFRESH_SECONDS),
        "options": {"expires": float(REVOCATION_LIST_REFRESH_SECONDS)},
    },
    "ingests-resume": {
        "task": "release.tasks.ingests_resume",
        "schedule": 300.0,
        "options": {"expires": 300.0},
    },
    "unlocks-tick": {
        "task": "release.tasks.unlocks_tick",
        "schedule": float(UNLOCK_TICK_SECONDS),
        "options": {"expires": float(UNLOCK_TICK_SECONDS)},
    },
    "heartbeat": {
        "task": "release.tasks.heartbeat",
        "schedule": HEARTBEAT_INTERVAL.total_seconds(),
        # A beat that queues faster than workers drain must not pile up stale heartbeats.
        "options": {"expires": HEARTBEAT_INTERVAL.total_seconds()},
    },
}

# Email, through Django's backends: printed to the console unless a mail server is given, either
# as EMAIL_URL (smtp://user:password@host:25, smtp+tls:// for STARTTLS, smtps:// for implicit
# TLS) or as EMAIL_HOST with EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD, EMAIL_USE_TLS.
_SMTP_SCHEMES = {"smtp": 25, "smtp+tls": 587, "smtps": 465}


def _smtp_url(name: str) -> dict[str, Any]:
    """Errors name the variable, never its value (it holds a password)."""
    parts = urlsplit(env_str(name))
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(f"{name} has an invalid port") from None
    if parts.scheme not in _SMTP_SCHEMES or not parts.hostname:
        raise ImproperlyConfigured(
            f"{name} must look like smtp://user:password@host:port "
            f"(schemes: {', '.join(_SMTP_SCHEMES)})"
        )
    return {
        "host": parts.hostname,
        "port": port or _SMTP_SCHEMES[parts.scheme],
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "tls": parts.scheme == "smtp+tls",
        "ssl": parts.scheme == "smtps",
    }


if env_str("EMAIL_URL", ""):
    _smtp = _smtp_url("EMAIL_URL")
    EMAIL_HOST, EMAIL_PORT = _smtp["host"], _smtp["port"]
    EMAIL_HOST_USER, EMAIL_HOST_PASSWORD = _smtp["user"], _smtp["password"]
    EMAIL_USE_TLS, EMAIL_USE_SSL = _smtp["tls"], _smtp["ssl"]
else:
    EMAIL_HOST = env_str("EMAIL_HOST", "")
    EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
    EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS (STARTTLS) and EMAIL_USE_SSL exclude each other")
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend",
)
# A mail server that stops answering must not hold a worker for ever.
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT_SECONDS", 10, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Weightgate <weightgate@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# Outgoing webhooks. Endpoints on private, loopback, link-local or otherwise non-public
# addresses are refused (a webhook must not become a way to reach the internal network) unless
# this is set, for a receiver on the same private network or in tests.
WEBHOOK_ALLOW_PRIVATE_ADDRESSES = env_bool("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", False)
WEBHOOK_TIMEOUT_SECONDS = env_int("WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1)
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 8, minimum=1)
# Retries wait base * 2^(attempt - 1) seconds, jittered, at most the maximum. The maximum must
# stay below the broker's visibility timeout, or Redis hands the waiting retry out twice.
WEBHOOK_RETRY_BASE_SECONDS = env_int("WEBHOOK_RETRY_BASE_SECONDS", 30)
WEBHOOK_RETRY_MAX_SECONDS = env_int("WEBHOOK_RETRY_MAX_SECONDS", 1800)
if CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] <= WEBHOOK_RETRY_MAX_SECONDS:
    raise ImproperlyConfigured(
        "WEBHOOK_RETRY_MAX_SECONDS must be below the visibility timeout "
        "(CELERY_TASK_TIME_LIMIT + 600)"
    )
# The daily digest of pending access requests, for models whose policy asks for one (UTC hour).
REVIEWER_DIGEST_HOUR = env_int("REVIEWER_DIGEST_HOUR", 8)
if REVIEWER_DIGEST_HOUR > 23:
    raise ImproperlyConfigured("REVIEWER_DIGEST_HOUR must be 0-23")
CELERY_BEAT_SCHEDULE["reviewer-digest"] = {
    "task": "licensing.tasks.reviewer_digest_send",
    "schedule": crontab(hour=REVIEWER_DIGEST_HOUR, minute=0),
    # A digest that could not go out within the hour is dropped; the next one lists the same.
    "options": {"expires": 3600.0},
}
CELERY_BEAT_SCHEDULE["webhook-deliveries-requeue"] = {
    "task": "licensing.tasks.webhook_deliveries_requeue",
    "schedule": 300.0,
    "options": {"expires": 300.0},
}
