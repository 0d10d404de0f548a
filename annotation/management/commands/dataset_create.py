from django.core.management.base import BaseCommand, CommandError

from annotation.datasets.versions import (
    AI_CHOICES,
    DEDUPE_CHOICES,
    KINDS,
    PII_CHOICES,
    dataset_version_create,
    parse_recipe,
)
from annotation.models import Project
from config.errors import ServiceError


def report_lines(report: list[dict]) -> list[str]:
    """What each step removed or changed, with its examples, one line each."""
    lines = []
    for step in report:
        lines.append(
            f"  {step['step']} ({step['detail']}): {step['seen']} rows seen, "
            f"{step['removed']} removed, {step['changed']} changed"
        )
        lines.extend(f"    e.g. {example}" for example in step["examples"])
    return lines


class Command(BaseCommand):
    help = (
        "Curate a project's data into a new immutable dataset version (personal data, "
        "duplicates, language, quality, mixing) and print what each step removed or changed."
    )
    # A data command needs no URL or model-server checks: without them it never loads torch.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--name", required=True, help="The dataset's name.")
        parser.add_argument("--kind", required=True, choices=KINDS)
        parser.add_argument(
            "--source", default="", help="Comma-separated import sources, 'labelers', 'ai'."
        )
        parser.add_argument("--pii", default="scrub", choices=PII_CHOICES)
        parser.add_argument("--dedupe", default="exact", choices=DEDUPE_CHOICES)
        parser.add_argument("--language", default="", help="Language codes to keep, e.g. en,de.")
        parser.add_argument(
            "--quality",
            default="",
            help="Rules, e.g. min_chars=10,max_chars=4000,max_repetition=0.3,top=0.5.",
        )
        parser.add_argument("--ai", default=None, choices=AI_CHOICES)
        parser.add_argument("--mix", default="", help="OTHER_VERSION:WEIGHT,... e.g. hh@2:0.5")
        parser.add_argument("--licence", default="", help="The licence the card states.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Print what it would keep; store nothing."
        )

    def handle(self, *args, **options):
        from annotation.datasets.versions import curate

        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"No project with slug {options['project']!r}.")
        try:
            recipe = parse_recipe(
                project,
                kind=options["kind"],
                sources=options["source"],
                ai=options["ai"],
                pii=options["pii"],
                dedupe=options["dedupe"],
                languages=options["language"],
                quality=options["quality"],
                mix=options["mix"],
                licence=options["licence"],
            )
            if options["dry_run"]:
                curated = curate(project, recipe)
                self.stdout.write(f"Would keep {curated.row_count} rows.")
                self.stdout.write("\n".join(report_lines(curated.report)))
                return
            version, created = dataset_version_create(
                project=project, name=options["name"], recipe=recipe
            )
        except ServiceError as error:
            raise CommandError(f"{error.message} Nothing was created.") from None
        verb = "Created" if created else "Already there (same rows):"
        self.stdout.write(
            f"{verb} {project.slug}/{version.name} v{version.number}: {version.row_count} "
            f"{version.kind} rows, sha256 {version.content_hash[:12]}, at {version.path}"
        )
        self.stdout.write("\n".join(report_lines(version.report)))
