"""config/env.py and config/settings.py, read in a fresh process from a controlled environment."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Unset in every run below, so the machine's own environment cannot leak into a result.
PRODUCT_VARIABLES = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "DATA_DIR",
    "DJANGO_DEBUG",
    "DJANGO_SECRET_KEY",
    "DJANGO_ALLOWED_HOSTS",
    "DJANGO_CSRF_TRUSTED_ORIGINS",
    "DJANGO_SECURE_SSL_REDIRECT",
    # Set by tests/browser/conftest.py for Playwright; never present in a deployment.
    "DJANGO_ALLOW_ASYNC_UNSAFE",
)


def _run(args, tmp_path, **variables) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in PRODUCT_VARIABLES}
    env.update(DATA_DIR=str(tmp_path / "data"), DJANGO_SETTINGS_MODULE="config.settings")
    env.update(variables)
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_the_deploy_check_without_warnings(tmp_path):
    result = _run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        tmp_path,
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="example.com",
    )

    assert result.stderr == ""
    assert result.stdout == "System check identified no issues (0 silenced).\n"
    assert result.returncode == 0


def test_production_without_a_secret_key_refuses_to_start(tmp_path):
    result = _run(["manage.py", "check"], tmp_path, DJANGO_DEBUG="0")

    assert result.returncode == 1
    assert result.stderr.endswith(
        "django.core.exceptions.ImproperlyConfigured: "
        "Set the environment variable DJANGO_SECRET_KEY.\n"
    )


def test_a_bad_boolean_is_refused_with_the_accepted_spellings(tmp_path):
    result = _run(["manage.py", "check"], tmp_path, DJANGO_DEBUG="maybe")

    assert result.returncode == 1
    assert result.stderr.endswith(
        "django.core.exceptions.ImproperlyConfigured: "
        "DJANGO_DEBUG must be 1/0, true/false, yes/no or on/off, not 'maybe'.\n"
    )


def test_the_defaults_need_no_server(tmp_path):
    show = (
        "import json; from django.conf import settings as s; print(json.dumps({"
        "'debug': s.DEBUG, 'engine': s.DATABASES['default']['ENGINE'], "
        "'name': str(s.DATABASES['default']['NAME']), 'broker': s.CELERY_BROKER_URL, "
        "'broker_options': s.CELERY_BROKER_TRANSPORT_OPTIONS}))"
    )

    result = _run(["-c", show], tmp_path)

    assert result.returncode == 0, result.stderr
    data_dir = tmp_path / "data"
    assert json.loads(result.stdout) == {
        "debug": True,
        "engine": "django.db.backends.sqlite3",
        "name": str(data_dir / "db.sqlite3"),
        "broker": "filesystem://",
        "broker_options": {
            "data_folder_in": str(data_dir / "broker" / "queue"),
            "data_folder_out": str(data_dir / "broker" / "queue"),
            "processed_folder": str(data_dir / "broker" / "processed"),
            "store_processed": False,
            "control_folder": str(data_dir / "broker" / "control"),
        },
    }
    assert (data_dir / "broker" / "queue").is_dir()
    assert (data_dir / "broker" / "control").is_dir()
