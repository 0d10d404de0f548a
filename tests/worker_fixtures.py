"""A real Celery worker, in its own process, on the test database and the test broker."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from config.celery import app as celery_app

REPO_ROOT = Path(__file__).resolve().parents[1]
QUEUES = ("gpu", "interactive", "default")  # every queue a task is routed to


def _require_network_services():
    engine = settings.DATABASES["default"]["ENGINE"]
    if "postgresql" not in engine or settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.fail(
            "Integration tests need PostgreSQL and a network broker: run them with "
            "`make test-postgres` (DATABASE_URL and CELERY_BROKER_URL set)."
        )


def _database_url() -> str:
    db = connection.settings_dict
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


@pytest.fixture
def celery_worker_process(transactional_db, settings, tmp_path):
    """Start `celery worker -Q gpu,interactive,default` against the test database; stop it
    after. One worker serves all three queues here; `make run` and compose give
    `interactive` its own."""
    _require_network_services()
    _purge_queues()
    worker, log = start_worker(settings, tmp_path / "worker.log")
    try:
        yield worker
    finally:
        stop_worker(worker)
        log.close()


def start_worker(settings, log_path: Path) -> tuple[subprocess.Popen, object]:
    """A worker process on the test database and broker, once it is ready; returns it
    and its open log file (close it after ``stop_worker``)."""
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "DATA_DIR": str(settings.DATA_DIR),
        "GENERATION_BATCH_SIZE": str(settings.GENERATION_BATCH_SIZE),
        # The fake endpoints the worker calls listen on loopback.
        "OUTBOUND_ALLOW_PRIVATE": "1" if settings.OUTBOUND_ALLOW_PRIVATE else "0",
    }
    log = log_path.open("a")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            ",".join(QUEUES),
            "--pool",
            "solo",
            "--loglevel",
            "INFO",
            "-n",
            f"test-{os.getpid()}@%h",
        ],  # fmt: skip
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_until_ready(log_path, worker)
    except RuntimeError:
        stop_worker(worker)
        log.close()
        raise
    return worker, log


def stop_worker(worker: subprocess.Popen) -> None:
    worker.terminate()
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def _purge_queues() -> None:
    """Drop messages a previous, interrupted run may have left for ids that no longer exist."""
    with celery_app.connection_for_write() as conn:
        for queue in QUEUES:
            conn.default_channel.queue_purge(queue)


def _wait_until_ready(log_path: Path, worker: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"The worker exited early:\n{log_path.read_text()}")
        if " ready." in log_path.read_text():
            return
        time.sleep(0.2)
    raise RuntimeError(f"The worker did not start in {timeout}s:\n{log_path.read_text()}")


def wait_for(predicate, *, timeout: float, what: str, log: Path | None = None):
    """Poll until predicate() returns something truthy; fail with the worker log if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    detail = f"\nworker log:\n{log.read_text()[-4000:]}" if log and log.exists() else ""
    pytest.fail(f"Timed out after {timeout}s waiting for {what}.{detail}")
