"""The workspaces' ownership, made required once 0009 filled it in. A migration of its own:
PostgreSQL refuses to alter a table in the transaction that just updated its rows."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("annotation", "0009_workspaces")]

    operations = [
        migrations.AlterField(
            model_name="project",
            name="workspace",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="projects",
                to="annotation.workspace",
            ),
        ),
        migrations.AlterField(
            model_name="judge",
            name="workspace",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="judges",
                to="annotation.workspace",
            ),
        ),
        migrations.AddConstraint(
            model_name="constitution",
            constraint=models.UniqueConstraint(
                fields=("workspace", "name", "version"), name="constitution_version_once"
            ),
        ),
        migrations.AddConstraint(
            model_name="constitution",
            constraint=models.UniqueConstraint(
                condition=models.Q(("workspace__isnull", True)),
                fields=("name", "version"),
                name="builtin_constitution_version_once",
            ),
        ),
        migrations.AddConstraint(
            model_name="judge",
            constraint=models.UniqueConstraint(
                fields=("workspace", "name"), name="judge_name_per_workspace"
            ),
        ),
    ]
