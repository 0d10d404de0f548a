"""Model versions name their weight folders relative to DATA_DIR (DESIGN.md), so a worker on
another machine with the same DATA_DIR mount loads them. Existing absolute paths under
DATA_DIR become relative; paths elsewhere (a folder imported in place) stay absolute.
Backwards, relative paths become absolute under this DATA_DIR again."""

from django.db import migrations

import config.paths

PATH_FIELDS = ("base_path", "adapter_path")


def _rewrite(apps, convert):
    ModelVersion = apps.get_model("models_registry", "ModelVersion")
    for row in ModelVersion.objects.values("pk", *PATH_FIELDS):
        changed = {
            field: convert(row[field])
            for field in PATH_FIELDS
            if row[field] and convert(row[field]) != row[field]
        }
        if changed:
            ModelVersion.objects.filter(pk=row["pk"]).update(**changed)


def to_relative(apps, schema_editor):
    _rewrite(apps, config.paths.to_stored)


def to_absolute(apps, schema_editor):
    _rewrite(apps, config.paths.resolve)


class Migration(migrations.Migration):
    dependencies = [
        ("models_registry", "0010_kto_and_rrhf_methods"),
    ]

    operations = [
        # Runs while the columns are still plain CharFields, so it sees the stored values.
        migrations.RunPython(to_relative, to_absolute),
        migrations.AlterField(
            model_name="modelversion",
            name="adapter_path",
            field=config.paths.DataDirPathField(
                blank=True,
                help_text="LoRA adapter folder, empty for a full model; stored relative to "
                "DATA_DIR when under it.",
                max_length=500,
            ),
        ),
        migrations.AlterField(
            model_name="modelversion",
            name="base_path",
            field=config.paths.DataDirPathField(
                help_text="Folder of the full base weights; stored relative to DATA_DIR when "
                "under it.",
                max_length=500,
            ),
        ),
    ]
