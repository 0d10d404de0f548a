from celery import shared_task

from models_registry import services


@shared_task(acks_late=True)
def generation_job_execute_task(job_id: int) -> None:
    services.generation_job_execute(job_id=job_id)
