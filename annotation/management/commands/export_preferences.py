import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation.exports import AI_OPTIONS, FORMATS, AiSelection, preference_rows, write_jsonl
from annotation.judges.trust import ai_label_plan
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
        plan = ai_label_plan(project=target, ai=ai)
        self.stderr.write(plan.text)
        for warning in plan.warnings:
            self.stderr.write(f"Warning: {warning}")
        rows = preference_rows(
            target, export_format=format, ai=AiSelection(plan.ai, plan.trusted_keys)
        )
        if output == "-":
            write_jsonl(rows, sys.stdout)
            return
        path = Path(output)
        partial = path.with_name(path.name + ".part")
        with partial.open("w", encoding="utf-8") as stream:
            count = write_jsonl(rows, stream)
        partial.replace(path)
        self.stderr.write(f"Wrote {count} rows to {path}.")
