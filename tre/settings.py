"""tre settings: one file, read from the environment (django-environ).

With no environment variables set this is the *embedded default*: SQLite under ``var/``, Celery
tasks run in-process, the DuckDB store under ``var/store/``. Set ``DATABASE_URL`` and
``CELERY_BROKER_URL`` to run on PostgreSQL and Redis. ``TRE_ENV=production`` refuses to start
with a default secret.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()

# Defaults that are safe for a laptop demo and refused in production.
DEFAULT_SECRET_KEY = "dev-insecure-secret-key-change-me"
DEFAULT_PSEUDONYM_KEY = "dev-insecure-pseudonym-key-change-me"
DEFAULT_CELLKEY_SECRET = "dev-insecure-cellkey-secret-change-me"

TRE_ENV = env.str("TRE_ENV", default="dev")
if TRE_ENV not in ("dev", "test", "production"):
    raise ImproperlyConfigured(f"TRE_ENV must be dev, test or production, not {TRE_ENV!r}")
PRODUCTION = TRE_ENV == "production"

DEBUG = env.bool("DEBUG", default=not PRODUCTION)
SECRET_KEY = env.str("SECRET_KEY", default=DEFAULT_SECRET_KEY)
TRE_PSEUDONYM_KEY = env.str("TRE_PSEUDONYM_KEY", default=DEFAULT_PSEUDONYM_KEY)
# the key of each person's record keys for the cell key method (environment/recordkeys.py)
TRE_CELLKEY_SECRET = env.str("TRE_CELLKEY_SECRET", default=DEFAULT_CELLKEY_SECRET)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[] if PRODUCTION else ["127.0.0.1", "localhost", "testserver"])

if PRODUCTION:
    problems = []
    if SECRET_KEY == DEFAULT_SECRET_KEY or len(SECRET_KEY) < 50:
        problems.append("SECRET_KEY must be set to a random value of at least 50 characters")
    if TRE_PSEUDONYM_KEY == DEFAULT_PSEUDONYM_KEY or len(TRE_PSEUDONYM_KEY) < 32:
        problems.append("TRE_PSEUDONYM_KEY must be set to a random value of at least 32 characters")
    if TRE_CELLKEY_SECRET == DEFAULT_CELLKEY_SECRET or len(TRE_CELLKEY_SECRET) < 32:
        problems.append("TRE_CELLKEY_SECRET must be set to a random value of at least 32 characters")
    if DEBUG:
        problems.append("DEBUG must be off")
    if not ALLOWED_HOSTS:
        problems.append("ALLOWED_HOSTS must name the hosts this service answers for")
    if "DATABASE_URL" not in env:
        problems.append("DATABASE_URL must point at PostgreSQL")
    if "CELERY_BROKER_URL" not in env:
        problems.append("CELERY_BROKER_URL must point at Redis")
    if problems:
        raise ImproperlyConfigured("production settings refused: " + "; ".join(problems))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "guardian",
    "tre",
    "audit",
    "organisations",
    "notifications",
    "environment",
    "access",
    "projects",
    "queries",
    "outputs",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "tre.middleware.RetryTransientConflicts",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "tre.urls"
WSGI_APPLICATION = "tre.wsgi.application"

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

# --- Database -----------------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'tre.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    VAR_DIR.mkdir(exist_ok=True)
    # Wait rather than fail when the in-process worker and the web request write at once.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 20, "transaction_mode": "IMMEDIATE"})
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth ---------------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
]
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user object; the public sees only public endpoints
GUARDIAN_RAISE_403 = False
# API tokens expire; a new one is issued at the next login.
TRE_TOKEN_TTL_HOURS = env.int("TRE_TOKEN_TTL_HOURS", default=12)

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "Europe/London"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# --- Security (production) -----------------------------------------------------------------
if PRODUCTION:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
CSRF_FAILURE_VIEW = "tre.api.csrf_failure"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

# --- DRF ----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tre.auth.ExpiringTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "tre.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "tre.schema.AutoSchema",
    "EXCEPTION_HANDLER": "tre.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "tre — Trusted Research Environment API",
    "DESCRIPTION": "Projects, access, the secure environment, queries, safe outputs and the audit log.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "ENUM_NAME_OVERRIDES": {
        "PurposeEnum": "organisations.models.Purpose",
    },
}

# --- Cache (throttling) -------------------------------------------------------------------
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://tre")}
if CACHES["default"]["BACKEND"] == "django_redis.cache.RedisCache":  # use Django's own Redis backend
    CACHES["default"]["BACKEND"] = "django.core.cache.backends.redis.RedisCache"
    CACHES["default"].pop("OPTIONS", None)

# --- E-mail (notifications) ----------------------------------------------------------------
# EMAIL_URL as django-environ reads it: smtp://user:password@host:587 (smtp+tls://, smtp+ssl://),
# consolemail:// (the embedded default: mail is printed), filemail:///path, memorymail://.
globals().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="tre <tre@localhost>")
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
TRE_BASE_URL = env.str("TRE_BASE_URL", default="http://127.0.0.1:8000")  # links in e-mails

# --- Celery -------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="memory://localhost/")
EMBEDDED = "CELERY_BROKER_URL" not in env
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=EMBEDDED)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=300)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=330)
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Fail fast when the broker is down instead of blocking a web request.
CELERY_BROKER_TRANSPORT_OPTIONS = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE: dict = {}  # filled by tre.celery from each app's BEAT_SCHEDULE

# --- The environment and its rules -------------------------------------------------------
TRE_STORE_DIR = Path(env.str("TRE_STORE_DIR", default=str(VAR_DIR / "store")))
TRE_DAC_APPROVALS = env.int("TRE_DAC_APPROVALS", default=2)
TRE_OUTPUT_APPROVALS = env.int("TRE_OUTPUT_APPROVALS", default=2)
TRE_MAX_RESULT_CELLS = env.int("TRE_MAX_RESULT_CELLS", default=10_000)
TRE_MAX_QUERY_BYTES = env.int("TRE_MAX_QUERY_BYTES", default=100_000)
TRE_MAX_UPLOAD_BYTES = env.int("TRE_MAX_UPLOAD_BYTES", default=2 * 1024**3)
TRE_SANDBOX_MEMORY_LIMIT = env.str("TRE_SANDBOX_MEMORY_LIMIT", default="2GB")
TRE_SANDBOX_THREADS = env.int("TRE_SANDBOX_THREADS", default=2)
TRE_SANDBOX_LEASE_SECONDS = env.int("TRE_SANDBOX_LEASE_SECONDS", default=3600)
TRE_INGEST_MEMORY_LIMIT = env.str("TRE_INGEST_MEMORY_LIMIT", default="512MB")
TRE_INGEST_THREADS = env.int("TRE_INGEST_THREADS", default=2)
TRE_INGEST_TIME_LIMIT = env.int("TRE_INGEST_TIME_LIMIT", default=3600)
TRE_QUERY_SOFT_TIME_LIMIT = env.int("TRE_QUERY_SOFT_TIME_LIMIT", default=120)
TRE_QUERY_TIME_LIMIT = env.int("TRE_QUERY_TIME_LIMIT", default=150)
# Recovery (docs/operations.md, "What recovers, how fast"): a running query, load or erasure whose
# heartbeat is older than TRE_HEARTBEAT_STALE_SECONDS is dead; the sweepers look every
# TRE_SWEEP_INTERVAL seconds. TRE_BEAT_INTERVAL > 0 runs *every* periodic task at that interval
# (tests and trials only: it also shortens the hourly and daily jobs).
TRE_HEARTBEAT_STALE_SECONDS = env.int("TRE_HEARTBEAT_STALE_SECONDS", default=30)
TRE_SWEEP_INTERVAL = env.int("TRE_SWEEP_INTERVAL", default=15)
TRE_BEAT_INTERVAL = env.float("TRE_BEAT_INTERVAL", default=0)
# The Redis transport redelivers a message that a worker took but never acknowledged (it died)
# after this many seconds. Tasks acknowledge late (when they finish), so it must be longer than the
# longest task's hard time limit (a load: TRE_INGEST_TIME_LIMIT + 60), or a task still running
# would be delivered to a second worker. What dies sooner is found by its stopped heartbeat.
TRE_BROKER_VISIBILITY_TIMEOUT = env.int("TRE_BROKER_VISIBILITY_TIMEOUT", default=TRE_INGEST_TIME_LIMIT + 60 + 540)
CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] = TRE_BROKER_VISIBILITY_TIMEOUT
TRE_SDC_THRESHOLD = env.int("TRE_SDC_THRESHOLD", default=10)
TRE_SDC_NK_N = env.int("TRE_SDC_NK_N", default=2)
TRE_SDC_NK_K = env.float("TRE_SDC_NK_K", default=0.9)
TRE_SDC_P_PERCENT = env.float("TRE_SDC_P_PERCENT", default=0.1)
# Cell key method (outputs/cellkey.py, docs/sdc.md): the p-table's D and V, magnitude multipliers.
TRE_CKM_D = env.int("TRE_CKM_D", default=3)
TRE_CKM_V = env.float("TRE_CKM_V", default=2.0)
TRE_CKM_MAGNITUDE_A = env.float("TRE_CKM_MAGNITUDE_A", default=0.5)
TRE_CKM_MAGNITUDE_B = env.float("TRE_CKM_MAGNITUDE_B", default=2.5)
# a sum's noise scale is at least this fraction of its measure's declared bound (all-zero cells get noise)
TRE_CKM_MAGNITUDE_FLOOR = env.float("TRE_CKM_MAGNITUDE_FLOOR", default=0.1)
TRE_DUMMY_ROWS = env.int("TRE_DUMMY_ROWS", default=10_000)  # rows of each dataset's dummy twin
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024  # larger uploads stream to a temporary file
DATA_UPLOAD_MAX_MEMORY_SIZE = max(TRE_MAX_QUERY_BYTES * 2, 2_621_440)

# --- Logging ------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.request": {"level": "ERROR"}},
}
