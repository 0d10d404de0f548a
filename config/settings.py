from datetime import timedelta

import dj_database_url

from config import env

BASE_DIR = env.BASE_DIR
DATA_DIR = env.DATA_DIR
DEBUG = env.DEBUG
SECRET_KEY = env.SECRET_KEY
ALLOWED_HOSTS = env.ALLOWED_HOSTS
CSRF_TRUSTED_ORIGINS = env.CSRF_TRUSTED_ORIGINS

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "annotation",
    "training",
    "models_registry",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # A NUL or lone surrogate in the path, query or form, or an oversized body: 400/413
    # before any view reads it (config/middleware.py).
    "config.middleware.HostileInputMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into the lockout page.
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
            "builtins": ["template_partials.templatetags.partials"],
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": dj_database_url.parse(env.DATABASE_URL, conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # WAL lets the web server read while the worker writes; IMMEDIATE takes the write
    # lock at BEGIN so two writers queue instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-db.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # No JIT: the app's queries are short, but a LIMIT over a large table is planned at
    # the full table's cost, which set off 0.8 s of JIT compiling for a 3 ms data
    # browser page (bench/data_browser.py).
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = "-c jit=off"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

# django-axes first: it refuses a locked-out sign-in before the password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=env.LOGIN_COOLOFF_MINUTES)
# Counted per username AND address together (axes' combination lockout): a stranger cannot
# lock someone out from elsewhere, nor does one person's typing lock out a whole office
# behind one address, while each address gets only LOGIN_FAILURE_LIMIT guesses per account
# per cool-off. Locking by address alone would let one shared address lock out everyone;
# by username alone would let anyone lock out any account.
AXES_LOCKOUT_PARAMETERS = env.LOGIN_LOCKOUT_PARAMETERS
# A right password clears the count, so old typos never add up to a lockout.
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "config.throttles.lockout_response"
# The same client address as the request throttles (REMOTE_ADDR, or X-Forwarded-For
# behind TRUSTED_PROXY_COUNT proxies).
AXES_CLIENT_IP_CALLABLE = "config.throttles.client_ip"
# No start-up banner on every manage.py command; failures and lockouts are still logged.
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
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

DATA_UPLOAD_MAX_MEMORY_SIZE = 50 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 50 * 1024 * 1024

REST_FRAMEWORK = {
    # API keys first: DRF answers a request without credentials with the first class's
    # challenge, so clients get 401 + WWW-Authenticate (session-only would give 403). Keys
    # are stored hashed, named, scoped to a workspace and revocable
    # (models_registry/authentication.py); `Token <key>` and `Bearer <key>` both work.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "models_registry.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # An API key reaches only its workspace's projects (annotation/projects/permissions.py).
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "annotation.projects.permissions.KeyScopedToItsWorkspace",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "EXCEPTION_HANDLER": "config.api_errors.exception_handler",
    # JSON with a depth limit, no NUL or lone surrogate, an object at the top
    # (config/parsers.py); forms and multipart stay, for clients and the prompt import.
    "DEFAULT_PARSER_CLASSES": [
        "config.parsers.SafeJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # Request rates (config/throttles.py); /v1 has its own, per API key and per user.
    "DEFAULT_THROTTLE_CLASSES": [
        "config.throttles.AnonThrottle",
        "config.throttles.UserThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.THROTTLE_RATE_ANON,
        "user": env.THROTTLE_RATE_USER,
        "v1_key": env.THROTTLE_RATE_V1_KEY,
        "v1_user": env.THROTTLE_RATE_V1_USER,
        "password_reset": env.THROTTLE_RATE_PASSWORD_RESET,
    },
    # 0: the client is REMOTE_ADDR; a client-sent X-Forwarded-For is ignored.
    "NUM_PROXIES": env.TRUSTED_PROXY_COUNT,
    # `?format=` names the export format (dpo, ...), not a DRF renderer.
    "URL_FORMAT_OVERRIDE": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# The OpenAPI 3 schema of /api and /v1 (/api/schema/, browsable at /api/docs/), made by
# drf-spectacular; config/api_schema.py adds the error answers and /v1's bearer key.
SPECTACULAR_SETTINGS = {
    "TITLE": "Loop API",
    "VERSION": "1.0.0",
    "DESCRIPTION": (
        "The feedback loop's API. `/api/...`: projects, prompts, labeling, arena, chat, "
        "judges, datasets, training runs and the model registry; sign in with a session "
        "cookie (plus the CSRF token on writes) or `Authorization: Token <key>`. "
        "`/v1/...`: the OpenAI-compatible API (models, chat completions, rewards) with "
        "`Authorization: Bearer <key>` and OpenAI's error shape."
    ),
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Signed-in users only (config/urls.py says why).
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Swagger UI's scripts and styles come from the sidecar package, served as our static
    # files: the docs page needs no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.api_schema.add_error_responses",
        "config.api_schema.mark_non_empty_lists",
    ],
}

# The request counters (throttles) live here; one Redis when several processes serve.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": env.CACHE_URL}
    if env.CACHE_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}

EMAIL_BACKEND = env.EMAIL_BACKEND
EMAIL_HOST = env.EMAIL_HOST
EMAIL_PORT = env.EMAIL_PORT
EMAIL_HOST_USER = env.EMAIL_HOST_USER
EMAIL_HOST_PASSWORD = env.EMAIL_HOST_PASSWORD
EMAIL_USE_TLS = env.EMAIL_USE_TLS
DEFAULT_FROM_EMAIL = env.DEFAULT_FROM_EMAIL

# Celery: tasks take ids, so no result backend is needed; job rows hold status.
CELERY_BROKER_URL = env.CELERY_BROKER_URL
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = DATA_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        # Broadcast bindings (worker pings, healthz); kombu's default is ./control.
        "control_folder": str(_broker_dir / "control"),
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Redis redelivers an unacknowledged message after the visibility timeout; training
    # runs acknowledge late, so the timeout must outlast the longest run.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 24 * 3600}
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "training.tasks.*": {"queue": "gpu"},
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery beat's record of when each periodic task last ran.
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

BASE_MODEL_NAME = env.BASE_MODEL_NAME
GENERATION_BATCH_SIZE = env.GENERATION_BATCH_SIZE
ASSIGNMENT_TTL_MINUTES = env.ASSIGNMENT_TTL_MINUTES
# Hours a labeler may go back and change a judgment (annotation/labeling/changes.py).
LABEL_CHANGE_WINDOW_HOURS = env.LABEL_CHANGE_WINDOW_HOURS
TRAINING_STALE_AFTER_SECONDS = env.TRAINING_STALE_AFTER_SECONDS
TRAINING_HEARTBEAT_SECONDS = env.TRAINING_HEARTBEAT_SECONDS
TRAINING_DEVICES = env.TRAINING_DEVICES
# A running generation job silent this long is queued again to resume (config/jobs.py).
GENERATION_STALE_AFTER_SECONDS = env.GENERATION_STALE_AFTER_SECONDS
# A silent AI judge job is failed with the reason; a silent battle is queued again.
JUDGE_JOB_STALE_AFTER_SECONDS = env.JUDGE_JOB_STALE_AFTER_SECONDS
ARENA_STALE_AFTER_SECONDS = env.ARENA_STALE_AFTER_SECONDS
# Celery beat runs every app's stale sweep this often (config/celery.py).
JOB_SWEEP_INTERVAL_SECONDS = env.JOB_SWEEP_INTERVAL_SECONDS
# A chat turn whose worker went silent this long is queued again (then failed, with a retry).
CHAT_STALE_AFTER_SECONDS = env.CHAT_STALE_AFTER_SECONDS
# Remote AI judges (OpenAI-compatible endpoints): per-request timeout, tries, first backoff.
AI_JUDGE_TIMEOUT_S = env.AI_JUDGE_TIMEOUT_S
AI_JUDGE_MAX_RETRIES = env.AI_JUDGE_MAX_RETRIES
AI_JUDGE_BACKOFF_S = env.AI_JUDGE_BACKOFF_S
OUTBOUND_ALLOW_PRIVATE = env.OUTBOUND_ALLOW_PRIVATE
MODEL_IMPORT_ROOT = env.MODEL_IMPORT_ROOT
DATASET_UPLOAD_MAX_BYTES = env.DATASET_UPLOAD_MAX_BYTES
# The web server's worker timeout and threads, and the /v1 limits (config/env.py says
# what each bounds; config/checks.py checks they fit together).
WEB_TIMEOUT = env.WEB_TIMEOUT
WEB_THREADS = env.WEB_THREADS
V1_REPLY_TIMEOUT = env.V1_REPLY_TIMEOUT
V1_MAX_PROMPT_TOKENS = env.V1_MAX_PROMPT_TOKENS
V1_MAX_CONCURRENT = env.V1_MAX_CONCURRENT
V1_MAX_QUEUED = env.V1_MAX_QUEUED
MODELS_DIR = DATA_DIR / "models"
SNAPSHOTS_DIR = DATA_DIR / "snapshots"

SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_SSL_REDIRECT = env.SECURE_SSL_REDIRECT
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = 0 if DEBUG else 31536000
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
