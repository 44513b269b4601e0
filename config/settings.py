"""Prefloop settings. Every deployment knob is an environment variable (see README, "Configuration")."""

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def _owner_only(data_dir: Path) -> None:
    """The data directory holds the database (password hashes, API tokens), the secret key and the exports: whatever
    the shell's umask, everything Prefloop writes is for its own user (files 0600, directories 0700). A directory made
    by an earlier version is tightened too, with the SQLite files in it."""
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if data_dir.stat().st_uid == os.getuid():
        data_dir.chmod(0o700)
        for database in data_dir.glob("db.sqlite3*"):
            database.chmod(0o600)


DATA_DIR = Path(os.environ.get("PREFLOOP_DATA_DIR", BASE_DIR / "var")).resolve()
_owner_only(DATA_DIR)
MODELS_DIR = DATA_DIR / "models"
ARTIFACTS_DIR = DATA_DIR / "artifacts"
EXPORTS_DIR = DATA_DIR / "exports"
IMPORTS_DIR = DATA_DIR / "imports"  # uploads waiting for their background import (deleted when it ends)


def _artifacts_url(value: str) -> str:
    """Where models, adapters, run folders and exports are kept (config/artifacts.py): a local folder, by default
    the data directory, or an object store URI (s3://bucket/prefix) that every machine of a deployment reaches."""
    value = value.removeprefix("file://")
    return value.rstrip("/") if "://" in value else str(Path(value).expanduser().resolve())


ARTIFACTS_URL = _artifacts_url(os.environ.get("PREFLOOP_ARTIFACTS_URL") or str(DATA_DIR))
# This machine's copies of what it read from a remote store, by content hash: local to each machine, never shared.
ARTIFACTS_CACHE_DIR = Path(os.environ.get("PREFLOOP_CACHE_DIR") or DATA_DIR / "cache").resolve()
# After each download, the least recently used copies beyond this size are deleted (0: never).
ARTIFACTS_CACHE_MAX_BYTES = int(float(os.environ.get("PREFLOOP_CACHE_MAX_GB") or 0) * 1024**3)

DEBUG = env_bool("PREFLOOP_DEBUG")


def _local_secret_key(path: Path) -> str:
    """A random key made on first start and kept in the data directory, so a single machine needs no setup.
    Written aside and linked into place, so processes starting together all read the same whole key."""
    if not path.exists():
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        draft.write_text(secrets.token_urlsafe(50))
        draft.chmod(0o600)
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


SECRET_KEY = os.environ.get("PREFLOOP_SECRET_KEY") or _local_secret_key(DATA_DIR / "secret_key")
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("PREFLOOP_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("PREFLOOP_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

PREFLOOP_DEFAULT_MODEL = os.environ.get("PREFLOOP_DEFAULT_MODEL", "smollm2-135m-instruct")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "annotation",
    "generation",
    "training",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.security.ContentSecurityPolicy",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "config.limits.RequestBodyLimit",  # before anything reads a body (the CSRF check reads forms)
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
                "annotation.context_processors.roles",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}"),
        conn_max_age=int(os.environ.get("PREFLOOP_DB_CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Bind parameters on the server so psycopg prepares the statements a process repeats (the labeling loop's):
    # PostgreSQL then skips planning them, which was most of its work per query.
    DATABASES["default"]["OPTIONS"] = {"server_side_binding": True}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server and the worker read while one of them writes;
    # IMMEDIATE transactions make writers queue on the lock instead of failing.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in ("UserAttributeSimilarityValidator", "MinimumLengthValidator", "CommonPasswordValidator", "NumericPasswordValidator")
]
# django-axes first: it refuses a username + address locked out after too many failed logins (page and API token).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "annotation.roles.PermissionBackend"]
AXES_FAILURE_LIMIT = int(os.environ.get("PREFLOOP_LOGIN_FAILURE_LIMIT", "10"))
AXES_COOLOFF_TIME = timedelta(minutes=float(os.environ.get("PREFLOOP_LOGIN_COOLOFF_MINUTES", "15")))
# Locking a username everywhere would let anyone lock a colleague out; locking an address would lock a whole office.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every request until collectstatic fills it
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# Request bodies (config/limits.py): JSON bodies and forms are small; only the import views take large uploads.
PREFLOOP_MAX_BODY_BYTES = int(os.environ.get("PREFLOOP_MAX_BODY_BYTES", str(1024**2)))
PREFLOOP_MAX_UPLOAD_BYTES = int(os.environ.get("PREFLOOP_MAX_UPLOAD_BYTES", str(1024**3)))
# Imported files (annotation/importing.py): a gzipped file may decompress to 4 GB at most (gzip bombs), and one line
# (or JSON array row) may be 10 MB at most; both are refused with a 400 naming the line, memory stays flat.
PREFLOOP_MAX_IMPORT_DECOMPRESSED_BYTES = int(os.environ.get("PREFLOOP_MAX_IMPORT_DECOMPRESSED_BYTES", str(4 * 1024**3)))
PREFLOOP_MAX_IMPORT_LINE_BYTES = int(os.environ.get("PREFLOOP_MAX_IMPORT_LINE_BYTES", str(10 * 1024**2)))
# Uploads up to this size are imported within the request; larger ones by a background import job (annotation.imports).
PREFLOOP_IMPORT_IN_REQUEST_BYTES = int(os.environ.get("PREFLOOP_IMPORT_IN_REQUEST_BYTES", str(2 * 1024**2)))
# Uploaded prompt files can be large; anything over 10 MB is streamed to a temporary file.
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 50 * 1024 * 1024

SESSION_COOKIE_SECURE = env_bool("PREFLOOP_SECURE_COOKIES")
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# Served over HTTPS (all off by default: a first run is plain HTTP on localhost). Behind a proxy that terminates TLS,
# PREFLOOP_HTTPS_PROXY=1 trusts its X-Forwarded-Proto header; only set it when the proxy overwrites that header.
SECURE_SSL_REDIRECT = env_bool("PREFLOOP_SSL_REDIRECT")
SECURE_HSTS_SECONDS = int(os.environ.get("PREFLOOP_HSTS_SECONDS", "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("PREFLOOP_HSTS_INCLUDE_SUBDOMAINS")
SECURE_HSTS_PRELOAD = env_bool("PREFLOOP_HSTS_PRELOAD")
if env_bool("PREFLOOP_HTTPS_PROXY"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Pages load scripts and styles from the app only: no inline script, no eval (config/security.py).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    # DRF's parsers, with a JSON parser that refuses JSON nested too deeply or holding unpaired surrogates (a 400).
    "DEFAULT_PARSER_CLASSES": [
        "config.api.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Prefloop API",
    "DESCRIPTION": "Projects, prompts, labeling, generation, training and exports of Prefloop. Token auth: "
    "`Authorization: Token <key>` (POST /api/auth/token/).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its docs need a login (any role) or a token, like the API they describe: nothing in them is
    # secret (the code is open), but an anonymous visitor has no use for a map of the endpoints.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",  # Swagger UI's files come from the drf-spectacular-sidecar package
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Several models have a `status` (or `kind`, `split`) with different choices: each choice set gets its own name.
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "config.jobs.Job.Status",  # every job kind's
        "ExportFormatEnum": "annotation.models.Export.Format",
        "RankingItemStatusEnum": "annotation.models.RankingItem.Status",
        "FlagStatusEnum": "annotation.models.ItemFlag.Status",
        "FlagReasonEnum": "annotation.models.ItemFlag.Reason",
        "PromptSplitEnum": "annotation.models.Prompt.Split",
        "MetricSplitEnum": "training.models.TrainingMetric.Split",
        "ModelKindEnum": "generation.models.ModelVersion.Kind",
        "TrainingKindEnum": "training.models.TrainingRun.Kind",
        "PairSourceEnum": "annotation.models.PreferencePair.Source",
        "QueueOrderEnum": "annotation.models.Project.QueueOrder",
        "PromptSelectionModeEnum": "generation.api.serializers.PromptSelectionSerializer.MODES",
        "ImportPhaseEnum": "annotation.models.ImportJob.Phase",
        "EvaluationPhaseEnum": "training.models.Evaluation.Phase",
        "DemonstrationSourceEnum": "annotation.models.Demonstration.Source",
        "DemonstrationStatusEnum": "annotation.models.Demonstration.Status",
        "RejectionSamplingPhaseEnum": "training.models.RejectionSamplingJob.Phase",
    },
    # What Django's path converters accept: other values never reach the API (the URL resolver answers them).
    "PATH_CONVERTER_OVERRIDES": {
        "int": {"type": "integer", "minimum": 0},
        "slug": {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"},
    },
}

# Jobs (config/jobs.py): a running job touches its row every JOB_HEARTBEAT_SECONDS; one silent for
# JOB_DEAD_AFTER_SECONDS lost its worker, and the reaper (Celery beat, every JOB_REAPER_SECONDS) marks it failed.
JOB_HEARTBEAT_SECONDS = float(os.environ.get("PREFLOOP_JOB_HEARTBEAT_SECONDS", "15"))
JOB_DEAD_AFTER_SECONDS = float(os.environ.get("PREFLOOP_JOB_DEAD_AFTER_SECONDS", "90"))
JOB_REAPER_SECONDS = float(os.environ.get("PREFLOOP_JOB_REAPER_SECONDS", "30"))

# Celery: a broker that needs no server by default (kombu's filesystem transport).
BROKER_DIR = DATA_DIR / "broker"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
    }
    if CELERY_BROKER_URL.startswith("filesystem")
    # Redis hands an unacknowledged message to a worker again after this long. A job that is still running when
    # that happens is left alone (its row is running with a fresh heartbeat), so this only needs to exceed the
    # longest job to avoid needless deliveries (README, "Jobs").
    else {"visibility_timeout": int(os.environ.get("PREFLOOP_BROKER_VISIBILITY_SECONDS", str(48 * 3600)))}
)
for _folder in ("data_folder_in", "control_folder"):
    if _folder in CELERY_BROKER_TRANSPORT_OPTIONS:
        Path(CELERY_BROKER_TRANSPORT_OPTIONS[_folder]).mkdir(parents=True, exist_ok=True)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Libraries print to stdout (TRL's metrics, vLLM's notices); that is information, not a warning.
CELERY_WORKER_REDIRECT_STDOUTS_LEVEL = "INFO"
# A reaper message expires after a few periods, so that a worker back from an outage does not run a backlog of them;
# one period was too short: on a loaded machine the default worker's poll and pool restart delay every message past it.
CELERY_BEAT_SCHEDULE = {
    "reap-dead-jobs": {"task": "config.celery.reap_dead_jobs", "schedule": JOB_REAPER_SECONDS, "options": {"expires": 5 * JOB_REAPER_SECONDS}},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_TASK_ROUTES = {
    "generation.tasks.*": {"queue": "gpu"},
    "training.tasks.*": {"queue": "gpu"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("PREFLOOP_LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # On CPUs with AVX512-BF16, bitsandbytes tries to download a faster 4-bit kernel from the Hugging Face Hub at
        # import and warns when it cannot (the `kernels` package is absent, and Prefloop runs offline): its own
        # 4-bit CPU path works without it, so the warning is kept out of every job's log.
        "bitsandbytes.backends.cpu.ops": {"level": "ERROR"},
        # Each reach to an S3 store would log where its credentials and endpoint came from.
        "aiobotocore.credentials": {"level": "WARNING"},
        "botocore.credentials": {"level": "WARNING"},
        "botocore.configprovider": {"level": "WARNING"},
    },
}

# Labeling: how long an item stays reserved for the labeler who fetched it, and how long a ranking can be revised.
PREFLOOP_LEASE_MINUTES = int(os.environ.get("PREFLOOP_LEASE_MINUTES", "10"))
