"""Writes of the training app: snapshots, runs, and the bridge to training/methods."""

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotation.errors import ServiceError
from annotation.exports import jsonl_lines, preference_rows
from annotation.models import Project
from config.celery import enqueue_after_commit
from models_registry.models import ModelVersion
from models_registry.services import generation_job_start, model_version_register
from training.methods.dpo import DPOConfig, TrainingCancelled, train_dpo
from training.models import DatasetSnapshot, TrainingRun, TrainingStep

logger = logging.getLogger(__name__)

MIN_TRAINING_ROWS = 1


def snapshot_create(*, project: Project, export_format: str = "dpo") -> DatasetSnapshot:
    """Freeze the project's current preference rows into a content-addressed file."""
    settings.SNAPSHOTS_DIR.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    row_count = 0
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=settings.SNAPSHOTS_DIR, suffix=".part", delete=False
    ) as handle:
        for line in jsonl_lines(preference_rows(project, export_format=export_format)):
            handle.write(line)
            digest.update(line.encode("utf-8"))
            row_count += 1
    content_hash = digest.hexdigest()
    final_path = (
        settings.SNAPSHOTS_DIR / f"{project.slug}-{export_format}-{content_hash[:16]}.jsonl"
    )
    os.replace(handle.name, final_path)
    snapshot, _ = DatasetSnapshot.objects.get_or_create(
        project=project,
        format=export_format,
        content_hash=content_hash,
        defaults={"path": str(final_path), "row_count": row_count, "filters": {}},
    )
    return snapshot


def training_run_start(
    *, project: Project, base_version: ModelVersion, config: dict | None = None, user=None
) -> TrainingRun:
    """Validate the config, snapshot the data and queue a DPO run on the gpu queue."""
    try:
        dpo_config = DPOConfig.from_dict(config or {})
    except (TypeError, ValueError) as error:
        raise ServiceError(f"Bad training config: {error}") from None
    if base_version.kind != ModelVersion.Kind.POLICY:
        raise ServiceError("DPO trains a policy model; pick a policy version as the base.")
    snapshot = snapshot_create(project=project, export_format="dpo")
    if snapshot.row_count < MIN_TRAINING_ROWS:
        raise ServiceError(
            "There are no decisive comparisons to train on yet (ties and both-bad are left out)."
        )
    with transaction.atomic():
        run = TrainingRun.objects.create(
            project=project,
            method=TrainingRun.Method.DPO,
            base_version=base_version,
            snapshot=snapshot,
            config=asdict(dpo_config),
            seed=dpo_config.seed,
            created_by=user,
        )
        from training.tasks import training_run_execute_task

        enqueue_after_commit(
            training_run_execute_task,
            job_id=run.pk,
            on_failure=lambda message: _run_finished(run.pk, TrainingRun.Status.FAILED, message),
        )
    return run


def training_run_cancel(*, run: TrainingRun) -> TrainingRun:
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if run.status == TrainingRun.Status.QUEUED:
            run.status = TrainingRun.Status.CANCELLED
            run.finished_at = timezone.now()
            run.save(update_fields=["status", "finished_at"])
        elif run.status == TrainingRun.Status.RUNNING:
            run.cancel_requested = True
            run.save(update_fields=["cancel_requested"])
        else:
            raise ServiceError(f"The run has already {run.status}.")
    return run


def _run_finished(run_id: int, status: str, error: str = "") -> None:
    TrainingRun.objects.filter(pk=run_id).update(
        status=status, error=error, finished_at=timezone.now()
    )


def _claim_run(run_id: int) -> TrainingRun | None:
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status != TrainingRun.Status.QUEUED:
            return None  # redelivered, cancelled while queued, or already done
        run.status = TrainingRun.Status.RUNNING
        run.started_at = timezone.now()
        run.save(update_fields=["status", "started_at"])
        return run


def training_run_execute(*, run_id: int) -> None:
    """Train, verify and register; a failure leaves the run failed and registers nothing."""
    run = _claim_run(run_id)
    if run is None:
        return
    settings.MODELS_DIR.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f".run-{run.pk}-", dir=settings.MODELS_DIR))
    try:
        result = train_dpo(
            DPOConfig.from_dict(run.config),
            dataset_path=run.snapshot.path,
            base_model_path=run.base_version.base_path,
            output_dir=work_dir,
            on_step=lambda step, total, metrics: _record_step(run.pk, step, total, metrics),
            should_stop=lambda: _cancel_requested(run.pk),
        )
        version = _register_result(run, work_dir, result)
    except TrainingCancelled:
        shutil.rmtree(work_dir, ignore_errors=True)
        _run_finished(run.pk, TrainingRun.Status.CANCELLED)
        return
    except Exception as error:
        logger.exception("Training run %s failed", run.pk)
        shutil.rmtree(work_dir, ignore_errors=True)
        _run_finished(run.pk, TrainingRun.Status.FAILED, f"{type(error).__name__}: {error}")
        return
    _run_finished(run.pk, TrainingRun.Status.SUCCEEDED)
    generation_job_start(project=run.project, model_version=version)


def _register_result(run: TrainingRun, work_dir: Path, result) -> ModelVersion:
    final_dir = settings.MODELS_DIR / f"run-{run.pk}-{run.method}"
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.replace(work_dir, final_dir)
    TrainingRun.objects.filter(pk=run.pk).update(final_metrics=result.metrics)
    base = run.base_version
    return model_version_register(
        name=f"{base.name} / {run.method.upper()} run {run.pk}",
        method=ModelVersion.Method.DPO,
        base_path=base.base_path,
        adapter_path=str(final_dir),
        parent=base,
        training_run=run,
        snapshot_hash=run.snapshot.content_hash,
        config=run.config,
        seed=run.seed,
        library_versions=result.library_versions,
        metrics=result.metrics,
    )


def _record_step(run_id: int, step: int, total: int, metrics: dict) -> None:
    TrainingStep.objects.update_or_create(
        run_id=run_id,
        step=step,
        defaults={"loss": float(metrics.get("loss", 0.0)), "metrics": metrics},
    )
    TrainingRun.objects.filter(pk=run_id).update(step=step, total_steps=total)


def _cancel_requested(run_id: int) -> bool:
    return TrainingRun.objects.filter(pk=run_id, cancel_requested=True).exists()
