"""An AI judge job's lifecycle (config/jobs.py): a job whose worker died is failed with the
reason (partly done when it stored items, which stay), by the sweep when its pages or API
are read or by the redelivered message, which judges nothing twice; a new job then skips
the pairs already judged."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from annotation.judges import jobs, services
from annotation.models import JudgeJob, Judgment, Role
from config import jobs as lifecycle
from tests.annotation.judges.fake_endpoint import Answer, FakeEndpoint, completion, option_text
from tests.factories import make_member, make_task

LOST = "The worker stopped reporting (no heartbeat for 60 s); it is not run again."


@pytest.fixture(autouse=True)
def _fast(settings):
    settings.AI_JUDGE_TIMEOUT_S = 0.3
    settings.AI_JUDGE_MAX_RETRIES = 2
    settings.AI_JUDGE_BACKOFF_S = 0.02
    settings.JUDGE_JOB_STALE_AFTER_SECONDS = 60


def _prefers_good(number, payload):
    p_a = 0.9 if option_text(payload, "A").startswith("good") else 0.1
    return Answer(body=completion("A", {"A": p_a, "B": 1 - p_a}))


@pytest.fixture
def endpoint():
    with FakeEndpoint(_prefers_good) as fake:
        yield fake


@pytest.fixture
def crashed(project, endpoint):
    """A pairwise job over three pairs whose worker was killed after judging the first:
    running, 1 of 3 done, silent for 61 s."""
    tasks = [make_task(project, texts=(f"good {i}", f"bad {i}")) for i in range(3)]
    judge = services.judge_create(
        workspace=project.workspace,
        name="remote",
        backend="remote",
        endpoint_url=endpoint.url,
        endpoint_model="judge-model",
        api_key="",
        constitution=services.ensure_default_constitution(),
    )
    job = jobs.judge_job_start(project=project, judge=judge, kind="pairwise", options={})
    lifecycle.job_claim(JudgeJob, job.pk, stale_after=60)
    a, b = tasks[0].ordered_responses()
    Judgment.objects.create(
        kind="comparison",
        project=project,
        task=tasks[0],
        prompt=tasks[0].prompt,
        shown_order=[a.pk, b.pk],
        response_a=a,
        response_b=b,
        choice="a",
        source=Judgment.Source.AI,
        judge=judge,
        judge_job=job,
        constitution=judge.constitution,
    )
    silent = timezone.now() - timedelta(seconds=61)
    JudgeJob.objects.filter(pk=job.pk).update(done=1, total=3, heartbeat_at=silent)
    return job, tasks


def test_the_sweep_fails_a_silent_job_with_the_reason_and_keeps_what_it_stored(crashed):
    job, _ = crashed

    assert jobs.judge_jobs_fail_stale(project=job.project) == 1

    job.refresh_from_db()
    assert job.status == JudgeJob.Status.PARTIAL
    assert job.error == f"{LOST} 1 of 3 items were stored."
    assert job.finished_at is not None
    assert f"Finished: Partly done - {LOST}" in job.log
    assert Judgment.objects.filter(judge_job=job).count() == 1
    assert jobs.judge_jobs_fail_stale(project=job.project) == 0


def test_a_silent_job_that_stored_nothing_is_failed(crashed):
    job, _ = crashed
    Judgment.objects.filter(judge_job=job).delete()
    JudgeJob.objects.filter(pk=job.pk).update(done=0)

    jobs.judge_jobs_fail_stale()

    job.refresh_from_db()
    assert (job.status, job.error) == (JudgeJob.Status.FAILED, f"{LOST} 0 of 3 items were stored.")


def test_a_redelivery_after_a_crash_fails_the_job_and_judges_nothing_twice(crashed, endpoint):
    job, _ = crashed

    assert jobs.judge_job_execute(job_id=job.pk) is None  # the dead attempt's message

    job.refresh_from_db()
    assert (job.status, job.attempts) == (JudgeJob.Status.PARTIAL, 1)
    assert job.error == f"{LOST} 1 of 3 items were stored."
    assert Judgment.objects.filter(judge_job=job).count() == 1
    assert endpoint.hits == []


def test_a_redelivery_while_the_worker_still_reports_changes_nothing(crashed, endpoint):
    job, _ = crashed
    JudgeJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now())

    assert jobs.judge_job_execute(job_id=job.pk) is None

    job.refresh_from_db()
    assert (job.status, job.done, job.error) == (JudgeJob.Status.RUNNING, 1, "")
    assert endpoint.hits == []


def test_a_new_job_after_the_lost_one_judges_only_the_pairs_left(crashed):
    job, tasks = crashed
    jobs.judge_jobs_fail_stale()

    again = jobs.judge_job_start(project=job.project, judge=job.judge, kind="pairwise")
    jobs.judge_job_execute(job_id=again.pk)

    again.refresh_from_db()
    assert (again.status, again.total, again.done, again.attempts) == ("succeeded", 2, 2, 1)
    assert again.heartbeat_at is not None
    judged = Judgment.objects.filter(source=Judgment.Source.AI).values_list("task_id", flat=True)
    assert sorted(judged) == sorted(task.pk for task in tasks)


def test_reading_the_job_page_and_api_sweeps_a_silent_job(client, crashed):
    job, _ = crashed
    viewer = make_member(job.project, Role.ADMIN, "viewer")
    client.force_login(viewer)
    slug = job.project.slug

    page = client.get(reverse("ai_judge_job", args=[slug, job.pk]))

    assert page.status_code == 200
    assert "no heartbeat for 60 s" in page.content.decode()
    answer = client.get(reverse("api_judge_job", args=[slug, job.pk]))
    assert answer.json()["status"] == "partial"
