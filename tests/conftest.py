import os

import kombu.pools
import pytest
from django.core.cache import cache
from django.http import HttpRequest

from annotation.models import Role
from config.celery import app as celery_app
from tests.factories import PASSWORD, make_member, make_project, make_user

pytest_plugins = ["tests.model_fixtures", "tests.worker_fixtures"]


DATABASE_FIXTURES = {"db", "transactional_db", "live_server"}


def pytest_configure(config):
    # The live server's request threads would otherwise keep their connections open for
    # CONN_MAX_AGE seconds, and PostgreSQL then refuses to drop the test database.
    from django.conf import settings

    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    # Two test runs at once (two engineers, or a run beside `make run`) must not share
    # one SQLite test file: each drops and recreates it.
    test_settings = settings.DATABASES["default"].setdefault("TEST", {})
    if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        test_settings["NAME"] = str(settings.DATA_DIR / f"test-db-{os.getpid()}.sqlite3")


def pytest_collection_modifyitems(config, items):
    """Mark the tests that use no database (training methods, model files, pure
    functions): the PostgreSQL run skips them, since they would only repeat themselves."""
    for item in items:
        uses_database = item.get_closest_marker("django_db") or DATABASE_FIXTURES & set(
            getattr(item, "fixturenames", ())
        )
        if not uses_database:
            item.add_marker(pytest.mark.nodb)


@pytest.fixture(autouse=True)
def _data_dir(settings, tmp_path):
    """Each test writes models and snapshots under its own folder; passwords hash fast."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.DATA_DIR = tmp_path
    settings.MODELS_DIR = tmp_path / "models"
    settings.SNAPSHOTS_DIR = tmp_path / "snapshots"


@pytest.fixture(autouse=True)
def _outbound_to_fake_servers(settings, tmp_path):
    """The fake judge endpoints and model servers listen on 127.0.0.1, which only an
    operator's OUTBOUND_ALLOW_PRIVATE allows (tests/config/test_outbound.py turns it off
    again). Imports through the page and API read under the test's own import root."""
    settings.OUTBOUND_ALLOW_PRIVATE = True
    settings.MODEL_IMPORT_ROOT = tmp_path / "imports"


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Request counters (config/throttles.py) live in the cache: each test starts at zero,
    so a suite's many requests as user 1 from 127.0.0.1 never add up to a limit."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def project(db):
    return make_project("alpha")


@pytest.fixture
def other_project(db):
    return make_project("beta")


@pytest.fixture
def labeler(project):
    return make_member(project, Role.LABELER, "lab")


@pytest.fixture
def researcher(project):
    return make_member(project, Role.RESEARCHER, "res")


@pytest.fixture
def admin_member(project):
    return make_member(project, Role.ADMIN, "adm")


@pytest.fixture
def outsider(db):
    return make_user("outsider")


@pytest.fixture
def login(client):
    def _login(user):
        if user is not None:
            # django-axes' backend needs a request to count sign-ins by address.
            request = HttpRequest()
            assert client.login(request=request, username=user.username, password=PASSWORD)
        return client

    return _login


def _drop_broker_connections():
    """Forget pooled broker connections so the next send dials the configured URL.

    kombu keeps its pools in process-wide registries keyed by URL; closing the app's pool
    without clearing them left a closed pool for the real broker's URL, and every later send
    to it failed with "Acquire on closed pool". ``kombu.pools.reset`` closes and forgets them."""
    kombu.pools.reset()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def unreachable_broker(monkeypatch):
    """Point the Celery app at a port where no broker listens, for this test only."""
    saved = celery_app.conf.broker_url, celery_app.conf.broker_transport_options
    # Celery reads CELERY_BROKER_URL from the environment before its own configuration.
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
    celery_app.conf.broker_url = "redis://127.0.0.1:1/0"
    celery_app.conf.broker_transport_options = {}
    _drop_broker_connections()
    yield
    celery_app.conf.broker_url, celery_app.conf.broker_transport_options = saved
    _drop_broker_connections()
