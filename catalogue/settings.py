"""Django settings, all read from the environment.

Defaults give the embedded demo (SQLite file under ``var/``, Celery tasks executed
in-process), so a fresh clone runs with nothing but ``requirements.txt``. Production and
CI set ``DATABASE_URL`` (PostgreSQL through psycopg 3) and ``CELERY_BROKER_URL`` (Redis).
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.management.utils import get_random_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("MORPHOMASS_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)  # the SQLite file and local media live here by default


def env_bool(name: str, default: bool) -> bool:
    """Read a yes/no environment variable (1/true/yes/on are true)."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


DEBUG = env_bool("DEBUG", True)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise RuntimeError("SECRET_KEY must be set when DEBUG is off")
    # A throw-away key for development only: sessions do not survive a restart.
    SECRET_KEY = "dev-" + get_random_secret_key()

ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1").split(",") if h.strip()]

# --- HTTPS ----------------------------------------------------------------------------
# MORPHOMASS_HTTPS=1 (a deployment behind TLS): HSTS, plain-http requests redirected to
# https, session and CSRF cookies sent over https only. Behind a proxy that terminates TLS
# the proxy must set X-Forwarded-Proto; the header is trusted only with this setting on.
# /healthz stays reachable over plain http, for container healthchecks inside the network.
HTTPS = env_bool("MORPHOMASS_HTTPS", False)
if HTTPS:
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = int(os.environ.get("MORPHOMASS_HSTS_SECONDS", 365 * 24 * 3600))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("MORPHOMASS_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("MORPHOMASS_HSTS_PRELOAD", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "catalogue",
    "webui",
]

MIDDLEWARE = [
    "catalogue.request_bodies.ChunkedBodies",  # before anything reads a body
    "catalogue.middleware.RejectUnstorableInput",  # first: before sessions or auth read the database
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "catalogue.urls"

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

WSGI_APPLICATION = "catalogue.wsgi.application"
ASGI_APPLICATION = "catalogue.asgi.application"

DEFAULT_SQLITE_URL = f"sqlite:///{VAR_DIR / 'morphomass.sqlite3'}"
DB_CONN_MAX_AGE = int(os.environ.get("DB_CONN_MAX_AGE", "0"))
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or DEFAULT_SQLITE_URL,
        conn_max_age=DB_CONN_MAX_AGE,
        # A kept connection is checked before each request reuses it (a restarted database is survived).
        conn_health_checks=DB_CONN_MAX_AGE > 0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web server, workers, tests) share the file; the test database is a
    # file too, so a worker process started by the tests sees the same data.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 30
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
if not DEBUG:  # static files (admin, API docs) from STATIC_ROOT after collectstatic; runserver serves its own
    after_security = MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1
    MIDDLEWARE.insert(after_security, "whitenoise.middleware.WhiteNoiseMiddleware")
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "static"))
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))

# Where every file one process writes and another reads lives (cutouts, the image store, models,
# TAP and prediction-job results): MEDIA_ROOT on local disk (or a shared filesystem) by default;
# MORPHOMASS_STORAGE=s3 puts them in an S3 bucket (AWS, MinIO, Ceph, ...), so worker machines
# share nothing but the database, the broker and the bucket. django-storages' S3 backend, set
# from its usual variables; a taken name is never overwritten (a new file gets a new suffix), and
# links to files are signed URLs unless AWS_QUERYSTRING_AUTH=0 (a public bucket).
STORAGE_KIND = os.environ.get("MORPHOMASS_STORAGE", "local").strip().lower() or "local"
if STORAGE_KIND not in ("local", "s3"):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"MORPHOMASS_STORAGE={STORAGE_KIND!r}: use 'local' (MEDIA_ROOT) or 's3'")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
if STORAGE_KIND == "s3":
    AWS_STORAGE_BUCKET_NAME = os.environ.get("AWS_STORAGE_BUCKET_NAME", "")
    if not AWS_STORAGE_BUCKET_NAME:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("MORPHOMASS_STORAGE=s3 needs AWS_STORAGE_BUCKET_NAME (and the bucket to exist)")
    AWS_S3_ENDPOINT_URL = os.environ.get("AWS_S3_ENDPOINT_URL") or None  # None: AWS itself
    AWS_S3_REGION_NAME = os.environ.get("AWS_S3_REGION_NAME") or os.environ.get("AWS_DEFAULT_REGION") or None
    AWS_ACCESS_KEY_ID = os.environ.get("AWS_ACCESS_KEY_ID") or None  # None: boto3's own chain (roles, profiles)
    AWS_SECRET_ACCESS_KEY = os.environ.get("AWS_SECRET_ACCESS_KEY") or None
    AWS_LOCATION = os.environ.get("AWS_LOCATION", "")  # a prefix inside the bucket
    AWS_S3_FILE_OVERWRITE = False
    AWS_DEFAULT_ACL = None
    AWS_QUERYSTRING_AUTH = env_bool("AWS_QUERYSTRING_AUTH", True)
    AWS_QUERYSTRING_EXPIRE = int(os.environ.get("AWS_QUERYSTRING_EXPIRE", 3600))
    #: the bucket's address for clients outside, where it differs from the workers' (links are signed for it)
    AWS_S3_PUBLIC_ENDPOINT_URL = os.environ.get("AWS_S3_PUBLIC_ENDPOINT_URL", "")
    STORAGES["default"] = {"BACKEND": "storages.backends.s3.S3Storage"}

# Scripts authenticate with a token (``Authorization: Token <key>``; made in the admin or with
# ``manage.py drf_create_token USER``), browsers with their session. Basic auth hashes the
# password on every request (about 350 ms): off unless MORPHOMASS_BASIC_AUTH=1.
# The token first: a request without credentials is answered 401 with "WWW-Authenticate: Token".
#: People sign in on the site's own page (it says what signing in gives), not the admin's.
LOGIN_URL = "webui:sign-in"
LOGIN_REDIRECT_URL = "webui:home"

API_AUTHENTICATION = [
    "rest_framework.authentication.TokenAuthentication",
    "rest_framework.authentication.SessionAuthentication",
    *(["rest_framework.authentication.BasicAuthentication"] if env_bool("MORPHOMASS_BASIC_AUTH", False) else []),
]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": API_AUTHENTICATION,
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "catalogue.api.pagination.NumberedPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.AnonRateThrottle", "rest_framework.throttling.UserRateThrottle"],
    # Anonymous scripts are limited; logged-in users (and staff) get more. Set to taste.
    "DEFAULT_THROTTLE_RATES": {
        "anon": os.environ.get("API_ANON_RATE", "600/minute"),
        "user": os.environ.get("API_USER_RATE", "6000/minute"),
        # One galaxy through four networks and up to seven models: a CPU-second each, so fewer.
        "predict": os.environ.get("API_PREDICT_RATE", "120/minute"),
    },
}
# --- TAP (/tap): ADQL on the catalogue, PostgreSQL only (docs/querying.md) ---------------
# Rows a result holds unless MAXREC asks for fewer (or more, up to the limit).
TAP_MAXREC_DEFAULT = int(os.environ.get("TAP_MAXREC_DEFAULT", "100000"))
TAP_MAXREC_LIMIT = int(os.environ.get("TAP_MAXREC_LIMIT", "2000000"))
# Seconds a sync query may run; an async job's execution duration (its statement timeout).
TAP_SYNC_TIMEOUT_S = float(os.environ.get("TAP_SYNC_TIMEOUT_S", "60"))
TAP_ASYNC_DURATION_S = int(os.environ.get("TAP_ASYNC_DURATION_S", "600"))
# Days an async job and its result are kept; seconds past its duration a silent job is failed.
TAP_JOB_DAYS = float(os.environ.get("TAP_JOB_DAYS", "7"))
TAP_REAP_GRACE_S = float(os.environ.get("TAP_REAP_GRACE_S", "300"))
# TAP UPLOAD: the largest table a query may upload (UPLOAD=name,param:part), in bytes and rows.
TAP_UPLOAD_MAX_BYTES = int(os.environ.get("TAP_UPLOAD_MAX_BYTES", str(32 * 1024 * 1024)))
TAP_UPLOAD_MAX_ROWS = int(os.environ.get("TAP_UPLOAD_MAX_ROWS", "200000"))
# UPLOAD=name,https://...: seconds to wait for the table; whether hosts on private addresses may be fetched.
TAP_UPLOAD_FETCH_TIMEOUT_S = float(os.environ.get("TAP_UPLOAD_FETCH_TIMEOUT_S", "30"))
TAP_UPLOAD_FETCH_PRIVATE = os.environ.get("TAP_UPLOAD_FETCH_PRIVATE", "") == "1"
# Largest chunked request body (no Content-Length) the app decodes itself under runserver:
# an upload's limit and room for the rest of the form.
DATA_UPLOAD_MAX_BODY_BYTES = TAP_UPLOAD_MAX_BYTES + 4 * 1024 * 1024

# --- Prediction jobs (/api/predict/jobs/): a signed-in user's own sample (docs/prediction_jobs.md) --
# Checked when a job is submitted, before any work: galaxies in its table, bytes uploaded, bytes
# and entries its archives unpack to, and jobs a user may have queued or running at once.
PREDICTION_JOB_MAX_GALAXIES = int(os.environ.get("PREDICTION_JOB_MAX_GALAXIES", "50000"))
PREDICTION_JOB_MAX_UPLOAD_BYTES = int(os.environ.get("PREDICTION_JOB_MAX_UPLOAD_BYTES", str(4 << 30)))
PREDICTION_JOB_MAX_UNPACKED_BYTES = int(os.environ.get("PREDICTION_JOB_MAX_UNPACKED_BYTES", str(16 << 30)))
PREDICTION_JOB_MAX_ENTRIES = int(os.environ.get("PREDICTION_JOB_MAX_ENTRIES", "200000"))
PREDICTION_JOB_MAX_RUNNING = int(os.environ.get("PREDICTION_JOB_MAX_RUNNING", "2"))
# Days a job, its galaxies, its predictions and its files are kept after it was submitted.
PREDICTION_JOB_DAYS = float(os.environ.get("PREDICTION_JOB_DAYS", "14"))
# The /predict/ page sends a sample as many loose FITS files at most (one part each).
DATA_UPLOAD_MAX_NUMBER_FILES = int(os.environ.get("PREDICTION_JOB_MAX_FILES", "5000"))

SPECTACULAR_SETTINGS = {
    "TITLE": "MorphoMass API",
    "DESCRIPTION": "Galaxy mass-to-light ratios from images (Dobbels et al. 2019): catalogues, models, runs, experiments. "
    "Every quantity carries its unit in its description.",
    "VERSION": "1.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_INCLUDE_SCHEMA": False,
    # Errors (400, 401, 403, 404, 409, 429) documented on every operation: catalogue/api/schema.py.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "catalogue.api.schema.add_error_responses"],
    # One name per choice set: a run's kind (the stages and the workflow) and the stages one can start.
    "ENUM_NAME_OVERRIDES": {
        "RunKindEnum": "catalogue.models.RunStage",
        "PipelineStageEnum": "catalogue.registry.stage_names",
        "RunStatusEnum": "catalogue.models.Run.Status",
        "GalaxyStatusEnum": "catalogue.models.GalaxyStatus",
        "SplitEnum": "catalogue.models.Split",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # Commands show progress bars and summaries, not log lines: WARNING unless asked. Workers
    # log at their own --loglevel (Celery takes the root logger over).
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}

# --- Celery ---------------------------------------------------------------------------
# Without a broker the tasks run in-process (the embedded demo); with one, on workers.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or (
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith("redis") else ""
)
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not CELERY_BROKER_URL)
# In-process: an in-memory transport, so nothing tries (or warns about) a broker on localhost.
CELERY_BROKER_URL = CELERY_BROKER_URL or "memory://localhost/"
