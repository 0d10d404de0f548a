"""The candidates feature's rows: generation jobs. Imported by annotation/models.py, so
Django knows them under the app label "annotation"."""

from django.conf import settings
from django.db import models

from config.jobs import Job


class GenerationJob(Job):
    """Generate candidate responses for a project's prompts with one model version.

    Its lifecycle is ``config.jobs``'. Resumable: replies are unique per (prompt, version,
    sample index) and a run writes only the samples still missing, so a lost attempt is
    taken up again.

    The table keeps the name it had when the registry held generation jobs: the model moved
    to annotation without touching the rows (migration annotation 0008)."""

    resumable = True

    project = models.ForeignKey(
        "annotation.Project", on_delete=models.CASCADE, related_name="generation_jobs"
    )
    # By label, not by class: annotation/models.py (the base) imports no registry module.
    model_version = models.ForeignKey(
        "models_registry.ModelVersion", on_delete=models.PROTECT, related_name="generation_jobs"
    )
    samples_per_prompt = models.PositiveSmallIntegerField(default=1)
    best_of = models.PositiveSmallIntegerField(
        default=1, help_text="Sample this many replies and keep the reward model's best."
    )
    reward_version = models.ForeignKey(
        "models_registry.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    generation_params = models.JSONField(default=dict)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    class Meta(Job.Meta):
        db_table = "models_registry_generationjob"
