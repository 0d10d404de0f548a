from celery import shared_task

from config.jobs import run_stale_sweeps
from training import services


@shared_task(acks_late=True, reject_on_worker_lost=True)
def training_run_execute_task(run_id: int) -> None:
    services.training_run_execute(run_id=run_id)


# Celery beat sends it every JOB_SWEEP_INTERVAL_SECONDS (config/celery.py), on the
# interactive worker: the gpu worker it watches may be the one that died.
@shared_task(name="training.sweep_stale_runs_task", queue="interactive")
def sweep_stale_runs_task() -> dict[str, int]:
    return run_stale_sweeps((("training runs", services.training_runs_fail_stale),))
