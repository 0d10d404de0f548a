"""A generation job through a real Celery worker process on PostgreSQL and Redis: killed
with SIGKILL mid-job, it is queued again once silent and a new worker finishes it."""

import time

import pytest

from annotation.candidates.models import GenerationJob
from annotation.models import Response, Role, Task
from models_registry.services import ensure_base_model_from_folder
from tests.factories import make_member, make_project, make_prompt
from tests.worker_fixtures import start_worker, stop_worker, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(600)]


def _finished(job_id):
    job = GenerationJob.objects.get(pk=job_id)
    return job if not job.is_active else None


def test_a_worker_killed_mid_generation_leaves_a_job_a_new_worker_finishes(
    client, celery_worker_process, tiny_model_dir, settings, tmp_path
):
    # given: twelve fresh prompts (two samples each), one reply per batch
    settings.GENERATION_BATCH_SIZE = 1  # start_worker hands it to the worker
    project = make_project("gen-kill")
    admin = make_member(project, Role.ADMIN, "gen-kill-admin")
    prompts = [make_prompt(project) for _ in range(12)]
    base = ensure_base_model_from_folder(name="tiny-base", path=tiny_model_dir)
    client.force_login(admin)
    url = f"/api/projects/{project.slug}/generation-jobs/"
    answer = client.post(
        url,
        {"model_version": base.pk, "max_new_tokens": 32, "temperature": 0.7},
        content_type="application/json",
    )
    assert answer.status_code == 201, answer.content
    job_id = answer.json()["id"]
    log = tmp_path / "worker.log"

    # when: the worker is killed outright a few batches in
    wait_for(
        lambda: GenerationJob.objects.get(pk=job_id).done >= 3,
        timeout=180,
        what="three stored batches",
        log=log,
    )
    celery_worker_process.kill()
    celery_worker_process.wait()
    killed_at = GenerationJob.objects.get(pk=job_id)
    assert killed_at.status == GenerationJob.Status.RUNNING
    assert killed_at.done < 24
    stored_by_the_dead = set(
        Response.objects.filter(model_version=base).values_list("pk", flat=True)
    )
    assert stored_by_the_dead

    # then: once silent long enough, reading the jobs queues it again to resume
    settings.GENERATION_STALE_AFTER_SECONDS = 1
    time.sleep(1.5)
    wait_for(
        lambda: client.get(url).json()[0]["status"] == "queued",
        timeout=15,
        what="the silent job to be queued again",
        log=log,
    )
    settings.GENERATION_STALE_AFTER_SECONDS = 120

    # and: a new worker finishes it, with no duplicate replies, every reply paired
    worker, worker_log = start_worker(settings, tmp_path / "worker-2.log")
    try:
        job = wait_for(lambda: _finished(job_id), timeout=300, what="the resumed job", log=log)
    finally:
        stop_worker(worker)
        worker_log.close()
    assert job.status == GenerationJob.Status.SUCCEEDED, job.error
    assert (job.attempts, job.done, job.total) == (2, 24, 24)
    assert "Queued again to resume." in job.log
    replies = Response.objects.filter(model_version=base)
    assert replies.count() == 24
    assert sorted(replies.values_list("prompt_id", "sample_index")) == sorted(
        (prompt.pk, index) for prompt in prompts for index in (0, 1)
    )
    assert stored_by_the_dead <= set(replies.values_list("pk", flat=True))
    for prompt in prompts:
        assert Task.objects.filter(prompt=prompt, kind="comparison").count() == 1
        paired = set(
            Task.objects.filter(prompt=prompt).values_list("links__response_id", flat=True)
        )
        assert paired == set(replies.filter(prompt=prompt).values_list("pk", flat=True))
