"""annotation/tasks.py's periodic sweep (sent by Celery beat, config/celery.py): called as
the worker calls it, it ends the app's jobs whose worker died, each with its reason."""

from datetime import timedelta

from django.utils import timezone

from annotation.models import ArenaBattle, ChatSession, ChatTurn, GenerationJob, Judge, JudgeJob
from annotation.tasks import STALE_SWEEPS, sweep_stale_jobs_task
from tests.annotation.judges.factories import make_judge
from tests.factories import make_prompt, make_version


def _silent_for(seconds: int):
    return timezone.now() - timedelta(seconds=seconds)


def _running_judge_job(project, *, silent_for: int, done: int = 0) -> JudgeJob:
    return JudgeJob.objects.create(
        project=project,
        judge=Judge.objects.first() or make_judge(),
        kind=JudgeJob.Kind.PAIRWISE,
        status=JudgeJob.Status.RUNNING,
        attempts=1,
        done=done,
        total=3,
        started_at=_silent_for(silent_for),
        heartbeat_at=_silent_for(silent_for),
    )


def _battle_on_its_last_attempt(project, labeler, *, silent_for: int) -> ArenaBattle:
    return ArenaBattle.objects.create(
        project=project,
        labeler=labeler,
        prompt=make_prompt(project, f"Battle prompt {silent_for}"),
        prompt_source="pool",
        version_a=make_version(f"a-{silent_for}"),
        version_b=make_version(f"b-{silent_for}"),
        status=ArenaBattle.Status.RUNNING,
        attempts=ArenaBattle.max_attempts,
        started_at=_silent_for(silent_for),
        heartbeat_at=_silent_for(silent_for),
    )


def test_the_sweep_fails_a_silent_judge_job_and_battle_with_the_reason(project, labeler, settings):
    settings.JUDGE_JOB_STALE_AFTER_SECONDS = 60
    settings.ARENA_STALE_AFTER_SECONDS = 60
    lost_job = _running_judge_job(project, silent_for=61, done=1)
    busy_job = _running_judge_job(project, silent_for=5)
    lost_battle = _battle_on_its_last_attempt(project, labeler, silent_for=61)
    busy_battle = _battle_on_its_last_attempt(project, labeler, silent_for=5)

    counts = sweep_stale_jobs_task.apply().get()

    assert counts == {"judge jobs": 1, "arena battles": 1, "generation jobs": 0, "chat turns": 0}
    lost_job.refresh_from_db()
    assert lost_job.status == JudgeJob.Status.PARTIAL
    assert lost_job.error == (
        "The worker stopped reporting (no heartbeat for 60 s); it is not run again. "
        "1 of 3 items were stored."
    )
    lost_battle.refresh_from_db()
    assert lost_battle.status == ArenaBattle.Status.FAILED
    assert lost_battle.error == (
        "The worker stopped reporting (no heartbeat for 60 s) on attempt 3. "
        'Press "Try again" to ask both models once more.'
    )
    busy_job.refresh_from_db()
    busy_battle.refresh_from_db()
    assert (busy_job.status, busy_battle.status) == ("running", "running")


def test_one_kind_failing_its_sweep_leaves_the_others_to_theirs(project, monkeypatch, settings):
    settings.JUDGE_JOB_STALE_AFTER_SECONDS = 60
    lost_job = _running_judge_job(project, silent_for=61)

    def broken():
        raise RuntimeError("database is locked")

    monkeypatch.setattr("annotation.tasks.STALE_SWEEPS", (("broken", broken), *STALE_SWEEPS))

    counts = sweep_stale_jobs_task.apply().get()

    assert counts == {
        "broken": -1,
        "judge jobs": 1,
        "arena battles": 0,
        "generation jobs": 0,
        "chat turns": 0,
    }
    lost_job.refresh_from_db()
    assert lost_job.status == JudgeJob.Status.FAILED


def test_the_sweep_ends_a_silent_chat_turn_and_generation_job_on_their_last_attempt(
    project, labeler, settings
):
    settings.CHAT_STALE_AFTER_SECONDS = 60
    settings.GENERATION_STALE_AFTER_SECONDS = 60
    version = make_version("swept")
    session = ChatSession.objects.create(project=project, labeler=labeler, model_version=version)
    last_attempt = {
        "status": "running",
        "attempts": 3,
        "started_at": _silent_for(61),
        "heartbeat_at": _silent_for(61),
    }
    turn = ChatTurn.objects.create(
        session=session,
        prompt=make_prompt(project, "Chat prompt"),
        model_version=version,
        message_index=0,
        total=2,
        **last_attempt,
    )
    job = GenerationJob.objects.create(project=project, model_version=version, **last_attempt)

    counts = sweep_stale_jobs_task.apply().get()

    assert counts == {"judge jobs": 0, "arena battles": 0, "generation jobs": 1, "chat turns": 1}
    turn.refresh_from_db()
    job.refresh_from_db()
    assert (turn.status, job.status) == ("failed", "failed")
    assert turn.error.startswith(
        "The worker stopped reporting (no heartbeat for 60 s) on attempt 3"
    )
    assert job.error.startswith("The worker stopped reporting (no heartbeat for 60 s) on attempt 3")
