"""Settings: every runtime knob comes from the environment, with embedded defaults.

Defaults give the embedded broker: a SQLite file, Celery tasks run eagerly in-process, and a
local folder as raw-alert archive. `.env.example` lists every variable.
"""
import os
from pathlib import Path

import dj_database_url
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("BROKER_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name, default=False):
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1", "testserver"}
# Off unless asked for: a debug page prints settings (database and broker URLs) to whoever sees it.
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,testserver").split(",") if h]
if DEBUG and not set(ALLOWED_HOSTS) <= LOOPBACK_HOSTS:
    raise RuntimeError("DJANGO_DEBUG is for the embedded demo on loopback only; DJANGO_ALLOWED_HOSTS "
                       f"names other hosts: {', '.join(sorted(set(ALLOWED_HOSTS) - LOOPBACK_HOSTS))}")


def _install_secret_key():
    """The embedded default's key: random, made once per installation, kept in VAR_DIR (never in the repo)."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        import secrets
        import tempfile

        fd, tmp = tempfile.mkstemp(dir=VAR_DIR)  # mode 0600
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(50))
        try:
            os.link(tmp, path)  # atomic: concurrent first runs agree on one key
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return path.read_text().strip()


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "") or _install_secret_key()

# HTTPS hardening, off by default (the embedded demo serves plain HTTP on loopback); see .env.example.
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT")
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_SECURE_HSTS_SECONDS", "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS")
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD")
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE")
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE")
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]
if env_bool("DJANGO_BEHIND_TLS_PROXY"):  # the proxy terminates TLS and sets X-Forwarded-Proto
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",  # runserver leaves static files to WhiteNoise too
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "pipeline",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files with DEBUG off (from STATIC_ROOT)
    "broker_site.middleware.refuse_nul_characters",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "broker_site.urls"
WSGI_APPLICATION = "broker_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "pipeline" / "web" / "templates"],
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

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'broker.sqlite3'}"),
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].update({"timeout": 30, "init_command": "PRAGMA journal_mode=WAL;"})
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
# Filled by `manage.py collectstatic` (the Makefile's migrate step) and served by WhiteNoise, DEBUG on or off.
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "pipeline" / "web" / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "pipeline": {"handlers": ["console"], "level": os.environ.get("BROKER_LOG_LEVEL", "INFO")},
        # unhandled exceptions of a request (500s) with their traceback; Django's default prints them only with DEBUG on
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
    },
}

# --- Celery: unset broker URL means the embedded default (the canvas runs eagerly in-process).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", CELERY_BROKER_URL or None)
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A lost broker: the running tasks (acknowledged late) cannot be acknowledged any more and come back to the
# queue anyway, so they are cancelled rather than left to run (and to hold a warm shutdown).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
# Each pool process loads its models as it starts (broker_site/celery.py), outside every task's time
# limit; the pool waits this long for a process to start (Celery's 4 s default killed slow loads).
CELERY_WORKER_PROC_ALIVE_TIMEOUT = float(os.environ.get("CELERY_WORKER_PROC_ALIVE_TIMEOUT", "300"))
# Time limits and the Redis visibility timeout are set from the slowest step, measured (docs/operating.md):
# features, 1.4 s per 300-alert batch on PostgreSQL on the loaded 2-core machine.
# A step may take 70 times that before it is killed.
CELERY_TASK_TIME_LIMIT = int(os.environ.get("CELERY_TASK_TIME_LIMIT", "120"))
CELERY_TASK_SOFT_TIME_LIMIT = int(os.environ.get("CELERY_TASK_SOFT_TIME_LIMIT", "100"))
CELERY_TASK_RETRY_BACKOFF_MAX = int(os.environ.get("CELERY_TASK_RETRY_BACKOFF_MAX", "60"))
# Redis redelivers a task whose worker died (SIGKILL of the whole worker, a lost host) only after this
# many seconds; its default hour stalled a batch for an hour. It must exceed one task's longest run plus
# a retry's countdown (a task waiting for its retry is held unacknowledged), else a live task is
# delivered twice (harmless, steps are upserts, but wasted work).
CELERY_VISIBILITY_TIMEOUT = int(os.environ.get(
    "CELERY_VISIBILITY_TIMEOUT", str(CELERY_TASK_TIME_LIMIT + CELERY_TASK_RETRY_BACKOFF_MAX + 120)))
if CELERY_VISIBILITY_TIMEOUT <= CELERY_TASK_TIME_LIMIT + CELERY_TASK_RETRY_BACKOFF_MAX:
    raise RuntimeError("CELERY_VISIBILITY_TIMEOUT must exceed CELERY_TASK_TIME_LIMIT + CELERY_TASK_RETRY_BACKOFF_MAX")
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_RESULT_EXPIRES = 3600
QUEUE_INGEST = os.environ.get("BROKER_QUEUE_INGEST", "ingest")
QUEUE_IO = os.environ.get("BROKER_QUEUE_IO", "io")
QUEUE_CPU = os.environ.get("BROKER_QUEUE_CPU", "cpu")
QUEUE_GPU = os.environ.get("BROKER_QUEUE_GPU", "gpu")
CELERY_TASK_QUEUES = [Queue(name) for name in (QUEUE_INGEST, QUEUE_IO, QUEUE_CPU, QUEUE_GPU)]
CELERY_TASK_DEFAULT_QUEUE = QUEUE_CPU
# The task modules (pipeline/workflow/); task names are their module paths.
CELERY_IMPORTS = ["pipeline.workflow.step_tasks", "pipeline.workflow.ops_tasks"]
CELERY_TASK_ROUTES = {
    "pipeline.workflow.ops_tasks.ingest_files": {"queue": QUEUE_INGEST},
    "pipeline.workflow.step_tasks.xmatch": {"queue": QUEUE_IO},
    "pipeline.workflow.step_tasks.stamp_classify": {"queue": QUEUE_GPU},
    "pipeline.workflow.*": {"queue": QUEUE_CPU},
}

# --- The broker's own knobs.
# The shared real data (benchmarks, training): ../shared/data beside the repository unless set.
SHARED_DATA_DIR = Path(os.environ.get("BROKER_SHARED_DATA", BASE_DIR.parent / "shared" / "data"))
ALERT_BATCH_SIZE = int(os.environ.get("ALERT_BATCH_SIZE", "300"))
ALERT_ARCHIVE_URL = os.environ.get("ALERT_ARCHIVE_URL", str(VAR_DIR / "archive"))
XMATCH_BACKEND = os.environ.get("XMATCH_BACKEND", "local")
XMATCH_LOCAL_INDEX = os.environ.get("XMATCH_LOCAL_INDEX", str(VAR_DIR / "catalogs" / "allwise_index.npz"))
XMATCH_RADIUS_ARCSEC = float(os.environ.get("XMATCH_RADIUS_ARCSEC", "2.0"))
XMATCH_CDS_TIMEOUT = float(os.environ.get("XMATCH_CDS_TIMEOUT", "60"))
XMATCH_CDS_URL = os.environ.get("XMATCH_CDS_URL", "")  # empty: astroquery's default CDS endpoint
XMATCH_RETRY_MINUTES = float(os.environ.get("XMATCH_RETRY_MINUTES", "15"))
# Objects whose steps are behind their detections (a lost canvas, a failed chord) are re-run this often,
# once they have been quiet for REPAIR_MIN_AGE_MINUTES (so batches still in flight are left alone).
REPAIR_EVERY_MINUTES = float(os.environ.get("REPAIR_EVERY_MINUTES", "30"))
REPAIR_MIN_AGE_MINUTES = float(os.environ.get("REPAIR_MIN_AGE_MINUTES", "30"))
# How long `ingest`, `wait` and `repair` wait for a lost broker (or result store) to come back before
# they stop (exit code 1, naming `repair`).
BROKER_LOST_WAIT_SECONDS = float(os.environ.get("BROKER_LOST_WAIT_SECONDS", "60"))
# `wait` gives up when no step has finished on the awaited batches for this long. A killed worker's task
# came back 102 s after the kill with a 25 s visibility timeout and a 20 s task limit (kombu restores
# unacknowledged tasks on its own schedule), so the margin is four times visibility plus task limit.
WAIT_STALL_SECONDS = float(os.environ.get(
    "WAIT_STALL_SECONDS", str(4 * (CELERY_VISIBILITY_TIMEOUT + CELERY_TASK_TIME_LIMIT))))
# Rubin/LSST wire-format packets: a folder of the alert schemas (lsst/alert_packet layout) or a schema registry URL.
LSST_SCHEMAS = os.environ.get("LSST_SCHEMAS", "")
# Output stream: redis://HOST:PORT/DB?stream=NAME&maxlen=N (default) or kafka://HOST:PORT/TOPIC; empty: off.
# Without stream=NAME the Redis stream is broker:<deployment>:alerts.
OUTPUT_STREAM_URL = os.environ.get("OUTPUT_STREAM_URL", "redis://127.0.0.1:6379/0?maxlen=100000")
# Names this deployment on shared services (the stream's dedup keys, its default name). Empty: a random id
# made once in the database, so two databases never share one.
BROKER_DEPLOYMENT_ID = os.environ.get("BROKER_DEPLOYMENT_ID", "")
OUTPUT_STREAM_DEDUP_DAYS = float(os.environ.get("OUTPUT_STREAM_DEDUP_DAYS", "30"))
CELERY_BEAT_SCHEDULE = {
    "retry-pending-xmatch": {"task": "pipeline.workflow.ops_tasks.retry_pending_xmatch", "schedule": XMATCH_RETRY_MINUTES * 60},
    "repair-behind-objects": {"task": "pipeline.workflow.ops_tasks.repair_behind", "schedule": REPAIR_EVERY_MINUTES * 60},
}

# --- REST API (ALeRCE's ZTF API v1 routes): read-only and open, JSON errors, OpenAPI schema.
REST_FRAMEWORK = {
    "DEFAULT_PERMISSION_CLASSES": ["pipeline.api.permissions.ReadOnlyOrStaff"],
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer",
                                 "rest_framework.renderers.BrowsableAPIRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "pipeline.api.views.json_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Alert broker ZTF API",
    "DESCRIPTION": "ALeRCE's ZTF API v1 routes over this broker's tables (the public alerce client works "
                   "unchanged). Read-only. Page size at most 1000, cone radius at most 3600 arcsec.",
    "VERSION": "v1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # no validator badge: Swagger UI would fetch it from validator.swagger.io
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "REDOC_DIST": "SIDECAR",
}
# --- Light-curve classifier (issue 14): the trained artefact (forests + outlier forests)
LC_CLASSIFIER_MODEL = os.environ.get("LC_CLASSIFIER_MODEL", str(BASE_DIR / "models" / "lc_classifier" / "model.joblib"))
# --- Stamp classifier (gpu queue): the model folder, the batch size of one inference call, and a switch
# (STAMP_CLASSIFIER=off leaves it out of the canvas, e.g. on hosts without TensorFlow).
STAMP_CLASSIFIER_DIR = Path(os.environ.get("STAMP_CLASSIFIER_DIR", BASE_DIR / "models" / "stamp_classifier"))
STAMP_CLASSIFIER_ENABLED = os.environ.get("STAMP_CLASSIFIER", "on").lower() not in ("off", "0", "false", "no")
STAMP_CLASSIFIER_BATCH = int(os.environ.get("STAMP_CLASSIFIER_BATCH", "256"))
