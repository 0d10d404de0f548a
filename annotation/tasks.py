"""Celery tasks of the annotation app (Celery autodiscovers this module in every app), and
the periodic sweep of its jobs whose worker died."""

from celery import shared_task

from annotation.arena.services import arena_battles_fail_stale
from annotation.arena.tasks import arena_replies_generate_task
from annotation.candidates.services import generation_jobs_fail_stale
from annotation.candidates.tasks import (
    generation_job_execute_task,
    generation_job_execute_task_queued_before_the_move,
)
from annotation.chat.services import chat_turns_fail_stale
from annotation.chat.tasks import chat_replies_generate_task
from annotation.judges.jobs import judge_jobs_fail_stale
from annotation.judges.tasks import judge_job_run_gpu_task, judge_job_run_task
from config.jobs import run_stale_sweeps

__all__ = [
    "arena_replies_generate_task",
    "chat_replies_generate_task",
    "generation_job_execute_task",
    "generation_job_execute_task_queued_before_the_move",
    "judge_job_run_gpu_task",
    "judge_job_run_task",
    "sweep_stale_jobs_task",
]

# Each kind of job of this app whose worker may die, with the sweep that ends or resumes it:
# one line per kind.
STALE_SWEEPS = (
    ("judge jobs", judge_jobs_fail_stale),
    ("arena battles", arena_battles_fail_stale),
    ("generation jobs", generation_jobs_fail_stale),
    ("chat turns", chat_turns_fail_stale),
)


# Celery beat sends it every JOB_SWEEP_INTERVAL_SECONDS (config/celery.py). It runs on the
# interactive worker, whose jobs take seconds, so that a sweep never waits behind the long
# job of a worker it may have to declare dead.
@shared_task(name="annotation.sweep_stale_jobs_task", queue="interactive")
def sweep_stale_jobs_task() -> dict[str, int]:
    return run_stale_sweeps(STALE_SWEEPS)
