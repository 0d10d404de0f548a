"""Celery tasks of the annotation app (Celery autodiscovers this module in every app)."""

from annotation.arena.tasks import arena_replies_generate_task
from annotation.candidates.tasks import generation_job_execute_task
from annotation.chat.tasks import chat_replies_generate_task
from annotation.judges.tasks import judge_job_run_gpu_task, judge_job_run_task

__all__ = [
    "arena_replies_generate_task",
    "chat_replies_generate_task",
    "generation_job_execute_task",
    "judge_job_run_gpu_task",
    "judge_job_run_task",
]
