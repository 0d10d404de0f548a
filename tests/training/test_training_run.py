import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from annotation.candidates.models import GenerationJob
from annotation.labeling.services import assignment_next, comparison_submit
from config.errors import ServiceError
from models_registry.models import ModelVersion
from models_registry.services import ensure_base_model_from_folder
from tests.factories import make_task, make_version
from training.models import DatasetSnapshot, TrainingRun
from training.services import (
    snapshot_create,
    training_run_cancel,
    training_run_execute,
    training_run_start,
)


def _judge_all(project, labeler, side="left"):
    while (assignment := assignment_next(project=project, labeler=labeler)) is not None:
        comparison_submit(
            project=project,
            labeler=labeler,
            assignment_id=assignment.pk,
            side=side,
            client_id=uuid.uuid4(),
        )


@pytest.fixture
def judged_project(project, labeler):
    for number in range(4):
        make_task(project, texts=(f"Yes {number}.", f"No, never, not at all {number}."))
    _judge_all(project, labeler)
    return project


def test_snapshot_is_content_addressed_and_reused(judged_project):
    first = snapshot_create(project=judged_project)
    second = snapshot_create(project=judged_project)

    assert first.pk == second.pk
    assert first.row_count == 4
    assert len(first.content_hash) == 64
    assert Path(first.path).read_text(encoding="utf-8").count("\n") == 4


def test_training_without_decisive_judgments_is_refused(project, labeler):
    make_task(project)
    _judge_all(project, labeler, side="tie")
    base = make_version()

    with pytest.raises(ServiceError, match="no decisive comparisons"):
        training_run_start(project=project, base_version=base)
    assert TrainingRun.objects.count() == 0


@pytest.mark.parametrize(
    ("config", "message"),
    [({"learning_rate": -1}, "learning_rate"), ({"warp_speed": 9}, "warp_speed")],
)
def test_bad_config_is_refused_and_nothing_is_stored(judged_project, config, message):
    with pytest.raises(ServiceError, match=message):
        training_run_start(project=judged_project, base_version=make_version(), config=config)
    assert TrainingRun.objects.count() == 0
    assert DatasetSnapshot.objects.count() == 0


def test_a_run_trains_registers_its_version_and_queues_its_candidates(
    judged_project, tiny_model_dir, django_capture_on_commit_callbacks
):
    base = ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)
    run = training_run_start(
        project=judged_project, base_version=base, config={"max_steps": 2, "batch_size": 2}
    )

    with django_capture_on_commit_callbacks(execute=False):
        training_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert list(run.steps.values_list("step", flat=True)) == [1, 2]
    version = ModelVersion.objects.get(training_run=run)
    assert version.parent == base and version.method == "dpo"
    assert (version.seed, version.snapshot_hash) == (run.seed, run.snapshot.content_hash)
    assert GenerationJob.objects.get(model_version=version).status == "queued"


def test_a_failed_run_keeps_its_error_and_registers_nothing(judged_project, tmp_path, settings):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    base = make_version(path=str(broken))
    run = training_run_start(project=judged_project, base_version=base)

    training_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert run.error
    assert ModelVersion.objects.filter(training_run=run).count() == 0
    assert not any(p.name.startswith(".run-") for p in settings.MODELS_DIR.iterdir())


def test_cancel_before_start_means_the_worker_does_nothing(judged_project):
    run = training_run_start(project=judged_project, base_version=make_version())

    training_run_cancel(run=run)
    training_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED
    assert run.steps.count() == 0
    with pytest.raises(ServiceError, match="already cancelled"):
        training_run_cancel(run=run)


def test_a_redelivered_message_does_not_train_twice(judged_project):
    # given: another worker is training the run and still reporting
    run = training_run_start(project=judged_project, base_version=make_version())
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.RUNNING, heartbeat_at=timezone.now()
    )

    # when
    training_run_execute(run_id=run.pk)

    # then
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.RUNNING
    assert run.started_at is None


def test_a_redelivered_message_of_a_dead_worker_fails_the_run_with_the_reason(
    judged_project, settings
):
    # given: the worker that had the run stopped reporting at step 3 (checkpoint at 2)
    run = training_run_start(project=judged_project, base_version=make_version())
    silent_since = timezone.now() - timedelta(seconds=settings.TRAINING_STALE_AFTER_SECONDS + 1)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.RUNNING,
        heartbeat_at=silent_since,
        step=3,
        total_steps=10,
        checkpoint_step=2,
    )

    # when
    training_run_execute(run_id=run.pk)

    # then
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert run.error == (
        "The worker stopped reporting at step 3 of 10 (it died or lost its connection); "
        "resume to continue from the checkpoint at step 2."
    )
    assert run.can_resume
