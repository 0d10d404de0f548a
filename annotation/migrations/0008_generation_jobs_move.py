"""Generation jobs move from the registry to annotation/candidates/ (issue 12: the registry
writes no annotation rows). Only Django's state moves: the table keeps its name
(``db_table = "models_registry_generationjob"``) and its rows, so nothing is copied.
models_registry 0009 removes the model from the registry's state."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0007_chat_turns"),
        ("models_registry", "0007_generation_job_lifecycle"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="GenerationJob",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "status",
                            models.CharField(
                                choices=[
                                    ("queued", "Queued"),
                                    ("running", "Running"),
                                    ("succeeded", "Succeeded"),
                                    ("failed", "Failed"),
                                    ("cancelled", "Cancelled"),
                                ],
                                default="queued",
                                max_length=10,
                            ),
                        ),
                        ("done", models.PositiveIntegerField(default=0)),
                        ("total", models.PositiveIntegerField(default=0)),
                        ("error", models.TextField(blank=True)),
                        ("log", models.TextField(blank=True)),
                        ("attempts", models.PositiveSmallIntegerField(default=0)),
                        ("cancel_requested", models.BooleanField(default=False)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("started_at", models.DateTimeField(blank=True, null=True)),
                        ("finished_at", models.DateTimeField(blank=True, null=True)),
                        ("heartbeat_at", models.DateTimeField(blank=True, null=True)),
                        ("samples_per_prompt", models.PositiveSmallIntegerField(default=1)),
                        (
                            "best_of",
                            models.PositiveSmallIntegerField(
                                default=1,
                                help_text="Sample this many replies and keep the reward "
                                "model's best.",
                            ),
                        ),
                        ("generation_params", models.JSONField(default=dict)),
                        (
                            "created_by",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "model_version",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="generation_jobs",
                                to="models_registry.modelversion",
                            ),
                        ),
                        (
                            "project",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="generation_jobs",
                                to="annotation.project",
                            ),
                        ),
                        (
                            "reward_version",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to="models_registry.modelversion",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "models_registry_generationjob",
                        "ordering": ["-created_at"],
                        "abstract": False,
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
