import errno
import socket
import time
from unittest import mock

import pytest
from django.db import OperationalError, connections

from config import health
from config.celery import app as celery_app

NO_WORKER = "No worker consuming this queue answered within 1s."
NO_QUEUE_HAS_A_WORKER = {
    "queues": {"gpu": [], "interactive": [], "default": []},
    "warnings": {"gpu": NO_WORKER, "interactive": NO_WORKER, "default": NO_WORKER},
}


def _drop_broker_connections():
    if celery_app._pool is not None:
        celery_app._pool.force_close_all()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def hanging_broker(monkeypatch):
    """A "Redis" that accepts connections and never answers, like a paused one: the
    kernel completes the handshake on the listening socket, nobody ever reads."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    saved = celery_app.conf.broker_url, celery_app.conf.broker_transport_options
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    celery_app.conf.broker_url = url
    celery_app.conf.broker_transport_options = {}
    _drop_broker_connections()
    yield
    silent.close()  # resets the waiting connections, so the check's thread ends too
    celery_app.conf.broker_url, celery_app.conf.broker_transport_options = saved
    _drop_broker_connections()


def test_healthz_is_ok_but_degraded_when_no_worker_answers(client, db):
    # The tests' folder broker answers; no worker runs.
    answer = client.get("/healthz")

    assert answer.status_code == 200
    assert answer.json() == {"status": "degraded", **NO_QUEUE_HAS_A_WORKER}


def test_healthz_names_the_workers_of_each_queue(client, db):
    replies = {
        "local@box": [{"name": "gpu"}, {"name": "default"}],
        "interactive@box": [{"name": "interactive"}],
        "other@box": [{"name": "gpu"}, {"name": "celery"}],
    }

    with mock.patch.object(health, "_ask_workers", return_value=replies):
        answer = client.get("/healthz")

    assert answer.status_code == 200
    assert answer.json() == {
        "status": "ok",
        "queues": {
            "gpu": ["local@box", "other@box"],
            "interactive": ["interactive@box"],
            "default": ["local@box"],
        },
    }


def test_healthz_warns_about_the_one_queue_without_a_worker(client, db):
    replies = {"local@box": [{"name": "gpu"}, {"name": "default"}]}

    with mock.patch.object(health, "_ask_workers", return_value=replies):
        answer = client.get("/healthz")

    assert answer.status_code == 200
    assert answer.json() == {
        "status": "degraded",
        "queues": {"gpu": ["local@box"], "interactive": [], "default": ["local@box"]},
        "warnings": {"interactive": NO_WORKER},
    }


def test_healthz_answers_within_its_limit_when_the_broker_hangs(
    client, db, hanging_broker, monkeypatch
):
    monkeypatch.setattr(health, "LIMIT_S", 0.5)
    started = time.monotonic()

    answer = client.get("/healthz")

    assert time.monotonic() - started < 1.5
    assert answer.status_code == 503
    assert answer.json() == {
        "status": "unavailable",
        "problems": {"broker": "The broker did not answer within 0.5s."},
    }


def test_healthz_socket_timeouts_end_the_wait_on_a_hanging_broker(client, db, hanging_broker):
    started = time.monotonic()

    answer = client.get("/healthz")

    assert time.monotonic() - started < health.LIMIT_S + 1
    assert answer.status_code == 503
    assert answer.json()["status"] == "unavailable"
    assert list(answer.json()["problems"]) == ["broker"]


def test_healthz_names_the_broker_when_it_cannot_be_reached(client, db, unreachable_broker):
    answer = client.get("/healthz")

    assert answer.status_code == 503
    refused = f"Error {errno.ECONNREFUSED} connecting to 127.0.0.1:1. Connection refused."
    assert answer.json() == {
        "status": "unavailable",
        "problems": {"broker": f"OperationalError: {refused}"},
    }


def test_healthz_names_the_database_when_a_query_fails(client, db):
    refused = OperationalError("connection refused")

    with mock.patch.object(connections["default"], "cursor", side_effect=refused):
        answer = client.get("/healthz")

    assert answer.status_code == 503
    assert answer.json() == {
        "status": "unavailable",
        "problems": {"database": "OperationalError: connection refused"},
        **NO_QUEUE_HAS_A_WORKER,
    }
