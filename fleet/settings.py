"""Settings for Fleet Telemetry. Every value comes from the environment, with a default.

A bad value stops start-up with ImproperlyConfigured naming the variable.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

import fleet

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def envbool(name: str, default: str) -> bool:
    value = os.environ.get(name, default).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of 1/0, true/false, yes/no, on/off; got {value!r}")


def envint(name: str, default: str, minimum: int | None = 0) -> int:
    raw = os.environ.get(name, default)
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer; got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}; got {value}")
    return value


def envfloat(name: str, default: str, minimum: float = 0.0) -> float:
    raw = os.environ.get(name, default)
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number; got {raw!r}") from None
    if not value >= minimum or value == float("inf"):
        raise ImproperlyConfigured(f"{name} must be a finite number of at least {minimum}; got {raw!r}")
    return value


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


VAR_DIR = Path(os.environ.get("FLEET_VAR_DIR", BASE_DIR / "var")).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

# Off unless asked for: a deployment that forgets the variable must not serve debug pages or run
# without a secret key. `make run`, `runfleet` and the test suite turn it on explicitly.
DEBUG = envbool("DJANGO_DEBUG", "0")


def _secret_key() -> str:
    key = os.environ.get("DJANGO_SECRET_KEY", "")
    if key:
        return key
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off (DJANGO_DEBUG=1 is for local development only)"
        )
    # In debug, generate one once and keep it, so sessions survive restarts.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = envlist("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = envlist("DJANGO_CSRF_TRUSTED_ORIGINS", "")


def _trusted_proxies() -> int | list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """FLEET_TRUSTED_PROXIES: how many proxies stand in front (a count), or their addresses (a list)."""
    raw = os.environ.get("FLEET_TRUSTED_PROXIES", "").strip()
    if not raw:
        # DJANGO_BEHIND_PROXY=1, the older name, means one proxy.
        return 1 if envbool("DJANGO_BEHIND_PROXY", "0") else 0
    if raw.isdigit():
        return int(raw)
    try:
        return [ipaddress.ip_network(item, strict=False) for item in envlist("FLEET_TRUSTED_PROXIES", "")]
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"FLEET_TRUSTED_PROXIES must be a count or a comma-separated list of addresses or networks; {exc}"
        ) from None


# X-Forwarded-For and X-Forwarded-Proto are believed only when they come from these (see fleet.proxies).
FLEET_TRUSTED_PROXIES = _trusted_proxies()


def _dashboard_origins() -> list[str]:
    """Exact origins (scheme://host[:port]) whose pages may open the dashboard socket with a session."""
    explicit = envlist("DASHBOARD_ALLOWED_ORIGINS", "")
    for origin in explicit:
        parts = urlsplit(origin)
        host = parts.hostname or ""
        exact = parts.scheme in {"http", "https"} and host and not parts.path.strip("/") and not parts.query
        if origin == "*" or "*" in host or host.startswith(".") or not exact:
            raise ImproperlyConfigured(
                f"DASHBOARD_ALLOWED_ORIGINS must list exact origins such as https://fleet.example.com; got {origin!r}"
            )
    if explicit:
        return explicit
    # Derived from ALLOWED_HOSTS, whose entries carry no scheme or port: each host on any port, over
    # https (and http in debug). Wildcards (`*`, `.example.com`) are left out: a sibling subdomain's
    # page must not open a staff socket.
    schemes = ["https", "http"] if DEBUG else ["https"]
    hosts = [host for host in ALLOWED_HOSTS if "*" not in host and not host.startswith(".")]
    return [f"{scheme}://{host}:*" for host in hosts for scheme in schemes]


DASHBOARD_ALLOWED_ORIGINS = _dashboard_origins()

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_q",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "fleet",
    "metrics",
    "telemetry",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "fleet.urls"
ASGI_APPLICATION = "fleet.asgi.application"

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

# --- Database ---------------------------------------------------------------------------------
_database_url = os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'fleet.sqlite3'}")
try:
    DATABASES = {"default": dj_database_url.parse(_database_url)}
except Exception as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a database URL dj-database-url understands: {exc}") from None
DATABASE_POOL_SIZE = envint("DATABASE_POOL_SIZE", "20", minimum=1)
DATABASE_CONN_MAX_AGE = envint("DATABASE_CONN_MAX_AGE", "60")
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's psycopg pool, not CONN_MAX_AGE: under ASGI each HTTP request's sync code runs in a
    # thread of its own, so a kept connection would outlive its thread until the garbage collector
    # found it, and PostgreSQL ran out of clients. A pooled connection goes back to the pool when
    # its thread closes it, so threads come and go while the connections stay open.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 2,
        "max_size": DATABASE_POOL_SIZE,
        "timeout": 10,
    }
else:
    # SQLite: a connection is a file handle, so keeping one is cheap, and reusing it saves opening
    # the file and running the PRAGMAs below on every use of the long-lived threads (the credential
    # loader, the history writer). Health checks drop a connection that went bad.
    DATABASES["default"]["CONN_MAX_AGE"] = DATABASE_CONN_MAX_AGE
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite is shared by daphne, qcluster and tests' server processes: wait for locks, don't fail.
    # IMMEDIATE: a transaction takes the write lock when it begins, so concurrent writers queue
    # up instead of failing on lock upgrade, and read-modify-write (the aggregation cursor) is
    # serialised the way SELECT ... FOR UPDATE serialises it on PostgreSQL.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not :memory:, so that end-to-end tests' daphne processes see the test database;
    # one per test run, so that concurrent runs in one checkout don't share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis ------------------------------------------------------------------------------------
# One place decides where Redis is; everything else asks fleet.redis.
REDIS_EMBEDDED = not os.environ.get("REDIS_URL")
REDIS_SCHEMES = {"redis", "rediss", "unix"}


def redis_url(name: str, url: str) -> str:
    if url and urlsplit(url).scheme not in REDIS_SCHEMES:
        raise ImproperlyConfigured(f"{name} must start with redis://, rediss:// or unix://; got {url!r}")
    return url


REDIS_URL = redis_url("REDIS_URL", os.environ.get("REDIS_URL") or f"unix://{VAR_DIR / 'redis' / 'redis.sock'}")
# The event and mission streams may live on a Redis of their own (docs/scaling.md): the streams other
# modules of the platform share, away from the live path's presence and latest values. Empty: REDIS_URL.
FLEET_STREAMS_REDIS_URL = redis_url("FLEET_STREAMS_REDIS_URL", os.environ.get("FLEET_STREAMS_REDIS_URL", ""))
# A hung Redis must never hold a request for long.
REDIS_CONNECT_TIMEOUT = envfloat("REDIS_CONNECT_TIMEOUT", "0.5")
REDIS_SOCKET_TIMEOUT = envfloat("REDIS_SOCKET_TIMEOUT", "0.5")
REDIS_MAX_CONNECTIONS = envint("REDIS_MAX_CONNECTIONS", "1000", minimum=1)

# The channel layers may have Redis servers of their own (docs/scaling.md): channels-redis shards
# channels and groups over its hosts by consistent hashing. Default: the one REDIS_URL.
CHANNELS_REDIS_URLS = envlist("CHANNELS_REDIS_URLS", "") or [REDIS_URL]
for _url in CHANNELS_REDIS_URLS:
    if urlsplit(_url).scheme not in REDIS_SCHEMES:
        raise ImproperlyConfigured(f"CHANNELS_REDIS_URLS must list redis://, rediss:// or unix:// URLs; got {_url!r}")
_CHANNELS_HOSTS = [
    # No CLIENT SETINFO per new connection (see fleet.redis).
    {
        "address": url,
        "max_connections": REDIS_MAX_CONNECTIONS,
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
        "driver_info": None,
    }
    for url in CHANNELS_REDIS_URLS
]
CHANNEL_LAYERS = {
    # Robot sockets' own messages (robot.replace, robot.revoke): rare, and kept in Redis until read.
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # No socket timeout (redis-py's default is 5 s). With one, redis-py sends each command
            # through asyncio.wait_for, which on Python 3.11 loses a cancellation that lands as the send
            # completes; channels-redis' receive() then pops on forever and its consumer never ends.
            # The blocking pops wait 5 s on the server; callers that must not wait on a hung Redis
            # bound their own calls.
            "hosts": [{**host, "socket_timeout": None} for host in _CHANNELS_HOSTS],
            "capacity": envint("CHANNELS_CAPACITY", "500", minimum=1),
            # expiry bounds what a vanished consumer leaves behind.
            "expiry": 60,
            # Consumers refresh their memberships well within this (see telemetry.connections).
            "group_expiry": 86400,
        },
    },
    # The dashboards' fan-out (fleet.fanout): Redis Pub/Sub. A process reads each message in
    # one step, where the default layer needs four round trips in a row per message and falls behind
    # when the event loop is saturated. Dashboards coalesce what they receive, so nothing piles up.
    "fanout": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        # Its receive() reads a local queue, which a cancellation always ends, so it keeps a socket
        # timeout: the flusher's publish to a hung Redis gives up after 10 s.
        "CONFIG": {"hosts": [{**host, "socket_timeout": 10} for host in _CHANNELS_HOSTS]},
    },
}

Q_CLUSTER = {
    "name": "fleet",
    "workers": envint("Q_WORKERS", "2", minimum=1),
    "timeout": 300,
    "retry": 360,
    "max_attempts": 1,
    # Missed runs after downtime must not replay as a burst.
    "catch_up": False,
    "redis": REDIS_URL,
    "broker_class": "fleet.cluster.RedisBroker",  # stops within 0.25 s instead of 1 s
    "save_limit": 250,
    "ack_failures": True,
    "label": "Django Q2",
}

# --- Auth, API, static ------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/admin/login/"
LOGIN_REDIRECT_URL = "/dashboard/"

REST_FRAMEWORK = {
    # Token first: an anonymous caller gets 401 with `WWW-Authenticate: Token`, not a bare 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "fleet.authentication.TokenOrBearerAuthentication",  # `Token <key>` or `Bearer <key>`
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "fleet.api.Pagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "fleet.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "fleet.api.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.AnonRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"anon": os.environ.get("API_ANON_THROTTLE", "120/minute")},
    # The client address is REMOTE_ADDR, which fleet.proxies has already taken from X-Forwarded-For
    # when (and only when) a trusted proxy sent it. DRF must not read the header again itself.
    "NUM_PROXIES": 0,
}
# Login attempts (admin and the browsable API) per client address, per process, counted on POST.
LOGIN_THROTTLE = os.environ.get("LOGIN_THROTTLE", "10/minute")
SPECTACULAR_SETTINGS = {
    "TITLE": "Fleet Telemetry API",
    "DESCRIPTION": "Robot telemetry, fleet presence, mission counters and lifecycle events.",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI is served from our own static files: the service must work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "VERSION": fleet.__version__,
}

CACHES = {
    # DRF's anonymous throttle counts live here. Per process on purpose: a hung Redis must not
    # turn every anonymous request into an error, and the limit is a guard, not a quota.
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
# Under daphne there is no runserver to serve static files in debug; whitenoise does it.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# --- Production hardening (check --deploy) ----------------------------------------------------
if not DEBUG:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = envbool("DJANGO_SECURE_SSL_REDIRECT", "1")
    # Load balancers and Prometheus speak plain HTTP to the process.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = envint("DJANGO_SECURE_HSTS_SECONDS", "31536000")
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", "1")
    SECURE_HSTS_PRELOAD = envbool("DJANGO_SECURE_HSTS_PRELOAD", "0")
# No SECURE_PROXY_SSL_HEADER: fleet.proxies sets the request's scheme from X-Forwarded-Proto, and
# only when a trusted proxy sent it; Django's setting would believe anyone who sends the header.

DJANGO_LOG_FORMAT = os.environ.get("DJANGO_LOG_FORMAT", "plain").strip().lower()
if DJANGO_LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"DJANGO_LOG_FORMAT must be plain or json; got {DJANGO_LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"connection": {"()": "fleet.logs.ContextFilter"}},
    "formatters": {
        "plain": {"()": "fleet.logs.PlainFormatter", "format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "fleet.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": DJANGO_LOG_FORMAT, "filters": ["connection"]}
    },
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {
        # daphne logs every request at INFO through these; keep them quiet unless asked.
        "daphne": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
    },
}

# --- Fleet: events ----------------------------------------------------------------------------
FLEET_EVENT_STREAM = os.environ.get("FLEET_EVENT_STREAM", "brain:events:stream")
FLEET_EVENT_STREAM_MAXLEN = envint("FLEET_EVENT_STREAM_MAXLEN", "100000", minimum=1)
FLEET_EVENT_BUFFER = envint("FLEET_EVENT_BUFFER", "10000", minimum=1)
FLEET_EVENT_FLUSH_TIMEOUT = envfloat("FLEET_EVENT_FLUSH_TIMEOUT", "5")

# --- Metrics ----------------------------------------------------------------------------------
FLEET_MISSION_STREAM = os.environ.get("FLEET_MISSION_STREAM", "brain.events.missions")
METRICS_AGGREGATION_BATCH = envint("METRICS_AGGREGATION_BATCH", "5000", minimum=1)
METRICS_AGGREGATION_MAX_PER_RUN = envint("METRICS_AGGREGATION_MAX_PER_RUN", "1000000", minimum=1)
METRICS_AGGREGATION_INTERVAL = envint("METRICS_AGGREGATION_INTERVAL", "30", minimum=1)
METRICS_SNAPSHOT_RETENTION_DAYS = envint("METRICS_SNAPSHOT_RETENTION_DAYS", "90", minimum=1)
METRICS_BEARER_TOKEN = os.environ.get("METRICS_BEARER_TOKEN", "")
# Without a token, /metrics answers anyone only in debug, or when this says so on purpose.
METRICS_ALLOW_ANONYMOUS = envbool("METRICS_ALLOW_ANONYMOUS", "1" if DEBUG else "0")

# --- Telemetry --------------------------------------------------------------------------------
# Robots send their token on the handshake: refuse handshakes that did not arrive over TLS (wss://
# to us, or https to the trusted proxy in front, per its X-Forwarded-Proto).
ROBOTS_REQUIRE_TLS = envbool("ROBOTS_REQUIRE_TLS", "0" if DEBUG else "1")
TELEMETRY_MAX_MESSAGE_BYTES = envint("TELEMETRY_MAX_MESSAGE_BYTES", "65536", minimum=1024)
TELEMETRY_MAX_FRAMES_PER_SECOND = envint("TELEMETRY_MAX_FRAMES_PER_SECOND", "20", minimum=1)
TELEMETRY_MAX_INVALID_FRAMES = envint("TELEMETRY_MAX_INVALID_FRAMES", "10", minimum=1)
TELEMETRY_IDLE_TIMEOUT = envfloat("TELEMETRY_IDLE_TIMEOUT", "120", minimum=0.1)
TELEMETRY_MAX_CONNECTS_PER_MINUTE = envint("TELEMETRY_MAX_CONNECTS_PER_MINUTE", "30", minimum=1)
TELEMETRY_SAMPLE_INTERVAL = envfloat("TELEMETRY_SAMPLE_INTERVAL", "10")
TELEMETRY_RETENTION_DAYS = envint("TELEMETRY_RETENTION_DAYS", "30", minimum=1)
TELEMETRY_PUBLISH_MIN_INTERVAL = envfloat("TELEMETRY_PUBLISH_MIN_INTERVAL", "1.0")
TELEMETRY_PUBLISH_ON_READ = envbool("TELEMETRY_PUBLISH_ON_READ", "1")
TELEMETRY_PUBLISH_ON_INGEST = envbool("TELEMETRY_PUBLISH_ON_INGEST", "0")
TELEMETRY_PRESENCE_TTL = envfloat("TELEMETRY_PRESENCE_TTL", "60", minimum=0.5)
TELEMETRY_STALE_AFTER = envfloat("TELEMETRY_STALE_AFTER", "30", minimum=0.1)
TELEMETRY_FLUSH_INTERVAL = envfloat("TELEMETRY_FLUSH_INTERVAL", "0.05", minimum=0.001)
TELEMETRY_DASHBOARD_STALL_TIMEOUT = envfloat("TELEMETRY_DASHBOARD_STALL_TIMEOUT", "30", minimum=0.1)
TELEMETRY_SESSION_RETENTION_DAYS = envint(
    "TELEMETRY_SESSION_RETENTION_DAYS", os.environ.get("TELEMETRY_RETENTION_DAYS", "30"), minimum=1
)
# The connection edge (docs/websocket.md, "Limits"): what one socket may make a process hold.
TELEMETRY_MAX_UNSENT_BYTES = envint("TELEMETRY_MAX_UNSENT_BYTES", str(2**20), minimum=1024)
TELEMETRY_MAX_PENDING_MESSAGES = envint("TELEMETRY_MAX_PENDING_MESSAGES", "64", minimum=1)
TELEMETRY_FLOOD_FACTOR = envint("TELEMETRY_FLOOD_FACTOR", "5", minimum=1)
TELEMETRY_FLOOD_SECONDS = envint("TELEMETRY_FLOOD_SECONDS", "5", minimum=1)
TELEMETRY_BACKFILL_COMMIT_TIMEOUT = envfloat("TELEMETRY_BACKFILL_COMMIT_TIMEOUT", "10", minimum=0.1)
# The per-process credential cache (telemetry.credentials).
TELEMETRY_AUTH_CACHE_TTL = envfloat("TELEMETRY_AUTH_CACHE_TTL", "60", minimum=0.1)
TELEMETRY_AUTH_CACHE_SIZE = envint("TELEMETRY_AUTH_CACHE_SIZE", "100000", minimum=1)
TELEMETRY_AUTH_UNKNOWN_TTL = envfloat("TELEMETRY_AUTH_UNKNOWN_TTL", "10", minimum=0.1)
TELEMETRY_AUTH_UNKNOWN_SIZE = envint("TELEMETRY_AUTH_UNKNOWN_SIZE", "10000", minimum=1)
TELEMETRY_AUTH_RECHECK_INTERVAL = envfloat("TELEMETRY_AUTH_RECHECK_INTERVAL", "30", minimum=0.1)

# --- Prometheus -------------------------------------------------------------------------------
# Collectors that /metrics reads at scrape time, from the database or Redis, so that every
# process reports the same numbers.
METRICS_COLLECTORS = [
    "metrics.prometheus.CounterCollector",
    "metrics.prometheus.JobRunsCollector",
    "fleet.events.prometheus.EventsCollector",
    "fleet.build.BuildInfoCollector",
    "telemetry.prometheus.FleetCollector",
    "telemetry.prometheus.AlertCollector",
    "telemetry.prometheus.FanoutCollector",
    "telemetry.refusals.RefusalCollector",
    # Per process, not fleet-wide: see telemetry/latency.py.
    "telemetry.latency.LatencyCollector",
]
