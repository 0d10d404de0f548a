"""Runs and artifacts name their files relative to DATA_DIR, so a worker on another machine
that mounts the same data elsewhere trains and serves from them: a snapshot and a trained
version written under DATA_DIR=A store relative paths; with the files moved to B and
DATA_DIR=B, the version generates and a run trains from the same snapshot. Rows written
before (absolute paths) still load."""

import shutil

import pytest
from django.db import connection

from models_registry.endpoints import generator_for
from models_registry.engine import ml
from models_registry.models import ModelVersion
from models_registry.services import ensure_base_model_from_folder
from tests.factories import make_preferences
from training.models import DatasetSnapshot, TrainingRun
from training.services import training_run_execute, training_run_start

SMALL = {"max_steps": 1, "batch_size": 2, "lora_r": 4, "lora_alpha": 8, "seed": 1}
GREEDY = ml.GenerationParams(max_new_tokens=4, do_sample=False, seed=0)
HELLO = [[{"role": "user", "content": "Say hello."}]]


def _use_data_dir(settings, folder):
    settings.DATA_DIR = folder
    settings.MODELS_DIR = folder / "models"
    settings.SNAPSHOTS_DIR = folder / "snapshots"


def _stored(table: str, column: str) -> list[str]:
    """The values in the database, as written (the field resolves them when read)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} ORDER BY id")  # noqa: S608 (test names)
        return [row[0] for row in cursor.fetchall()]


def _train(project, base) -> TrainingRun:
    run = training_run_start(project=project, base_version=base, method="dpo", config=SMALL)
    training_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    return run


def _replies(version: ModelVersion) -> list[str]:
    ml.load_policy.cache_clear()
    return [reply.text for reply in generator_for(version).generate(HELLO, GREEDY)]


@pytest.fixture
def machine_a(settings, tmp_path, tiny_model_dir, project, labeler):
    """DATA_DIR=A holding the base model's weights, a project with feedback."""
    _use_data_dir(settings, tmp_path / "a")
    shutil.copytree(tiny_model_dir, tmp_path / "a" / "models" / "tiny")
    make_preferences(project, labeler, 4)
    return tmp_path / "a"


def test_a_run_stores_its_snapshot_and_version_relative_to_data_dir(machine_a, project):
    base = ensure_base_model_from_folder(name="tiny", path=machine_a / "models" / "tiny")
    run = _train(project, base)
    version = ModelVersion.objects.get(training_run=run)

    assert _stored("training_datasetsnapshot", "path") == [
        f"snapshots/{run.snapshot.path.rsplit('/', 1)[1]}"
    ]
    assert _stored("models_registry_modelversion", "base_path")[0] == "models/tiny"
    assert _stored("models_registry_modelversion", "adapter_path")[1] == f"models/run-{run.pk}-dpo"
    # Code reads absolute paths under this DATA_DIR.
    assert version.adapter_path == str(machine_a / "models" / f"run-{run.pk}-dpo")
    assert run.snapshot.path.startswith(str(machine_a / "snapshots"))


def test_another_machine_with_the_data_mounted_elsewhere_serves_and_trains(
    machine_a, project, settings, tmp_path
):
    base = ensure_base_model_from_folder(name="tiny", path=machine_a / "models" / "tiny")
    first = _train(project, base)
    expected = _replies(ModelVersion.objects.get(training_run=first))

    shutil.move(machine_a, tmp_path / "b")  # the same files, mounted at another place
    _use_data_dir(settings, tmp_path / "b")

    trained = ModelVersion.objects.get(training_run=first)
    assert trained.base_path == str(tmp_path / "b" / "models" / "tiny")
    assert _replies(trained) == expected
    second = _train(project, ModelVersion.objects.get(pk=base.pk))
    assert second.snapshot_id == first.snapshot_id
    assert DatasetSnapshot.objects.get().path.startswith(str(tmp_path / "b"))
    assert ModelVersion.objects.get(training_run=second).adapter_path.startswith(
        str(tmp_path / "b")
    )


def test_an_old_row_with_an_absolute_path_still_generates(db, tiny_model_dir, settings, tmp_path):
    _use_data_dir(settings, tmp_path / "elsewhere")
    old = ModelVersion.objects.create(
        name="old", model_id="old", method="base", base_path=str(tiny_model_dir)
    )

    assert _stored("models_registry_modelversion", "base_path") == [str(tiny_model_dir)]
    assert ModelVersion.objects.get(pk=old.pk).base_path == str(tiny_model_dir)
    assert len(_replies(old)) == 1
