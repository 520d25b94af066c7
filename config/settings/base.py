"""Settings shared by every environment.

Every value that differs between machines comes from the environment through
django-environ; `.env.example` lists them all. `dev.py`, `test.py` and `prod.py`
only change what must differ between those environments.
"""

from pathlib import Path

import environ
from celery.schedules import crontab
from django_guid.integrations import CeleryIntegration

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
if (BASE_DIR / ".env").exists():
    env.read_env(str(BASE_DIR / ".env"))

SECRET_KEY = env("SECRET_KEY")
DEBUG = env.bool("DEBUG", default=False)

# --- Hosts -----------------------------------------------------------------
# BASE_DOMAIN is what people type: "localhost:8000" in development,
# "hydronet.example.com" in production. Tenants live on <slug>.BASE_DOMAIN.
BASE_DOMAIN = env("BASE_DOMAIN", default="localhost:8000").lower()
BASE_HOSTNAME = BASE_DOMAIN.split(":")[0]
SITE_SCHEME = env("SITE_SCHEME", default="http")
# The tenant domain table is the real allowlist: TenantRoutingMiddleware answers
# 404 for every host it does not know, and custom tenant domains cannot be listed
# here in advance.
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"])

# --- Applications ----------------------------------------------------------
# django-tenants: SHARED_APPS live in the public schema, TENANT_APPS in every
# tenant schema. An app listed in both is installed in both.
SHARED_APPS = [
    "django_tenants",
    "apps.core",
    "apps.tenants",
    "apps.plans",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.messages",
    "django.contrib.admin",
    "django.contrib.staticfiles",
    "apps.accounts",
    "apps.api",
    "apps.openai_api",
    "rest_framework",
    # No models: installed for its translations, which Django loads only from installed apps.
    "rest_framework_simplejwt",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    # Each request's id (X-Request-ID), in its answer and in every log line it causes, its tasks' included.
    "django_guid",
]
TENANT_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "apps.accounts",
    "apps.audit",
    "apps.llm",
    "apps.mcp",
    "apps.chat",
    "apps.usage",
    # The refresh-token blacklist lives in each tenant's schema.
    "rest_framework_simplejwt.token_blacklist",
]
INSTALLED_APPS = list(SHARED_APPS) + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "tenants.Tenant"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_URLCONF = "config.urls_public"
ROOT_URLCONF = "config.urls_tenant"
SHOW_PUBLIC_IF_NO_TENANT_FOUND = False
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)
# New tenants are copies of this schema, which `manage.py migrate_platform`
# keeps migrated; while it is missing or behind they are built by migrations.
# Tenant.create_schema does this itself (apps.tenants.schemas), so django-tenants'
# TENANT_CREATION_FAKES_MIGRATIONS is not used.
TENANT_BASE_SCHEMA = "tenant_base"
# Issue `SET search_path` once per connection and tenant switch, not before every
# query (django-tenants re-issues it after set_tenant, rollbacks and reconnects).
TENANT_LIMIT_SET_CALLS = True

MIDDLEWARE = [
    "apps.core.middleware.HealthCheckMiddleware",
    "django_guid.middleware.guid_middleware",
    "django.middleware.security.SecurityMiddleware",
    "apps.core.middleware.ContentSecurityPolicyMiddleware",
    "apps.openai_api.cors.OpenAiCorsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "apps.tenants.middleware.TenantRoutingMiddleware",
    "apps.tenants.middleware.TenantShareMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.core.context_processors.site",
            ],
        },
    },
]

WSGI_APPLICATION = "config.wsgi.application"

# --- Database --------------------------------------------------------------
DATABASES = {"default": env.db_url("DATABASE_URL")}
DATABASES["default"]["ENGINE"] = "apps.tenants.postgresql_backend"  # django-tenants', see its docstring
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Web processes (config/wsgi.py turns this on) share one pool of connections among their
# threads: a thread takes a warm connection for a request and gives it back after, so no
# request waits for a new connection (a persistent one per thread was reopened every
# CONN_MAX_AGE on the request's own time, ~5 ms). Celery and manage.py, which fork, keep
# Django's connection per thread. The pool must have a connection for every thread that
# serves a request (a streamed reply holds one to its end): keep the size >= WEB_THREADS.
DATABASE_POOL = env.bool("DATABASE_POOL", default=False)
if DATABASE_POOL:
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps the connections
    # No check on checkout (a round trip per request): the SET search_path sent first is the
    # check, and a connection that fails it is swapped for another (apps.tenants.postgresql_backend).
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=2),
        "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=max(32, env.int("WEB_THREADS", default=0))),
        "max_lifetime": env.float("DATABASE_POOL_MAX_LIFETIME", default=3600.0),  # replaced in the background
        "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and Redis -------------------------------------------------------
REDIS_URL = env("REDIS_URL")
CACHE_KEY_PREFIX = env("CACHE_KEY_PREFIX", default="hn")
# How long a request waits for Redis: to connect, and for each reply. Redis answers in a
# millisecond or so (every script here is short, nothing blocks on the server); a Redis that
# hangs (CLIENT PAUSE, DEBUG SLEEP, a stuck host) must cost a request this and no more before
# the fail-open/fail-closed decisions below apply. Without them redis-py waits 5 s per command.
REDIS_SOCKET_CONNECT_TIMEOUT = env.float("REDIS_SOCKET_CONNECT_TIMEOUT", default=0.5)
# A reply gets 1 s: a busy host's process can be off the CPU for half of that (seen on 2 cores under load).
REDIS_SOCKET_TIMEOUT = env.float("REDIS_SOCKET_TIMEOUT", default=1.0)
# After a command timed out, the process does not try that Redis again for this long: every use fails
# at once, as if it were unreachable (apps.core.redis_connections), so a request pays one timeout at most.
REDIS_PAUSE_SECONDS = env.float("REDIS_PAUSE_SECONDS", default=2.0)
# Both caches name the same Redis, and django-redis keeps one connection pool per URL for the
# process, made with the options of whichever cache connects first: the options must be the same.
_REDIS_OPTIONS = {
    "CLIENT_CLASS": "django_redis.client.DefaultClient",
    "CONNECTION_POOL_CLASS": "apps.core.redis_connections.ConnectionPool",
    "SOCKET_CONNECT_TIMEOUT": REDIS_SOCKET_CONNECT_TIMEOUT,
    "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT,
}
CACHES = {
    # Tenant-aware: every key is prefixed with the current schema (django-tenants
    # #599), so one tenant's cached values never answer another's request.
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": CACHE_KEY_PREFIX,
        "KEY_FUNCTION": "django_tenants.cache.make_key",
        "REVERSE_KEY_FUNCTION": "django_tenants.cache.reverse_key",
        "OPTIONS": {**_REDIS_OPTIONS},
    },
    # Platform-wide keys that must not depend on the schema the connection
    # happens to be in, such as the host -> tenant routing table. It is only a
    # cache of PostgreSQL: while Redis is unreachable, lookups go to the database
    # instead of failing (fail open), and /readyz reports Redis as down.
    "platform": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{CACHE_KEY_PREFIX}:platform",
        "OPTIONS": {**_REDIS_OPTIONS, "IGNORE_EXCEPTIONS": True},
    },
}
# How long a host -> tenant lookup is cached. Changes to a tenant or domain drop
# the entry at once; the timeout only bounds a read that raced a write.
TENANT_ROUTING_CACHE_SECONDS = env.int("TENANT_ROUTING_CACHE_SECONDS", default=300)

# Sessions live in each schema's accounts_usersession table, which also records
# the user, so deactivating someone can end every session they have.
SESSION_ENGINE = "apps.accounts.sessions"
# Host-only cookies: never a parent-domain cookie, or one tenant's session would
# be sent to every other tenant's host.
SESSION_COOKIE_DOMAIN = None
CSRF_COOKIE_DOMAIN = None
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=60 * 60 * 24 * 14)
LANGUAGE_COOKIE_SAMESITE = "Lax"

# --- Auth ------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
PASSWORD_HASHERS = [
    "apps.accounts.hashers.OwaspArgon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator",
        "OPTIONS": {"user_attributes": ("email", "full_name")},
    },
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "tenants:dashboard"
LOGOUT_REDIRECT_URL = "accounts:login"

# --- Internationalization --------------------------------------------------
LANGUAGE_CODE = "zh-hans"
LANGUAGES = [("zh-hans", "简体中文"), ("en", "English")]
LOCALE_PATHS = [BASE_DIR / "locale"]
# Where our number formats differ from Django's: zh-hans groups digits by three (config/formats/zh_Hans).
FORMAT_MODULE_PATH = ["config.formats"]
USE_I18N = True
TIME_ZONE = env("TIME_ZONE", default="Asia/Shanghai")
USE_TZ = True

# --- Static files ----------------------------------------------------------
STATIC_URL = "/static/"
# Files tenants store (exports, uploads), under tenants/<schema>/; counted in their storage.
MEDIA_ROOT = env.path("MEDIA_ROOT", default=str(BASE_DIR / ".devdata" / "media"))
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

# --- Email -----------------------------------------------------------------
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="HydroNet Cloud <noreply@hydronet.localhost>")

# --- DRF and OpenAPI -------------------------------------------------------
REST_FRAMEWORK = {
    # Each API view names its own authentication (apps.api.base); nothing is implied.
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["apps.api.parsers.JSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "apps.api.negotiation.ContentNegotiation",
    "EXCEPTION_HANDLER": "apps.core.exceptions.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "apps.api.schema.OperationAutoSchema",
    "DEFAULT_METADATA_CLASS": "apps.api.metadata.PathMetadata",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "HydroNet Cloud API",
    "DESCRIPTION": (
        "The API of one HydroNet Cloud workspace, served on its own host. Authenticate with a JWT "
        "(`POST /api/auth/login`, then `Authorization: Bearer <access>`), or with an API key "
        "(`Authorization: Bearer hn_...` or `X-API-Key: hn_...`). Errors are "
        '`{"error": {"code", "message", "details"}}`.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # No "Patched..." request components with every field optional: each PATCH serializer says what it requires
    # (a rename's title), and none is validated as partial.
    "COMPONENT_SPLIT_PATCH": False,
    "DEFAULT_GENERATOR_CLASS": "apps.api.routing.OperationsSchemaGenerator",
    "ENUM_NAME_OVERRIDES": {
        "RoleEnum": "apps.accounts.models.Role",
        "TypeEnum": "apps.mcp.models.Transport",  # the MCP service's; its name before /v1's response_format
        "ResponseFormatTypeEnum": "apps.openai_api.apis.RESPONSE_FORMAT_TYPES",
    },
}

from .jwt import *  # noqa: E402,F403

# --- Rate limits (django-ratelimit, on the Redis cache) ---------------------
# One workspace's requests in progress at once in a web process (apps.tenants.middleware.TenantShareMiddleware):
# half the threads by default, so the other half is always there for the other workspaces. 0: no limit.
WEB_THREADS = env.int("WEB_THREADS", default=16)  # the threads of a web process (deploy.web)
TENANT_MAX_IN_FLIGHT = env.int("TENANT_MAX_IN_FLIGHT", default=max(1, WEB_THREADS // 2))
# Of those threads, this many are kept for workspaces with fewer than two requests in progress: a workspace holding
# two may take another only while more are free. Two busy workspaces, each within its half, took every thread
# together, and a third waited behind them (QA, 2026-12-07).
TENANT_RESERVED_THREADS = env.int("TENANT_RESERVED_THREADS", default=max(1, WEB_THREADS // 4))
RATELIMIT_USE_CACHE = "default"
RATELIMIT_ENABLE = True
# Sign-ups per client IP address.
SIGNUP_RATE_LIMIT = env("SIGNUP_RATE_LIMIT", default="10/h")
# Behind a reverse proxy, name the header that carries the client address,
# for example HTTP_X_REAL_IP. Unset, REMOTE_ADDR is used.
_ip_header = env("RATELIMIT_IP_META_KEY", default="")
if _ip_header:
    RATELIMIT_IP_META_KEY = _ip_header

# --- Tenancy and plans -----------------------------------------------------
TRIAL_DAYS = env.int("TRIAL_DAYS", default=14)

# --- Secrets at rest ---------------------------------------------------------
# Fernet keys (comma-separated; the first encrypts, all decrypt) for the secrets
# tenants store: model API keys, MCP auth headers. Generate one with
# python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS", default=[])


def derived_fernet_key(secret: str) -> str:
    """A Fernet key from SECRET_KEY, for development and tests only."""
    import base64
    import hashlib

    return base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest()).decode()


# --- AI: model servers, MCP tools, chat ----------------------------------------
# The platform's default OpenAI-compatible model server. `make run` points it at
# the offline demo model server when it is unset.
LLM_BASE_URL = env("LLM_BASE_URL", default="")
LLM_API_KEY = env("LLM_API_KEY", default="")
LLM_MODEL = env("LLM_MODEL", default="")
LLM_MODELS = env.list("LLM_MODELS", default=[LLM_MODEL] if LLM_MODEL else [])
LLM_TIMEOUT_SECONDS = env.float("LLM_TIMEOUT_SECONDS", default=60.0)
LLM_CONNECT_TIMEOUT_SECONDS = env.float("LLM_CONNECT_TIMEOUT_SECONDS", default=5.0)
# Retries (with openai's exponential backoff) on connection errors, 429 and 5xx.
LLM_MAX_RETRIES = env.int("LLM_MAX_RETRIES", default=2)
# A model server that answers asking for a longer wait than this (Retry-After) is not retried: openai waited up to
# two minutes before each attempt, with the turn, its web thread and its conversation waiting too.
LLM_MAX_RETRY_AFTER_SECONDS = env.float("LLM_MAX_RETRY_AFTER_SECONDS", default=20.0)
# The most bytes (decoded) of one streamed answer: a reply of CHAT_MAX_REPLY_CHARS characters, one character an
# event with OpenAI's ~230 bytes around it, is about 23 MB. Past it the answer is a failure, in words.
LLM_MAX_STREAM_BYTES = env.int("LLM_MAX_STREAM_BYTES", default=32 * 1024 * 1024)
# The most bytes of one event of a streamed answer, which the stream's decoder holds whole until it ends: a chunk is
# a token or a tool call's piece, some hundreds of bytes. One of 30 MB grew a web process by 166 MB.
LLM_MAX_EVENT_BYTES = env.int("LLM_MAX_EVENT_BYTES", default=1024 * 1024)
# The most "test connection" reads of a model server's answer to GET /models (decoded; an error page too): a
# larger one is refused, in words. OpenAI's own list of about 100 models is some 10 kB; 1 MiB holds thousands.
LLM_MODEL_LIST_MAX_BYTES = env.int("LLM_MODEL_LIST_MAX_BYTES", default=1024 * 1024)
CHAT_MAX_MESSAGE_CHARS = env.int("CHAT_MAX_MESSAGE_CHARS", default=8000)
# The most characters of one model reply: its text, refusal and tool calls' arguments together (some 25,000
# tokens of English, more than models write in one reply). Past it the reply is stopped and fails, in words,
# keeping what came: a reply of 60 MB was stored, shown and sent back to the model with every later turn.
CHAT_MAX_REPLY_CHARS = env.int("CHAT_MAX_REPLY_CHARS", default=100_000)
# The longest a turn may take, from its start (every model round and tool call): no round or call starts after
# it, and a model stream still going is stopped there, keeping what came. A server that trickles tokens held a
# turn, its web thread and one of the workspace's places for as long as it went on, for a client long gone.
CHAT_TURN_MAX_SECONDS = env.int("CHAT_TURN_MAX_SECONDS", default=300)
# The most messages one /v1/chat/completions request may send, counted before any is checked.
CHAT_MAX_REQUEST_MESSAGES = env.int("CHAT_MAX_REQUEST_MESSAGES", default=2000)
# Tool rounds (model asks for tools, tools run, model reads the results) per turn.
CHAT_MAX_TOOL_ROUNDS = env.int("CHAT_MAX_TOOL_ROUNDS", default=5)
# Tool calls run of one model reply: a model may ask for hundreds at once, and each runs in turn, for up to its
# timeout. Those past it are not run; each is answered so (an error result the model reads), and not charged.
CHAT_MAX_TOOL_CALLS_PER_REPLY = env.int("CHAT_MAX_TOOL_CALLS_PER_REPLY", default=16)
# One turn at a time in a conversation (409 conversation_busy): a turn holds its conversation while it goes on,
# its process renewing the hold for this long every third of it (apps.usage.meter._Heartbeat); a worker that died
# mid-turn frees it after it (it was 300 s until 2026-12-08: a crashed turn's conversation stayed busy 5 minutes).
CHAT_TURN_HOLD_SECONDS = env.int("CHAT_TURN_HOLD_SECONDS", default=30)
# A web process told to stop (a deploy) lets its chat turns go on this long, then stops them as at their deadline,
# keeping what came, so that they end cleanly before the web server's kill (deploy.web.GRACEFUL_SECONDS, 30 s):
# killed, a turn lost its partial reply and left its conversation busy (apps.core.shutdown).
WEB_TURN_GRACE_SECONDS = env.float("WEB_TURN_GRACE_SECONDS", default=20)
# Earlier messages sent back to the model with each turn.
CHAT_HISTORY_MESSAGES = env.int("CHAT_HISTORY_MESSAGES", default=40)
MCP_DEFAULT_TIMEOUT_SECONDS = env.int("MCP_DEFAULT_TIMEOUT_SECONDS", default=30)
# A tool result longer than this is stored and sent to the model truncated.
MCP_RESULT_MAX_CHARS = env.int("MCP_RESULT_MAX_CHARS", default=20_000)
# The most one answer of an MCP server may hold (streamable HTTP, as an event stream's event or a JSON body; the
# SDK's SSE transport reads 1 MiB at most): a larger one fails the call, in words. Its text is truncated to
# MCP_RESULT_MAX_CHARS after it is read.
MCP_MAX_ANSWER_BYTES = env.int("MCP_MAX_ANSWER_BYTES", default=8 * 1024 * 1024)
# The most a server's loaded tool list may hold, all its pages together, as stored (JSON, UTF-8): the tools past it
# are not loaded, as those past the 500th. The list is stored on the service, cached with the AI setup that every
# chat turn reads, and sent to the model; a large real server's list is some 100 kB.
MCP_MAX_TOOL_LIST_BYTES = env.int("MCP_MAX_TOOL_LIST_BYTES", default=1024 * 1024)

# --- Outbound requests to tenant-supplied URLs (SSRF guard, apps.core.outbound) --
# Networks (comma-separated CIDRs) that tenant-supplied URLs may reach even though
# they are not public internet addresses. Empty in production (check --deploy warns
# otherwise: core.W001); dev and test allow loopback so the demo servers can be reached.
OUTBOUND_ALLOWED_NETWORKS = env.list("OUTBOUND_ALLOWED_NETWORKS", default=[])
# The most one DNS lookup of a tenant-supplied host may take, in seconds: on save (a 400 after it) and at
# every connect (a connect timeout). A resolver that never answers would otherwise hold the thread for its
# whole retry schedule.
OUTBOUND_RESOLVE_TIMEOUT_SECONDS = env.float("OUTBOUND_RESOLVE_TIMEOUT_SECONDS", default=5.0)

# --- Identity ----------------------------------------------------------------
# Brute force: after LOCKOUT_ATTEMPTS failures within LOCKOUT_WINDOW_SECONDS, for
# one (tenant, email) or one IP address, logins, API-key guesses and password-reset
# requests get 429 until the window passes.
LOCKOUT_ATTEMPTS = env.int("LOCKOUT_ATTEMPTS", default=5)
LOCKOUT_WINDOW_SECONDS = env.int("LOCKOUT_WINDOW_SECONDS", default=15 * 60)
INVITATION_DAYS = env.int("INVITATION_DAYS", default=7)
PASSWORD_RESET_TIMEOUT = env.int("PASSWORD_RESET_TIMEOUT", default=60 * 60)
# An API key's last_used_at is written at most this often.
API_KEY_LAST_USED_RESOLUTION_SECONDS = 60

# --- Celery ----------------------------------------------------------------
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=REDIS_URL)
CELERY_RESULT_EXPIRES = 60 * 60 * 24
CELERY_TASK_DEFAULT_QUEUE = env("CELERY_TASK_DEFAULT_QUEUE", default="hydronet")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = {
    "clear-expired-sessions": {
        "task": "apps.accounts.tasks.clear_expired_sessions_everywhere",
        "schedule": crontab(hour=3, minute=17),
    },
    # Usage: the ledger into usage_stats every minute, storage every ten minutes.
    "flush-usage": {
        "task": "apps.tenants.tasks.run_for_each_tenant",
        "schedule": 60.0,
        "args": ("apps.usage.tasks.flush_usage",),
    },
    "measure-storage": {
        "task": "apps.tenants.tasks.run_for_each_tenant",
        "schedule": crontab(minute="*/10"),
        "args": ("apps.usage.tasks.measure_storage",),
    },
    # Quota alerts whose email the mail server did not take within the task's retries: tried again.
    "resend-alert-emails": {
        "task": "apps.tenants.tasks.run_for_each_tenant",
        "schedule": crontab(minute="5-59/10"),
        "args": ("apps.usage.tasks.resend_unsent_alert_emails",),
    },
}

# --- Logging ---------------------------------------------------------------
# Every request has an id: a proxy's X-Request-ID (a UUID; anything else is replaced), else a new one. The answer
# carries it (openai's clients show it as ``_request_id``), the 500 page and error show it to quote, and each log
# line has it, the lines of the Celery tasks the request queued too (django-guid).
DJANGO_GUID = {
    "GUID_HEADER_NAME": "X-Request-ID",
    "EXPOSE_HEADER": False,  # /v1's CORS middleware exposes it, with the rate limit's headers
    "INTEGRATIONS": [CeleryIntegration(use_django_logging=True)],
}
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "django_guid.log_filters.CorrelationId"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s [%(correlation_id)s] %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["request_id"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "django_guid": {"level": "WARNING"},  # a line per request, saying it made an id
        # One line per outbound request is noise; failures are logged where they are handled.
        "httpx2": {"level": "WARNING"},
        "httpcore2": {"level": "WARNING"},
        "mcp": {"level": "WARNING"},
        # A tenant's broken MCP server is not the platform's error: the SDK logs it with a traceback at ERROR
        # (a JSON answer it cannot parse); apps.mcp.client logs each failure in one WARNING line instead.
        "mcp.client": {"level": "CRITICAL"},
    },
}

# --- Security --------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
# Sent with every response (apps.core.middleware.ContentSecurityPolicyMiddleware; docs/architecture.md, "A
# Content-Security-Policy behind it"): scripts only from our own files, nothing from another origin. Inline styles stay
# allowed: the templates, the Django admin and Swagger UI set some.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
CSRF_FAILURE_VIEW = "apps.core.views.csrf_failure"
