"""The shared job lifecycle (config/jobs.py), on the generation job as a concrete kind."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from annotation.candidates.models import GenerationJob
from config import jobs
from config.jobs import Job
from tests.factories import make_version

Status = Job.Status


def _job(project, **fields) -> GenerationJob:
    return GenerationJob.objects.create(project=project, model_version=make_version(), **fields)


def _silent_for(seconds: int):
    return timezone.now() - timedelta(seconds=seconds)


def _row(job) -> tuple:
    job.refresh_from_db()
    return job.status, job.attempts, job.error, job.cancel_requested


def test_a_queued_job_is_claimed_once(project):
    job = _job(project)

    claimed = jobs.job_claim(GenerationJob, job.pk, stale_after=60)
    again = jobs.job_claim(GenerationJob, job.pk, stale_after=60)

    assert again is None
    assert (claimed.status, claimed.attempts) == (Status.RUNNING, 1)
    assert claimed.started_at is not None
    assert claimed.heartbeat_at is not None
    assert _row(job) == (Status.RUNNING, 1, "", False)


@pytest.mark.parametrize("status", [Status.SUCCEEDED, Status.FAILED, Status.CANCELLED])
def test_an_ended_job_is_not_claimed(project, status):
    job = _job(project, status=status)

    assert jobs.job_claim(GenerationJob, job.pk, stale_after=60) is None
    assert _row(job) == (status, 0, "", False)


def test_an_unknown_job_is_not_claimed(db):
    assert jobs.job_claim(GenerationJob, 999999, stale_after=60) is None


def test_a_redelivery_while_the_worker_still_reports_does_nothing(project):
    job = _job(project, status=Status.RUNNING, attempts=1, heartbeat_at=_silent_for(10))

    assert jobs.job_claim(GenerationJob, job.pk, stale_after=60) is None
    assert _row(job) == (Status.RUNNING, 1, "", False)


def test_a_redelivery_after_a_crash_resumes_a_resumable_kind(project):
    job = _job(project, status=Status.RUNNING, attempts=1, heartbeat_at=_silent_for(61))

    claimed = jobs.job_claim(GenerationJob, job.pk, stale_after=60)

    assert (claimed.status, claimed.attempts) == (Status.RUNNING, 2)
    assert claimed.heartbeat_at > _silent_for(5)
    assert (
        "the attempt before this one was lost: "
        "The worker stopped reporting (no heartbeat for 60 s). Resuming."
    ) in claimed.log


def test_a_redelivery_after_a_crash_fails_a_kind_that_cannot_resume(project, monkeypatch):
    monkeypatch.setattr(GenerationJob, "resumable", False)
    job = _job(project, status=Status.RUNNING, attempts=1, heartbeat_at=_silent_for(61))

    assert jobs.job_claim(GenerationJob, job.pk, stale_after=60) is None

    assert _row(job) == (
        Status.FAILED,
        1,
        "The worker stopped reporting (no heartbeat for 60 s).",
        False,
    )
    assert job.finished_at is not None


def test_a_job_that_used_its_attempts_is_failed_not_resumed(project):
    job = _job(project, status=Status.RUNNING, attempts=3, heartbeat_at=_silent_for(61))

    assert jobs.job_claim(GenerationJob, job.pk, stale_after=60) is None

    assert _row(job) == (
        Status.FAILED,
        3,
        "The worker stopped reporting (no heartbeat for 60 s) on attempt 3; "
        "it is not retried again.",
        False,
    )


def test_a_kind_words_its_own_reason_for_a_lost_attempt(project, monkeypatch):
    monkeypatch.setattr(GenerationJob, "resumable", False)
    job = _job(project, status=Status.RUNNING, attempts=1, heartbeat_at=_silent_for(61))
    lost = []

    jobs.job_claim(GenerationJob, job.pk, stale_after=60, on_lost=lost.append)

    assert [j.pk for j in lost] == [job.pk]
    assert _row(job) == (Status.RUNNING, 1, "", False)  # on_lost decides what to write


def test_the_sweep_fails_silent_jobs_with_the_reason_and_leaves_the_rest(project):
    silent = _job(project, status=Status.RUNNING, attempts=1, heartbeat_at=_silent_for(121))
    reporting = _job(project, status=Status.RUNNING, attempts=1, heartbeat_at=_silent_for(5))
    queued = _job(project)

    ended = jobs.job_fail_stale(GenerationJob, after_seconds=120)

    assert ended == 1
    assert _row(silent) == (
        Status.FAILED,
        1,
        "The worker stopped reporting (no heartbeat for 120 s).",
        False,
    )
    assert "failed: The worker stopped reporting" in silent.log
    assert _row(reporting) == (Status.RUNNING, 1, "", False)
    assert _row(queued) == (Status.QUEUED, 0, "", False)


def test_the_sweep_queues_a_resumable_job_again_when_given_resume(project):
    silent = _job(project, status=Status.RUNNING, attempts=1, heartbeat_at=_silent_for(121))
    used_up = _job(project, status=Status.RUNNING, attempts=3, heartbeat_at=_silent_for(121))
    queued_again = []

    ended = jobs.job_fail_stale(GenerationJob, after_seconds=120, resume=queued_again.append)

    assert ended == 2
    assert [job.pk for job in queued_again] == [silent.pk]
    assert _row(silent) == (Status.QUEUED, 1, "", False)
    assert "no heartbeat for 120 s). Queued again to resume." in silent.log
    assert _row(used_up)[0] == Status.FAILED


def test_the_sweep_keeps_to_its_filters(project, other_project):
    here = _job(project, status=Status.RUNNING, heartbeat_at=_silent_for(121))
    there = _job(other_project, status=Status.RUNNING, heartbeat_at=_silent_for(121))

    assert jobs.job_fail_stale(GenerationJob, after_seconds=120, project=project) == 1

    assert (_row(here)[0], _row(there)[0]) == (Status.FAILED, Status.RUNNING)


def test_cancel_ends_a_queued_job_and_asks_a_running_one_to_stop(project):
    queued = _job(project)
    running = _job(project, status=Status.RUNNING, attempts=1)

    jobs.job_cancel_request(GenerationJob, queued.pk)
    jobs.job_cancel_request(GenerationJob, running.pk)

    assert _row(queued) == (Status.CANCELLED, 0, "", False)
    assert queued.finished_at is not None
    assert _row(running) == (Status.RUNNING, 1, "", True)
    assert jobs.job_cancel_requested(GenerationJob, running.pk)
    assert not jobs.job_cancel_requested(GenerationJob, queued.pk)


@pytest.mark.parametrize("status", [Status.SUCCEEDED, Status.FAILED, Status.CANCELLED])
def test_an_ended_job_cannot_be_cancelled(project, status):
    job = _job(project, status=status)

    with pytest.raises(jobs.JobNotActive) as refused:
        jobs.job_cancel_request(GenerationJob, job.pk)

    assert refused.value.message == (
        f"The job has already {status}; only a queued or running job can be cancelled."
    )
    assert _row(job) == (status, 0, "", False)


def test_progress_counts_and_beats(project):
    job = _job(project, status=Status.RUNNING, heartbeat_at=_silent_for(100))

    jobs.job_progress(GenerationJob, job.pk, done=0, total=5)
    jobs.job_progress(GenerationJob, job.pk, add=2)
    jobs.job_progress(GenerationJob, job.pk, add=1)

    job.refresh_from_db()
    assert (job.done, job.total, job.percent) == (3, 5, 60)
    assert job.heartbeat_at > _silent_for(5)


def test_finish_records_the_end_and_the_reason(project):
    job = _job(project, status=Status.RUNNING)

    jobs.job_finish(GenerationJob, job.pk, Status.FAILED, "OSError: disk full")

    job.refresh_from_db()
    assert (job.status, job.error, job.is_active) == (Status.FAILED, "OSError: disk full", False)
    assert job.finished_at is not None


def test_the_heartbeat_thread_keeps_a_busy_job_fresh(transactional_db, project):
    job = _job(project, status=Status.RUNNING, heartbeat_at=_silent_for(100))

    with jobs.job_heartbeat(GenerationJob, job.pk, every=0.05):
        time.sleep(0.5)  # a long batch that reports nothing itself

    job.refresh_from_db()
    assert job.heartbeat_at > _silent_for(5)


@pytest.mark.postgres
def test_concurrent_claims_hand_the_job_to_exactly_one_worker(transactional_db, project):
    job = _job(project)
    start = threading.Barrier(4)
    claims = []

    def claim():
        start.wait()
        try:
            claims.append(jobs.job_claim(GenerationJob, job.pk, stale_after=60))
        finally:
            connection.close()

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(claim is not None for claim in claims) == 1
    assert _row(job) == (Status.RUNNING, 1, "", False)


def test_a_running_row_that_never_beat_is_judged_by_its_start(project):
    # e.g. a job left running before heartbeats were kept
    old = _job(project, status=Status.RUNNING, attempts=1, started_at=_silent_for(300))
    new = _job(project, status=Status.RUNNING, attempts=1, started_at=_silent_for(5))

    assert jobs.job_fail_stale(GenerationJob, after_seconds=120) == 1

    assert (_row(old)[0], _row(new)[0]) == (Status.FAILED, Status.RUNNING)
    assert jobs.job_claim(GenerationJob, new.pk, stale_after=120) is None


# --- Where a job stands: place in line and time left ----------------------------------------


def _queued_at(project, seconds_ago: int, **fields) -> GenerationJob:
    job = _job(project, **fields)
    GenerationJob.objects.filter(pk=job.pk).update(created_at=_silent_for(seconds_ago))
    job.refresh_from_db()
    return job


def _succeeded_in(project, seconds: int) -> GenerationJob:
    end = _silent_for(600)
    return _job(
        project,
        status=Status.SUCCEEDED,
        started_at=end - timedelta(seconds=seconds),
        finished_at=end,
    )


def test_queued_jobs_are_placed_in_line_oldest_first(project):
    first, second, third = (_queued_at(project, ago) for ago in (30, 20, 10))
    running = _job(project, status=Status.RUNNING)
    ended = _job(project, status=Status.SUCCEEDED)

    assert [jobs.queue_position(job) for job in (first, second, third)] == [1, 2, 3]
    assert jobs.queue_position(running) is None
    assert jobs.queue_position(ended) is None


def test_the_place_in_line_counts_only_the_same_queue(project, other_project):
    _queued_at(other_project, 30)
    mine = _queued_at(project, 10)

    assert jobs.queue_position(mine) == 2
    assert jobs.queue_position(mine, project=project) == 1


def test_a_running_job_has_the_time_left_at_its_pace_so_far(project):
    job = _job(project, status=Status.RUNNING, started_at=_silent_for(60), done=10, total=30)

    assert jobs.eta(job) == pytest.approx(120, abs=2)
    assert jobs.job_outlook(job)["text"] == "running 10/30 — about 2 min left"


def test_a_running_job_before_its_first_item_has_no_estimate(project):
    job = _job(project, status=Status.RUNNING, started_at=_silent_for(60), done=0, total=30)

    assert jobs.eta(job) is None
    assert jobs.job_outlook(job) == {
        "queue_position": None,
        "eta_seconds": None,
        "text": "running 0/30 — time left unknown",
    }


def test_a_queued_job_without_history_says_its_wait_is_unknown(project):
    job = _queued_at(project, 10)

    assert jobs.eta(job) is None
    assert jobs.job_outlook(job) == {
        "queue_position": 1,
        "eta_seconds": None,
        "text": "queued — next in line, time unknown",
    }


def test_a_queued_job_waits_for_those_ahead_at_the_typical_duration(project):
    _succeeded_in(project, 60)
    _succeeded_in(project, 120)  # typical: 90 s
    _job(project, status=Status.RUNNING, started_at=_silent_for(10))  # no pace yet: 90 s
    _queued_at(project, 30)  # 90 s
    _queued_at(project, 20)  # 90 s
    job = _queued_at(project, 10)  # and its own 90 s

    outlook = jobs.job_outlook(job)

    assert outlook == {
        "queue_position": 3,
        "eta_seconds": 360,
        "text": "queued — 3rd in line, about 6 min",
    }


def test_failed_and_cancelled_jobs_are_not_history(project):
    end = _silent_for(600)
    for status in (Status.FAILED, Status.CANCELLED):
        _job(project, status=status, started_at=end - timedelta(seconds=5), finished_at=end)

    assert jobs.typical_duration(GenerationJob) is None


@pytest.mark.parametrize("status", [Status.SUCCEEDED, Status.FAILED, Status.CANCELLED])
def test_an_ended_job_has_no_outlook(project, status):
    job = _job(project, status=status, done=3, total=3)

    assert jobs.job_outlook(job) == {"queue_position": None, "eta_seconds": None, "text": ""}


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(10, "under a minute"), (50, "about 1 min"), (240, "about 4 min"), (7800, "about 2 h 10 min")],
)
def test_durations_read_as_rough_words(seconds, words):
    assert jobs.duration_text(seconds) == words


@pytest.mark.parametrize(
    ("position", "words"), [(2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (21, "21st")]
)
def test_places_in_line_read_as_ordinals(position, words):
    text = jobs.outlook_text(status="queued", position=position, eta_seconds=None, done=0, total=0)

    assert text == f"queued — {words} in line, time unknown"


def test_a_resume_the_broker_refuses_fails_its_job_and_the_sweep_goes_on(
    transactional_db, project, unreachable_broker
):
    # autocommit, as in production: each resume's message is sent (and refused) in the sweep
    from annotation.candidates.services import generation_jobs_fail_stale

    silent = [
        _job(project, status="running", attempts=1, heartbeat_at=_silent_for(600)) for _ in range(2)
    ]

    assert generation_jobs_fail_stale() == 2

    for job in silent:
        job.refresh_from_db()
        assert job.status == "failed"
        assert "task queue could not be reached" in job.error
