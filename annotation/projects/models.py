"""The projects feature's own rows: guideline versions. Imported by annotation/models.py,
so Django knows them under the app label "annotation"."""

from django.conf import settings
from django.db import models


class Guidelines(models.Model):
    """One version of a project's labeling guidelines, in markdown. A version is never
    edited: saving new text adds the next version, and each judgment records the version
    it was made under."""

    project = models.ForeignKey(
        "annotation.Project", on_delete=models.CASCADE, related_name="guidelines"
    )
    version = models.PositiveIntegerField()
    text = models.TextField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "version"], name="guidelines_unique_version")
        ]
        ordering = ["project", "-version"]

    def __str__(self):
        return f"{self.project} guidelines v{self.version}"
