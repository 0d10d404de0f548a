"""Every setting the product reads from the environment, in one place.

Local defaults are safe and need no server (SQLite, a folder-based Celery broker). Production
secrets have no default: with DJANGO_DEBUG=0 a missing DJANGO_SECRET_KEY stops start-up.
"""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise ImproperlyConfigured(f"Set the environment variable {name}.")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be 1/0, true/false, yes/no or on/off, not {raw!r}.")


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", True)
DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
# Development key only while DEBUG is on; production must set its own.
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "dev-only-insecure-key" if DEBUG else None)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
BASE_MODEL_NAME = env_str("BASE_MODEL_NAME", "SmolLM2-135M-Instruct")
GENERATION_BATCH_SIZE = int(env_str("GENERATION_BATCH_SIZE", "8"))
ASSIGNMENT_TTL_MINUTES = int(env_str("ASSIGNMENT_TTL_MINUTES", "30"))
LABEL_CHANGE_WINDOW_HOURS = int(env_str("LABEL_CHANGE_WINDOW_HOURS", "24"))
TRAINING_STALE_AFTER_SECONDS = int(env_str("TRAINING_STALE_AFTER_SECONDS", "180"))
TRAINING_HEARTBEAT_SECONDS = float(env_str("TRAINING_HEARTBEAT_SECONDS", "15"))
# The training worker's devices when it runs on another machine than the web server, e.g.
# "cuda:8+deepspeed+bitsandbytes" (training.methods.launch.Devices.parse); empty: this machine's.
TRAINING_DEVICES = env_str("TRAINING_DEVICES", "")
GENERATION_STALE_AFTER_SECONDS = int(env_str("GENERATION_STALE_AFTER_SECONDS", "120"))
JUDGE_JOB_STALE_AFTER_SECONDS = int(env_str("JUDGE_JOB_STALE_AFTER_SECONDS", "120"))
ARENA_STALE_AFTER_SECONDS = int(env_str("ARENA_STALE_AFTER_SECONDS", "60"))
JOB_SWEEP_INTERVAL_SECONDS = float(env_str("JOB_SWEEP_INTERVAL_SECONDS", "60"))
CHAT_STALE_AFTER_SECONDS = int(env_str("CHAT_STALE_AFTER_SECONDS", "60"))
AI_JUDGE_TIMEOUT_S = float(env_str("AI_JUDGE_TIMEOUT_S", "30"))
AI_JUDGE_MAX_RETRIES = int(env_str("AI_JUDGE_MAX_RETRIES", "3"))
AI_JUDGE_BACKOFF_S = float(env_str("AI_JUDGE_BACKOFF_S", "1.0"))
# Outbound calls to URLs users give (judge endpoints, model servers) go to public addresses
# only; 1 lets them reach loopback, link-local and private ones too (config/outbound.py).
OUTBOUND_ALLOW_PRIVATE = env_bool("OUTBOUND_ALLOW_PRIVATE", False)
# The folder the import page and API may import models from (the import_model command
# may read anywhere): a server path outside it is refused.
MODEL_IMPORT_ROOT = Path(env_str("MODEL_IMPORT_ROOT", str(DATA_DIR / "imports"))).resolve()
# The largest dataset file the import page and API take (bytes; saved to disk, not memory).
DATASET_UPLOAD_MAX_BYTES = int(env_str("DATASET_UPLOAD_MAX_BYTES", str(1024**3)))
# The web server (gunicorn, docker/entrypoint.sh): seconds before it kills a silent worker,
# and threads per worker process.
WEB_TIMEOUT = float(env_str("WEB_TIMEOUT", "60"))
WEB_THREADS = int(env_str("WEB_THREADS", "8"))
# /v1 limits (models_registry/openai_api.py): every reply ends within V1_REPLY_TIMEOUT
# seconds (a system check keeps it below WEB_TIMEOUT); prompts are capped at
# V1_MAX_PROMPT_TOKENS tokens (and the model's context); per web process at most
# V1_MAX_CONCURRENT requests generate at once and V1_MAX_QUEUED wait, the rest get 429.
V1_REPLY_TIMEOUT = float(env_str("V1_REPLY_TIMEOUT", "50"))
V1_MAX_PROMPT_TOKENS = int(env_str("V1_MAX_PROMPT_TOKENS", "4096"))
V1_MAX_CONCURRENT = int(env_str("V1_MAX_CONCURRENT", "4"))
V1_MAX_QUEUED = int(env_str("V1_MAX_QUEUED", "2"))

# Abuse limits (issue 14). Sign-in lockout (django-axes): after LOGIN_FAILURE_LIMIT wrong
# passwords a sign-in is refused for LOGIN_COOLOFF_MINUTES. LOGIN_LOCKOUT_PARAMETERS lists
# what is counted, comma-separated; "+" joins a combination (axes' AXES_LOCKOUT_PARAMETERS).
LOGIN_FAILURE_LIMIT = int(env_str("LOGIN_FAILURE_LIMIT", "5"))
LOGIN_COOLOFF_MINUTES = float(env_str("LOGIN_COOLOFF_MINUTES", "15"))
LOGIN_LOCKOUT_PARAMETERS = [
    item.split("+") if "+" in item else item
    for item in env_list("LOGIN_LOCKOUT_PARAMETERS", "username+ip_address")
]
# Reverse proxies in front of the web server that append to X-Forwarded-For; 0: the client's
# address is REMOTE_ADDR (a client-sent X-Forwarded-For is then ignored, so it cannot dodge
# the limits).
TRUSTED_PROXY_COUNT = int(env_str("TRUSTED_PROXY_COUNT", "0"))
# Request rates (DRF's "<number>/<second|minute|hour|day>"): /api per user and per anonymous
# address, /v1 per API key and per user, and password reset mails asked per address and per
# email address.
THROTTLE_RATE_USER = env_str("THROTTLE_RATE_USER", "1200/min")
THROTTLE_RATE_ANON = env_str("THROTTLE_RATE_ANON", "120/min")
THROTTLE_RATE_V1_KEY = env_str("THROTTLE_RATE_V1_KEY", "600/min")
THROTTLE_RATE_V1_USER = env_str("THROTTLE_RATE_V1_USER", "1200/min")
THROTTLE_RATE_PASSWORD_RESET = env_str("THROTTLE_RATE_PASSWORD_RESET", "5/hour")
# The cache the request counters live in. Empty: this process's memory (fine for one process);
# with several web processes give them one Redis, e.g. redis://localhost:6379/1.
CACHE_URL = env_str("CACHE_URL", "")
# Mail (password reset). Unset EMAIL_BACKEND: printed to the console in development, SMTP
# with the settings below in production.
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = int(env_str("EMAIL_PORT", "25"))
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Loop <noreply@localhost>")
