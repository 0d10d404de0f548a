"""training/tasks.py's periodic sweep (sent by Celery beat, config/celery.py): called as
the worker calls it, it fails runs whose worker died, naming their checkpoint."""

from datetime import timedelta

from django.utils import timezone

from tests.factories import make_version
from training.models import TrainingRun
from training.tasks import sweep_stale_runs_task


def _running(project, *, silent_for: int) -> TrainingRun:
    at = timezone.now() - timedelta(seconds=silent_for)
    return TrainingRun.objects.create(
        project=project,
        method="dpo",
        base_version=make_version(f"base-{silent_for}"),
        status=TrainingRun.Status.RUNNING,
        step=3,
        total_steps=10,
        checkpoint_step=2,
        attempts=1,
        started_at=at,
        heartbeat_at=at,
    )


def test_the_sweep_fails_a_silent_run_with_the_reason(project, settings):
    settings.TRAINING_STALE_AFTER_SECONDS = 60
    lost = _running(project, silent_for=61)
    busy = _running(project, silent_for=5)

    counts = sweep_stale_runs_task.apply().get()

    assert counts == {"training runs": 1}
    lost.refresh_from_db()
    assert lost.status == TrainingRun.Status.FAILED
    assert lost.error == (
        "The worker stopped reporting at step 3 of 10 (it died or lost its connection); "
        "resume to continue from the checkpoint at step 2."
    )
    busy.refresh_from_db()
    assert busy.status == TrainingRun.Status.RUNNING
