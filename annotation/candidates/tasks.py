"""Celery task of generation jobs; annotation/tasks.py imports it so workers discover it."""

from celery import shared_task

from annotation.candidates import services


# Batch generation runs on the `gpu` queue, never on `interactive` (chat and the arena).
@shared_task(name="annotation.generation_job_execute_task", queue="gpu", acks_late=True)
def generation_job_execute_task(job_id: int) -> None:
    services.generation_job_execute(job_id=job_id)


# Messages queued before generation jobs moved here from the registry (issue 12) name the
# registry's old task; a worker of this version still runs them.
@shared_task(name="models_registry.tasks.generation_job_execute_task", queue="gpu", acks_late=True)
def generation_job_execute_task_queued_before_the_move(job_id: int) -> None:
    services.generation_job_execute(job_id=job_id)
