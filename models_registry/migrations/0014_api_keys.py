"""API keys stored hashed, named and scoped to a workspace (models_registry.models.ApiKey).

Every DRF authtoken key that exists becomes an ApiKey with the same secret (its SHA-256
stored, never the key), scoped to the workspace of the user's first project, so clients keep
working; then the plaintext tokens are deleted. A user in no project has no workspace to
scope a key to: that token is deleted without a replacement (such a user could not use
/v1 anyway). The table is read with SQL, because rest_framework.authtoken is no longer an
installed app; on a database that never had it there is nothing to do. Not reversible:
the secrets are gone once hashed.
"""

import hashlib

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

LEGACY_KEYS_TABLE = "authtoken_token"


def tokens_to_api_keys(apps, schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        if LEGACY_KEYS_TABLE not in connection.introspection.table_names(cursor):
            return
        cursor.execute(f"SELECT key, user_id, created FROM {LEGACY_KEYS_TABLE}")  # noqa: S608
        tokens = cursor.fetchall()
    ApiKey = apps.get_model("models_registry", "ApiKey")
    Project = apps.get_model("annotation", "Project")
    for key, user_id, created in tokens:
        project = Project.objects.filter(memberships__user_id=user_id).order_by("pk").first()
        if project is None:
            continue
        row = ApiKey.objects.create(
            user_id=user_id,
            workspace_id=project.workspace_id,
            name="Key from before named keys",
            prefix=key[:8],
            key_hash=hashlib.sha256(key.encode()).hexdigest(),
        )
        ApiKey.objects.filter(pk=row.pk).update(created_at=created)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {LEGACY_KEYS_TABLE}")  # noqa: S608


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0010_workspaces_required"),
        ("models_registry", "0013_version_workspaces"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ApiKey",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=100)),
                ("prefix", models.CharField(max_length=8)),
                ("key_hash", models.CharField(max_length=64, unique=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("last_used_at", models.DateTimeField(blank=True, null=True)),
                ("revoked_at", models.DateTimeField(blank=True, null=True)),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="api_keys",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "workspace",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="api_keys",
                        to="annotation.workspace",
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
            },
        ),
        migrations.RunPython(tokens_to_api_keys, migrations.RunPython.noop),
    ]
