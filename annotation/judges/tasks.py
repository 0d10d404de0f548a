"""Celery tasks of the AI judge jobs; annotation/tasks.py imports them so workers find them."""

from celery import shared_task

from annotation.judges import jobs


# A judge on a local model needs the gpu worker; one on a remote endpoint only waits on the
# network, so it runs on the default queue and leaves the gpu free.
@shared_task(name="annotation.judge_job_run_gpu_task", queue="gpu", acks_late=True)
def judge_job_run_gpu_task(job_id: int) -> None:
    jobs.judge_job_execute(job_id=job_id)


@shared_task(name="annotation.judge_job_run_task", queue="default", acks_late=True)
def judge_job_run_task(job_id: int) -> None:
    jobs.judge_job_execute(job_id=job_id)
