"""An AI judge job through a real Celery worker process on PostgreSQL and Redis: killed
with SIGKILL mid-job, it is failed with the reason once silent (the judgments it stored
stay), and a new job on a new worker judges only the pairs left."""

import time

import pytest

from annotation.judges import jobs, services
from annotation.models import JudgeJob, Judgment, Role
from tests.annotation.judges.fake_endpoint import Answer, FakeEndpoint, completion, option_text
from tests.factories import make_member, make_project, make_task
from tests.worker_fixtures import start_worker, stop_worker, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(600)]

PAIRS = 8


def _slow_and_sensible(number, payload):
    """A judge that prefers the good answer and takes half a second per request."""
    p_a = 0.9 if option_text(payload, "A").startswith("good") else 0.1
    return Answer(body=completion("A", {"A": p_a, "B": 1 - p_a}), delay=0.5)


def _ended(job_id):
    job = JudgeJob.objects.get(pk=job_id)
    return job if not job.is_active else None


def test_a_worker_killed_mid_job_fails_it_with_the_reason_and_a_new_job_judges_the_rest(
    client, celery_worker_process, settings, tmp_path
):
    # given: eight pairs and a remote judge that answers slowly
    project = make_project("judge-kill")
    admin = make_member(project, Role.ADMIN, "judge-kill-admin")
    tasks = [make_task(project, texts=(f"good {i}", f"bad {i}")) for i in range(PAIRS)]
    log = tmp_path / "worker.log"
    with FakeEndpoint(_slow_and_sensible) as endpoint:
        judge = services.judge_create(
            workspace=project.workspace,
            name="slow-remote",
            backend="remote",
            endpoint_url=endpoint.url,
            endpoint_model="judge-model",
            api_key="",
            constitution=services.ensure_default_constitution(),
        )
        job = jobs.judge_job_start(project=project, judge=judge, kind="pairwise")

        # when: the worker is killed outright after two pairs
        wait_for(
            lambda: JudgeJob.objects.get(pk=job.pk).done >= 2,
            timeout=120,
            what="two judged pairs",
            log=log,
        )
        celery_worker_process.kill()
        celery_worker_process.wait()
        killed_at = JudgeJob.objects.get(pk=job.pk)
        assert killed_at.status == JudgeJob.Status.RUNNING
        stored_by_the_dead = set(
            Judgment.objects.filter(judge_job=job).values_list("pk", flat=True)
        )
        assert 2 <= len(stored_by_the_dead) < PAIRS

        # then: once silent long enough, reading the job fails it with the reason
        client.force_login(admin)
        url = f"/api/projects/{project.slug}/judge-jobs/{job.pk}/"
        settings.JUDGE_JOB_STALE_AFTER_SECONDS = 1
        time.sleep(1.5)
        payload = wait_for(
            lambda: (answer := client.get(url).json())["status"] == "partial" and answer,
            timeout=15,
            what="the silent job to be failed",
            log=log,
        )
        settings.JUDGE_JOB_STALE_AFTER_SECONDS = 120
        assert payload["error"].startswith(
            "The worker stopped reporting (no heartbeat for 1 s); it is not run again."
        )
        assert set(Judgment.objects.filter(judge_job=job).values_list("pk", flat=True)) == (
            stored_by_the_dead
        )

        # and: a new job on a new worker judges only the pairs left, none twice
        again = jobs.judge_job_start(project=project, judge=judge, kind="pairwise")
        worker, worker_log = start_worker(settings, tmp_path / "worker-2.log")
        try:
            ended = wait_for(lambda: _ended(again.pk), timeout=180, what="the new job", log=log)
        finally:
            stop_worker(worker)
            worker_log.close()
    assert ended.status == JudgeJob.Status.SUCCEEDED, ended.error
    assert ended.total == PAIRS - len(stored_by_the_dead)
    judged = list(
        Judgment.objects.filter(source=Judgment.Source.AI).values_list("task_id", flat=True)
    )
    assert sorted(judged) == sorted(task.pk for task in tasks)
