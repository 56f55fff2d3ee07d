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


DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise RuntimeError("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off")
    SECRET_KEY = "insecure-development-key-only-for-the-embedded-default"
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,testserver").split(",") if h]

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
    "pipeline",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
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
STATIC_ROOT = VAR_DIR / "static"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"pipeline": {"handlers": ["console"], "level": os.environ.get("BROKER_LOG_LEVEL", "INFO")}},
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
CELERY_TASK_TIME_LIMIT = int(os.environ.get("CELERY_TASK_TIME_LIMIT", "600"))
CELERY_TASK_SOFT_TIME_LIMIT = int(os.environ.get("CELERY_TASK_SOFT_TIME_LIMIT", "540"))
CELERY_RESULT_EXPIRES = 3600
QUEUE_INGEST = os.environ.get("BROKER_QUEUE_INGEST", "ingest")
QUEUE_IO = os.environ.get("BROKER_QUEUE_IO", "io")
QUEUE_CPU = os.environ.get("BROKER_QUEUE_CPU", "cpu")
QUEUE_GPU = os.environ.get("BROKER_QUEUE_GPU", "gpu")
CELERY_TASK_QUEUES = [Queue(name) for name in (QUEUE_INGEST, QUEUE_IO, QUEUE_CPU, QUEUE_GPU)]
CELERY_TASK_DEFAULT_QUEUE = QUEUE_CPU
CELERY_TASK_ROUTES = {
    "pipeline.tasks.ingest_files": {"queue": QUEUE_INGEST},
    "pipeline.tasks.xmatch": {"queue": QUEUE_IO},
    "pipeline.tasks.stamp_classify": {"queue": QUEUE_GPU},
    "pipeline.tasks.*": {"queue": QUEUE_CPU},
}

# --- The broker's own knobs.
ALERT_BATCH_SIZE = int(os.environ.get("ALERT_BATCH_SIZE", "300"))
ALERT_ARCHIVE_URL = os.environ.get("ALERT_ARCHIVE_URL", str(VAR_DIR / "archive"))
XMATCH_BACKEND = os.environ.get("XMATCH_BACKEND", "local")
XMATCH_LOCAL_INDEX = os.environ.get("XMATCH_LOCAL_INDEX", str(VAR_DIR / "catalogs" / "allwise_index.npz"))
XMATCH_RADIUS_ARCSEC = float(os.environ.get("XMATCH_RADIUS_ARCSEC", "2.0"))
XMATCH_CDS_TIMEOUT = float(os.environ.get("XMATCH_CDS_TIMEOUT", "60"))
XMATCH_CDS_URL = os.environ.get("XMATCH_CDS_URL", "")  # empty: astroquery's default CDS endpoint
XMATCH_RETRY_MINUTES = float(os.environ.get("XMATCH_RETRY_MINUTES", "15"))
# Rubin/LSST wire-format packets: a folder of the alert schemas (lsst/alert_packet layout) or a schema registry URL.
LSST_SCHEMAS = os.environ.get("LSST_SCHEMAS", "")
# Output stream: redis://HOST:PORT/DB?stream=NAME&maxlen=N (default) or kafka://HOST:PORT/TOPIC; empty: off.
OUTPUT_STREAM_URL = os.environ.get("OUTPUT_STREAM_URL", "redis://127.0.0.1:6379/0?stream=broker:alerts&maxlen=100000")
OUTPUT_STREAM_DEDUP_DAYS = float(os.environ.get("OUTPUT_STREAM_DEDUP_DAYS", "30"))
CELERY_BEAT_SCHEDULE = {
    "retry-pending-xmatch": {"task": "pipeline.tasks.retry_pending_xmatch", "schedule": XMATCH_RETRY_MINUTES * 60},
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
    "REDOC_DIST": "SIDECAR",
}
# --- Light-curve classifier (issue 14): the trained artefact (forests + outlier forests)
LC_CLASSIFIER_MODEL = os.environ.get("LC_CLASSIFIER_MODEL", str(BASE_DIR / "models" / "lc_classifier" / "model.joblib"))
# --- Stamp classifier (gpu queue): the model folder, the batch size of one inference call, and a switch
# (STAMP_CLASSIFIER=off leaves it out of the canvas, e.g. on hosts without TensorFlow).
STAMP_CLASSIFIER_DIR = Path(os.environ.get("STAMP_CLASSIFIER_DIR", BASE_DIR / "models" / "stamp_classifier"))
STAMP_CLASSIFIER_ENABLED = os.environ.get("STAMP_CLASSIFIER", "on").lower() not in ("off", "0", "false", "no")
STAMP_CLASSIFIER_BATCH = int(os.environ.get("STAMP_CLASSIFIER_BATCH", "256"))
