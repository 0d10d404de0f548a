import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation.datasets.selectors import (
    AI_OPTIONS,
    FORMATS,
    planned_preference_rows,
    write_jsonl,
)
from annotation.datasets.services import jsonl_file_write
from annotation.models import Project


class Command(BaseCommand):
    help = "Write a project's preference data as JSONL (dpo: TRL's conversational form)."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--format", default="dpo", choices=FORMATS)
        parser.add_argument("--output", default="-", help="File path, or - for stdout.")
        parser.add_argument(
            "--ai",
            default=None,
            choices=AI_OPTIONS,
            help="AI judges' labels: exclude, trusted (judges that clear the project's "
            "agreement threshold), include, or only them; default: the project's setting.",
        )

    def handle(self, *args, project: str, format: str, output: str, ai: str | None, **options):
        target = Project.objects.filter(slug=project).first()
        if target is None:
            raise CommandError(f"No project with slug {project!r}.")
        plan, rows = planned_preference_rows(project=target, export_format=format, ai=ai)
        self.stderr.write(plan.text)
        for warning in plan.warnings:
            self.stderr.write(f"Warning: {warning}")
        if output == "-":
            write_jsonl(rows, sys.stdout)
            return
        path = Path(output)
        count = jsonl_file_write(rows=rows, path=path)
        self.stderr.write(f"Wrote {count} rows to {path}.")
