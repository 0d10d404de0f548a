"""Dataset snapshots name their files relative to DATA_DIR (DESIGN.md), so a worker on
another machine with the same DATA_DIR mount trains from them. Existing absolute paths under
DATA_DIR become relative; others stay as they are. Backwards, relative paths become
absolute under this DATA_DIR again."""

from django.db import migrations

import config.paths


def _rewrite(apps, convert):
    DatasetSnapshot = apps.get_model("training", "DatasetSnapshot")
    for pk, path in DatasetSnapshot.objects.values_list("pk", "path"):
        if path and convert(path) != path:
            DatasetSnapshot.objects.filter(pk=pk).update(path=convert(path))


def to_relative(apps, schema_editor):
    _rewrite(apps, config.paths.to_stored)


def to_absolute(apps, schema_editor):
    _rewrite(apps, config.paths.resolve)


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0004_kto_and_rrhf_methods"),
    ]

    operations = [
        # Runs while the column is still a plain CharField, so it sees the stored values.
        migrations.RunPython(to_relative, to_absolute),
        migrations.AlterField(
            model_name="datasetsnapshot",
            name="path",
            field=config.paths.DataDirPathField(
                help_text="The JSONL file; stored relative to DATA_DIR.", max_length=500
            ),
        ),
    ]
