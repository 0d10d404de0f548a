import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from config import env

app = Celery("rlhf")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Each app's sweep of the jobs whose worker died (config/jobs.py, job_fail_stale): Celery
# beat sends them every JOB_SWEEP_INTERVAL_SECONDS, so a job left by a dead worker is ended
# (or resumed) even when nobody opens its page. Names only: config imports no app. A message
# the interactive worker has not taken by the next one expires, so they never pile up.
STALE_SWEEP_TASKS = ("annotation.sweep_stale_jobs_task", "training.sweep_stale_runs_task")
app.conf.beat_schedule = {
    name: {
        "task": name,
        "schedule": env.JOB_SWEEP_INTERVAL_SECONDS,
        "options": {"queue": "interactive", "expires": env.JOB_SWEEP_INTERVAL_SECONDS},
    }
    for name in STALE_SWEEP_TASKS
}


class QueueUnavailable(Exception):
    """The broker refused a message; the job that needed it was marked failed."""


def enqueue_after_commit(task, *, job_id: int, on_failure) -> None:
    """Send `task(job_id)` once the surrounding transaction commits.

    If the broker cannot be reached, `on_failure(message)` records the failure on the job
    and QueueUnavailable is raised to the caller: the work is never run inside the request.
    """
    from django.db import transaction

    def send():
        try:
            task.apply_async(args=[job_id], retry=True, retry_policy={"max_retries": 2})
        except Exception as error:  # kombu raises several unrelated types for "no broker"
            message = f"The task queue could not be reached ({type(error).__name__}: {error})."
            on_failure(message)
            raise QueueUnavailable(message) from error

    transaction.on_commit(send)
