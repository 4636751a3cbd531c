"""Django settings, read from the environment.

With no environment at all the hub runs on its embedded default: SQLite in var/ and Celery's
filesystem transport. DATABASE_URL and REDIS_URL (or CELERY_BROKER_URL) switch to PostgreSQL and
Redis with no code change. See the configuration table in README.md.
"""

from __future__ import annotations

from pathlib import Path

from kombu import Exchange, Queue

from integrationhub.env import broker_config, database_config, env_bool, env_list, env_str
from integrationhub.production_keys import EMBEDDED_SECRET_KEY, production_keys_require

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("HUB_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
# The development key only works with DEBUG on or in the embedded default: with DEBUG off and DATABASE_URL set the
# hub refuses to start without real SECRET_KEY and FIELD_ENCRYPTION_KEY (the check below the encryption key).
SECRET_KEY = env_str("SECRET_KEY", EMBEDDED_SECRET_KEY)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()

# Fernet keys, comma separated: the first encrypts, all of them decrypt (key rotation).
FIELD_ENCRYPTION_KEY = env_str("FIELD_ENCRYPTION_KEY", "")
# Here, while the settings load, so that no process (manage.py, gunicorn, worker, beat) starts with public keys.
production_keys_require(
    debug=DEBUG,
    database_url=env_str("DATABASE_URL"),
    secret_key=SECRET_KEY,
    field_encryption_key=FIELD_ENCRYPTION_KEY,
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "import_export",
    "simple_history",
    "django_celery_beat",
    "governance",
    "connectors",
    "mappings",
    "sync",
    "workflows",
    "exception_queue",
    "insights",
    "sandbox",
    "alerts",
    "reconciliation",
    # Last on purpose: its post_migrate hook assigns permissions of every app above to the roles.
    "integrationhub",
]

MIDDLEWARE = [
    # Outermost, so its request latency covers every other middleware.
    "insights.metrics.PrometheusMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "integrationhub.logging.CorrelationIdMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
]

ROOT_URLCONF = "integrationhub.urls"
WSGI_APPLICATION = "integrationhub.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

DATABASES = {"default": database_config(database_url=env_str("DATABASE_URL"), var_dir=VAR_DIR)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # Bounded waits: a Redis host that drops packets must fail a request in seconds (the inbound budget
            # then fails open), not after the operating system's two-minute connect timeout.
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 5},
        }
    }
else:
    # A file cache is shared by the web process and the workers, which a local-memory cache is not.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/admin/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every request when it is missing
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
if DEBUG:
    STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
# Import needs the add permission (auditors cannot import); export needs view.
IMPORT_EXPORT_IMPORT_PERMISSION_CODE = "add"
IMPORT_EXPORT_EXPORT_PERMISSION_CODE = "view"
DATA_UPLOAD_MAX_MEMORY_SIZE = int(env_str("HUB_MAX_BODY_BYTES", str(1024 * 1024)))

# --- Django REST framework -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["integrationhub.permissions.RoleModelPermissions"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "integrationhub.errors.problem_exception_handler",
}
SPECTACULAR_SETTINGS = {
    # Several models have a `status`, `state` or `direction` with different choices: name each enum.
    "ENUM_NAME_OVERRIDES": {
        # Messages and mapping sets both say inbound/outbound, each with its own labels: one enum each.
        "DirectionEnum": "sync.choices.MessageDirection",
        "MappingDirectionEnum": "mappings.choices.Direction",
        "MappingStatusEnum": "mappings.choices.MappingStatus",
        "MessageStatusEnum": "sync.choices.MessageStatus",
        "DeliveryStatusEnum": "sync.choices.DeliveryStatus",
        "FileDropStatusEnum": "sync.choices.FileDropStatus",
        "FollowUpStatusEnum": "sync.choices.FollowUpStatus",
        "SystemStateEnum": "connectors.choices.SystemState",
        "ExceptionStateEnum": "exception_queue.choices.ExceptionState",
    },
    "TITLE": "Integration Hub API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# --- Celery ----------------------------------------------------------------------------------------
CELERY_BROKER_URL, CELERY_BROKER_TRANSPORT_OPTIONS = broker_config(
    broker_url=env_str("CELERY_BROKER_URL") or REDIS_URL, var_dir=VAR_DIR
)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True  # outcomes are persisted in the hub's own rows, not a result backend
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = int(env_str("CELERY_TASK_TIME_LIMIT", "300"))
CELERY_TASK_SOFT_TIME_LIMIT = int(env_str("CELERY_TASK_SOFT_TIME_LIMIT", "240"))
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = True
# Celery's Django fixup otherwise closes the database connection around every task, which costs a
# new connection per task and triples end-to-end latency (see shared PERFORMANCE notes).
CELERY_DB_REUSE_MAX = 1000
HUB_QUEUES = ("inbound", "delivery", "replay", "housekeeping")
CELERY_TASK_QUEUES = tuple(Queue(name, Exchange(name, type="direct"), routing_key=name) for name in HUB_QUEUES)
# Tasks that are not routed here (or given a queue when enqueued) run on housekeeping.
CELERY_TASK_ROUTES = {
    "governance.tasks.*": {"queue": "housekeeping"},
    "connectors.*": {"queue": "housekeeping"},
    "sandbox.*": {"queue": "delivery"},
}
CELERY_TASK_DEFAULT_QUEUE = "housekeeping"
CELERY_TASK_DEFAULT_EXCHANGE = "housekeeping"
CELERY_TASK_DEFAULT_ROUTING_KEY = "housekeeping"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE

# --- Logging: one JSON object per line ---------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"correlation": {"()": "integrationhub.logging.CorrelationIdFilter"}},
    "formatters": {"json": {"()": "integrationhub.logging.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["correlation"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "celery": {"level": LOG_LEVEL},
    },
}

# --- Hub ------------------------------------------------------------------------------------------
# The sync engine: circuit breaker, sweeper and inbound limits (see README, configuration).
HUB_CIRCUIT_FAILURE_THRESHOLD = int(env_str("HUB_CIRCUIT_FAILURE_THRESHOLD", "5"))
HUB_CIRCUIT_OPEN_SECONDS = float(env_str("HUB_CIRCUIT_OPEN_SECONDS", "30"))
HUB_SYNC_SWEEP_AFTER_SECONDS = float(env_str("HUB_SYNC_SWEEP_AFTER_SECONDS", "60"))
# How long a web process reuses a sending system's row (state, secret) for inbound events; 0 reads it each time.
HUB_INBOUND_SYSTEM_CACHE_SECONDS = float(env_str("HUB_INBOUND_SYSTEM_CACHE_SECONDS", "1"))
HUB_DISPATCH_BATCH_SIZE = int(env_str("HUB_DISPATCH_BATCH_SIZE", "500"))
HUB_DELIVERY_BATCH_SIZE = int(env_str("HUB_DELIVERY_BATCH_SIZE", "500"))
# The batch path of approved time: how long one run pulls pages before it queues the next run (below the task's
# soft limit). Whether an entry's period is open is the period calendar's answer (governance.AccountingPeriod), on
# every path; the former HUB_OPEN_PERIOD_MONTHS window is retired and ignored when set (README, configuration).
HUB_BATCH_RUN_SECONDS = float(env_str("HUB_BATCH_RUN_SECONDS", str(max(10.0, CELERY_TASK_SOFT_TIME_LIMIT / 2))))
HUB_SYNC_STUCK_DELIVERY_SECONDS = float(
    env_str("HUB_SYNC_STUCK_DELIVERY_SECONDS", str(HUB_SYNC_SWEEP_AFTER_SECONDS + CELERY_TASK_TIME_LIMIT))
)
HUB_INBOUND_MAX_BODY_BYTES = int(env_str("HUB_INBOUND_MAX_BODY_BYTES", str(DATA_UPLOAD_MAX_MEMORY_SIZE)))
HUB_CSV_DROP_ROOT = Path(env_str("HUB_CSV_DROP_ROOT", str(VAR_DIR / "csv-drop")))
# Retention of operational rows: payloads of delivered messages, then delivery attempts.
HUB_RETENTION_DAYS = int(env_str("HUB_RETENTION_DAYS", "30"))
HUB_RETENTION_ATTEMPT_DAYS = int(env_str("HUB_RETENTION_ATTEMPT_DAYS", "90"))
HUB_FILE_DROP_MAX_BYTES = int(env_str("HUB_FILE_DROP_MAX_BYTES", str(20 * 1024 * 1024)))
HUB_FILE_DROP_MAX_ROWS = int(env_str("HUB_FILE_DROP_MAX_ROWS", "50000"))
# Outbound HTTP honours HTTP(S)_PROXY / NO_PROXY from the environment unless this is off.
HUB_HTTP_TRUST_ENV = env_bool("HUB_HTTP_TRUST_ENV", True)
# Lets scripts switch the sandbox systems' fault injection without a staff session (empty: staff only).
SANDBOX_CONTROL_TOKEN = env_str("SANDBOX_CONTROL_TOKEN", "")
HUB_READYZ_WORKER_TIMEOUT = float(env_str("HUB_READYZ_WORKER_TIMEOUT", "5"))
# Hours an open exception item may wait before the queue shows it overdue (half of it: due soon).
HUB_EXCEPTION_SLA_HOURS = float(env_str("HUB_EXCEPTION_SLA_HOURS", "24"))

# Exception alerts by email: SMTP when EMAIL_HOST is set; otherwise each email is written as a file into
# var/mail/, so the embedded hub shows what it would have sent instead of failing on a missing mail server.
EMAIL_HOST = env_str("EMAIL_HOST")
EMAIL_PORT = int(env_str("EMAIL_PORT", "25"))
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = 30
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "integration-hub@localhost")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = str(VAR_DIR / "mail")
# Addresses that may scrape /metrics without an API key (CIDR, comma-separated); others need a kpis:read key.
HUB_METRICS_ALLOWED_NETWORKS = env_list("HUB_METRICS_ALLOWED_NETWORKS", "127.0.0.1/32,::1/128")
# Reverse proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For names the client address that throttles,
# the login lockout, the audit log and the /metrics allow-list use; empty: the connection's address, always.
HUB_TRUSTED_PROXIES = env_list("HUB_TRUSTED_PROXIES", "")
# The address people and the sandbox systems reach this hub on (e.g. https://hub.example.com): links in alerts,
# and every demo address (sandbox systems, webhook targets). Empty: the address run_hub binds (http://<bind>).
HUB_PUBLIC_URL = env_str("HUB_PUBLIC_URL", "").rstrip("/")
# Seconds the KPI dashboard and API reuse computed figures (0: compute on every request).
HUB_KPI_CACHE_SECONDS = int(env_str("HUB_KPI_CACHE_SECONDS", "60"))
# How many recent real payloads the pipeline keeps per inbound mapping as samples for the publish gate (0: none).
HUB_MAPPING_SAMPLES_KEPT = int(env_str("HUB_MAPPING_SAMPLES_KEPT", "5"))

# --- Security: API keys, scopes, throttles, input limits, CSP, login lockout, production hardening ----------
from integrationhub import settings_security  # noqa: E402

settings_security.apply(globals())
