"""healthz on real parts: Redis and a Celery worker process consuming every queue."""

import os
import socket

import pytest

pytestmark = pytest.mark.postgres


def test_healthz_names_the_running_worker_for_every_queue(client, celery_worker_process):
    worker = f"test-{os.getpid()}@{socket.gethostname()}"

    answer = client.get("/healthz")

    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ok", body
    assert "warnings" not in body
    assert all(worker in body["queues"][queue] for queue in ("gpu", "interactive", "default"))


def test_healthz_warns_once_the_worker_has_stopped(client, celery_worker_process):
    celery_worker_process.terminate()
    celery_worker_process.wait(timeout=30)

    answer = client.get("/healthz")

    assert answer.status_code == 200
    assert answer.json()["status"] == "degraded"
    assert answer.json()["warnings"] == {
        queue: "No worker consuming this queue answered within 1s."
        for queue in ("gpu", "interactive", "default")
    }
