"""Celery tasks of the annotation app (Celery autodiscovers this module in every app)."""

from annotation.ai.tasks import judge_job_run_gpu_task, judge_job_run_task
from annotation.arena_tasks import arena_replies_generate_task
from annotation.chat_tasks import chat_replies_generate_task

__all__ = [
    "arena_replies_generate_task",
    "chat_replies_generate_task",
    "judge_job_run_gpu_task",
    "judge_job_run_task",
]
