"""A generation job's lifecycle (config/jobs.py): a lost attempt resumes without duplicate
replies and pairs what it stored, a cancel stops it at the next batch, and the cancel
button and endpoint refuse a job that has ended."""

from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.candidates.models import GenerationJob
from annotation.candidates.services import (
    generation_job_cancel,
    generation_job_execute,
    generation_job_start,
    generation_jobs_fail_stale,
)
from annotation.models import Response, Task
from config import jobs
from models_registry.engine import ml
from models_registry.services import ensure_base_model_from_folder
from tests.factories import make_prompt, make_version

Status = GenerationJob.Status
PARAMS = {"max_new_tokens": 3, "seed": 4}


def _silent_for(seconds: int):
    return timezone.now() - timedelta(seconds=seconds)


def _replies(version) -> list[tuple[int, int]]:
    return sorted(
        Response.objects.filter(model_version=version).values_list("prompt_id", "sample_index")
    )


def _paired(prompt) -> int:
    return Task.objects.filter(prompt=prompt, kind="comparison").count()


@pytest.fixture
def crashed(project, tiny_model_dir, settings):
    """A job of two fresh prompts (two samples each) whose worker was killed after storing
    the first prompt's two replies: running, counted 2 of 4, silent, nothing paired."""
    settings.GENERATION_STALE_AFTER_SECONDS = 60
    prompts = [make_prompt(project), make_prompt(project)]
    base = ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)
    job = generation_job_start(project=project, model_version=base, params=PARAMS)
    jobs.job_claim(GenerationJob, job.pk, stale_after=60)
    for index in (0, 1):
        Response.objects.create(
            prompt=prompts[0], model_version=base, sample_index=index, text=f"dead {index}"
        )
    GenerationJob.objects.filter(pk=job.pk).update(done=2, total=4, heartbeat_at=_silent_for(61))
    return job, base, prompts


def test_a_redelivery_after_a_crash_resumes_without_duplicates_and_pairs_all(crashed):
    job, base, prompts = crashed
    dead = set(Response.objects.filter(model_version=base).values_list("pk", flat=True))

    generation_job_execute(job_id=job.pk)  # the dead attempt's message, redelivered

    job.refresh_from_db()
    assert (job.status, job.attempts, job.done, job.total) == (Status.SUCCEEDED, 2, 4, 4)
    assert job.error == ""
    assert "The worker stopped reporting (no heartbeat for 60 s). Resuming." in job.log
    assert _replies(base) == sorted((prompt.pk, index) for prompt in prompts for index in (0, 1))
    assert dead <= set(Response.objects.filter(model_version=base).values_list("pk", flat=True))
    assert [_paired(prompt) for prompt in prompts] == [1, 1]


def test_a_redelivery_while_the_worker_still_reports_changes_nothing(crashed):
    job, base, _ = crashed
    GenerationJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now())

    generation_job_execute(job_id=job.pk)

    job.refresh_from_db()
    assert (job.status, job.attempts, job.done) == (Status.RUNNING, 1, 2)
    assert len(_replies(base)) == 2
    assert Task.objects.count() == 0


def test_the_sweep_queues_a_silent_job_again_and_it_resumes(
    crashed, django_capture_on_commit_callbacks
):
    job, base, prompts = crashed

    with django_capture_on_commit_callbacks() as sent:
        assert generation_jobs_fail_stale(project=job.project) == 1

    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.QUEUED, 1)
    assert "no heartbeat for 60 s). Queued again to resume." in job.log
    assert len(sent) == 1  # its message, sent on commit
    generation_job_execute(job_id=job.pk)  # what that message does on a worker
    job.refresh_from_db()
    assert (job.status, job.attempts, job.done, job.total) == (Status.SUCCEEDED, 2, 4, 4)
    assert len(_replies(base)) == 4
    assert [_paired(prompt) for prompt in prompts] == [1, 1]


def test_a_silent_job_that_cannot_be_queued_again_is_failed_with_the_reason(
    transactional_db, login, admin_member, project, unreachable_broker
):
    # autocommit, as in production: the message is sent (and refused) inside the sweep
    job = GenerationJob.objects.create(
        project=project,
        model_version=make_version(),
        status=Status.RUNNING,
        attempts=1,
        heartbeat_at=_silent_for(300),
    )

    page = login(admin_member).get(f"/p/{project.slug}/models/")

    assert page.status_code == 200
    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert "task queue could not be reached" in job.error


def test_a_job_lost_on_its_last_attempt_is_failed_with_the_reason(crashed):
    job, base, _ = crashed
    GenerationJob.objects.filter(pk=job.pk).update(attempts=GenerationJob.max_attempts)

    assert generation_jobs_fail_stale() == 1

    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert job.error == (
        "The worker stopped reporting (no heartbeat for 60 s) on attempt 3; "
        "it is not retried again."
    )
    assert job.finished_at is not None


def test_the_models_page_sweeps_silent_jobs(login, admin_member, crashed):
    job, _, _ = crashed
    GenerationJob.objects.filter(pk=job.pk).update(attempts=GenerationJob.max_attempts)

    page = login(admin_member).get(f"/p/{job.project.slug}/models/")

    assert "The worker stopped reporting (no heartbeat for 60 s)" in page.content.decode()
    job.refresh_from_db()
    assert job.status == Status.FAILED


def test_a_cancel_mid_job_stops_at_the_next_batch_and_pairs_what_was_stored(
    project, tiny_model_dir, settings, monkeypatch
):
    # given: two fresh prompts, one reply per batch, and a cancel after the third batch
    settings.GENERATION_BATCH_SIZE = 1
    prompts = [make_prompt(project), make_prompt(project)]
    base = ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)
    job = generation_job_start(project=project, model_version=base, params=PARAMS)
    generate = ml.generate_replies
    batches = []

    def generate_then_cancel(*args, **kwargs):
        batches.append(1)
        if len(batches) == 3:
            generation_job_cancel(job=job)
        return generate(*args, **kwargs)

    monkeypatch.setattr(ml, "generate_replies", generate_then_cancel)

    # when
    generation_job_execute(job_id=job.pk)

    # then: the third batch is stored, the fourth never runs; the full prompt is paired
    job.refresh_from_db()
    assert (job.status, job.done, job.total, job.error) == (Status.CANCELLED, 3, 4, "")
    assert len(batches) == 3
    assert _replies(base) == [(prompts[0].pk, 0), (prompts[0].pk, 1), (prompts[1].pk, 0)]
    assert [_paired(prompt) for prompt in prompts] == [1, 0]
    assert "cancelled" in job.log


def test_cancelling_a_queued_job_ends_it_and_its_message_does_nothing(project, tiny_model_dir):
    make_prompt(project)
    base = ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)
    job = generation_job_start(project=project, model_version=base, params=PARAMS)

    generation_job_cancel(job=job)
    generation_job_execute(job_id=job.pk)

    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.CANCELLED, 0)
    assert Response.objects.filter(model_version=base).count() == 0


def _job(project, status) -> GenerationJob:
    return GenerationJob.objects.create(
        project=project, model_version=make_version(), status=status
    )


def test_the_api_cancels_a_running_job(login, admin_member, project):
    job = _job(project, Status.RUNNING)

    answer = login(admin_member).post(
        f"/api/projects/{project.slug}/generation-jobs/{job.pk}/cancel/"
    )

    assert answer.status_code == 200
    assert (answer.json()["status"], answer.json()["cancel_requested"]) == ("running", True)
    job.refresh_from_db()
    assert job.cancel_requested


@pytest.mark.parametrize("status", [Status.SUCCEEDED, Status.FAILED, Status.CANCELLED])
def test_cancelling_an_ended_job_is_refused_and_changes_nothing(
    login, admin_member, project, status
):
    job = _job(project, status)
    client = login(admin_member)

    answer = client.post(f"/api/projects/{project.slug}/generation-jobs/{job.pk}/cancel/")
    page = client.post(f"/p/{project.slug}/models/jobs/{job.pk}/cancel/", follow=True)

    expected = f"The job has already {status}; only a queued or running job can be cancelled."
    assert answer.status_code == 400
    assert answer.json() == {"detail": expected}
    assert page.redirect_chain == [(f"/p/{project.slug}/models/", 302)]
    assert expected in page.content.decode()
    job.refresh_from_db()
    assert (job.status, job.cancel_requested, job.finished_at) == (status, False, None)


def test_a_job_of_another_project_is_not_found_here(login, admin_member, project, other_project):
    job = _job(other_project, Status.RUNNING)
    client = login(admin_member)

    answer = client.post(f"/api/projects/{project.slug}/generation-jobs/{job.pk}/cancel/")
    page = client.post(f"/p/{project.slug}/models/jobs/{job.pk}/cancel/")

    assert (answer.status_code, page.status_code) == (404, 404)
    job.refresh_from_db()
    assert not job.cancel_requested


def test_the_models_page_offers_cancel_for_active_jobs_only(login, admin_member, project):
    queued, running = _job(project, Status.QUEUED), _job(project, Status.RUNNING)
    ended = _job(project, Status.SUCCEEDED)
    GenerationJob.objects.filter(pk=running.pk).update(cancel_requested=True)

    html = login(admin_member).get(f"/p/{project.slug}/models/").content.decode()

    slug = project.slug
    assert f'action="/p/{slug}/models/jobs/{queued.pk}/cancel/"' in html
    assert f'action="/p/{slug}/models/jobs/{running.pk}/cancel/"' in html
    assert f'action="/p/{slug}/models/jobs/{ended.pk}/cancel/"' not in html
    assert "Cancelling…" in html


def test_the_page_and_api_say_each_active_jobs_place_in_line_and_time_left(
    login, admin_member, project, other_project
):
    now = timezone.now()
    finished = _job(other_project, Status.SUCCEEDED)  # every project's jobs share the worker
    GenerationJob.objects.filter(pk=finished.pk).update(
        started_at=now - timedelta(seconds=600), finished_at=now - timedelta(seconds=360)
    )
    running = _job(project, Status.RUNNING)
    GenerationJob.objects.filter(pk=running.pk).update(
        done=10, total=20, started_at=now - timedelta(seconds=120), heartbeat_at=now
    )
    first, second = _job(other_project, Status.QUEUED), _job(project, Status.QUEUED)
    client = login(admin_member)

    listed = client.get(f"/api/projects/{project.slug}/generation-jobs/").json()
    html = client.get(f"/p/{project.slug}/models/").content.decode()

    by_id = {job["id"]: job for job in listed}
    assert by_id[second.pk]["queue_position"] == 2
    # 120 s left of the running job, then the one ahead and this one at 240 s each.
    assert abs(by_id[second.pk]["eta_seconds"] - 600) <= 2
    assert by_id[second.pk]["outlook"] == "queued — 2nd in line, about 10 min"
    assert by_id[running.pk]["queue_position"] is None
    assert abs(by_id[running.pk]["eta_seconds"] - 120) <= 2
    assert by_id[running.pk]["outlook"] == "running 10/20 — about 2 min left"
    assert first.pk not in by_id
    assert "queued — 2nd in line, about 10 min" in html
    assert "running 10/20 — about 2 min left" in html


def test_an_ended_job_has_no_place_in_line_or_time_left(login, admin_member, project):
    _job(project, Status.SUCCEEDED)

    (listed,) = login(admin_member).get(f"/api/projects/{project.slug}/generation-jobs/").json()

    assert (listed["queue_position"], listed["eta_seconds"], listed["outlook"]) == (None, None, "")
