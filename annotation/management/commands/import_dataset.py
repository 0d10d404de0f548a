from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation.datasets.imports import DataImportError, dataset_import
from annotation.models import Project

FORMATS = ("auto", "trl", "hh-rlhf", "ultrafeedback", "oasst", "stackexchange", "sft", "prompts")


class Command(BaseCommand):
    help = (
        "Import an existing dataset (JSONL, CSV or Parquet) into a project: prompts, "
        "responses and imported judgments, whole or not at all. Importing a file again "
        "adds nothing."
    )
    # A data command needs no URL or model-server checks: without them it never loads torch.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--format", default="auto", choices=FORMATS)
        parser.add_argument(
            "--source", default="", help="The dataset's name (default: the file's name)."
        )

    def handle(self, *args, path: Path, project: str, format: str, source: str, **options):
        target = Project.objects.filter(slug=project).first()
        if target is None:
            raise CommandError(f"No project with slug {project!r}.")
        if not path.is_file():
            raise CommandError(f"No file at {path}.")
        try:
            batch = dataset_import(project=target, path=path, format=format, source=source)
        except DataImportError as error:
            raise CommandError(f"{path}: {error.message}") from None
        self.stdout.write(
            f"Imported {path.name} ({batch.format}) into {target.slug} as source "
            f"{batch.source!r}: {batch.record_count} records, {batch.prompt_count} new prompts "
            f"({batch.existing_count} already there), {batch.response_count} new responses, "
            f"{batch.judgment_count} new judgments."
        )
