"""Migrations training 0005 and models_registry 0011 on a real schema (Django's
MigrationExecutor): absolute paths under DATA_DIR stored before them become relative, paths
elsewhere stay absolute, and migrating back makes them absolute again."""

import pytest
from django.db import connection

from tests.migrations import migrate_to, schema_at

BEFORE = [
    ("training", "0004_kto_and_rrhf_methods"),
    ("models_registry", "0010_kto_and_rrhf_methods"),
]
AFTER = [
    ("training", "0005_paths_relative_to_data_dir"),
    ("models_registry", "0011_paths_relative_to_data_dir"),
]


@pytest.fixture
def schema_before(transactional_db):
    """The schema as it was before the two migrations; put back to the latest after."""
    with schema_at(BEFORE) as apps:
        yield apps


def _stored(table: str, columns: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns} FROM {table} ORDER BY id")  # noqa: S608 (test names)
        return [tuple(row) for row in cursor.fetchall()]


def test_absolute_paths_under_data_dir_become_relative_and_back(schema_before, settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    data = str(tmp_path / "data")
    Project = schema_before.get_model("annotation", "Project")
    ModelVersion = schema_before.get_model("models_registry", "ModelVersion")
    DatasetSnapshot = schema_before.get_model("training", "DatasetSnapshot")
    project = Project.objects.create(slug="old-paths", name="Old paths")
    ModelVersion.objects.create(
        name="base", model_id="base", method="base", base_path=f"{data}/models/tiny"
    )
    ModelVersion.objects.create(
        name="tuned",
        model_id="tuned",
        method="dpo",
        base_path=f"{data}/models/tiny",
        adapter_path=f"{data}/models/run-1-dpo",
    )
    ModelVersion.objects.create(
        name="in-place", model_id="in-place", method="base", base_path="/srv/imported/model"
    )
    DatasetSnapshot.objects.create(
        project=project,
        format="preferences",
        content_hash="a" * 64,
        path=f"{data}/snapshots/old-paths-preferences-aaaa.jsonl",
        row_count=1,
    )
    before_versions = _stored("models_registry_modelversion", "base_path, adapter_path")
    before_snapshots = _stored("training_datasetsnapshot", "path")

    migrate_to(AFTER)

    assert _stored("models_registry_modelversion", "base_path, adapter_path") == [
        ("models/tiny", ""),
        ("models/tiny", "models/run-1-dpo"),
        ("/srv/imported/model", ""),
    ]
    assert _stored("training_datasetsnapshot", "path") == [
        ("snapshots/old-paths-preferences-aaaa.jsonl",)
    ]

    migrate_to(BEFORE)

    assert _stored("models_registry_modelversion", "base_path, adapter_path") == before_versions
    assert _stored("training_datasetsnapshot", "path") == before_snapshots
