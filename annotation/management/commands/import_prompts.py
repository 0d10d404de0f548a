from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation.models import Project
from annotation.prompts.services import prompts_import
from config.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Import prompts from a JSONL or CSV file into a project; all or nothing. Prompts "
        "already there (same id, or same text without an id) are not added again."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--project", required=True, help="Project slug.")

    def handle(self, *args, path: Path, project: str, **options):
        target = Project.objects.filter(slug=project).first()
        if target is None:
            raise CommandError(f"No project with slug {project!r}.")
        try:
            content = path.read_bytes()
        except OSError as error:
            raise CommandError(f"Cannot read {path}: {error.strerror}.") from None
        try:
            batch = prompts_import(project=target, file_name=path.name, content=content)
        except ServiceError as error:
            raise CommandError(f"{path}: {error.message} Nothing was imported.") from None
        self.stdout.write(
            f"Imported {batch.prompt_count} new prompts into {target.slug}; "
            f"{batch.existing_count} were already there."
        )
