from celery import shared_task

from training import services


@shared_task(acks_late=True, reject_on_worker_lost=True)
def training_run_execute_task(run_id: int) -> None:
    services.training_run_execute(run_id=run_id)
