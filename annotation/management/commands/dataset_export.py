from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation.datasets.exports import version_export
from annotation.datasets.versions import find_version
from annotation.datasets.writers import EXPORT_FORMATS
from annotation.models import Project
from config.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Export a dataset version in a TRL dataset type (JSONL, Parquet or a datasets "
        "folder) with its card; optionally push it to the Hugging Face Hub."
    )
    # A data command needs no URL or model-server checks: without them it never loads torch.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--name", required=True, help="NAME (newest version) or NAME@N.")
        parser.add_argument("--format", required=True, choices=EXPORT_FORMATS)
        parser.add_argument("--output", required=True, type=Path)
        container = parser.add_mutually_exclusive_group()
        container.add_argument("--parquet", action="store_true", help="Write Parquet.")
        container.add_argument(
            "--csv", action="store_true", help="Write CSV (tabular formats, formulas escaped)."
        )
        container.add_argument(
            "--save-to-disk", action="store_true", help="Write a datasets.save_to_disk folder."
        )
        parser.add_argument(
            "--standard", action="store_true", help="Plain strings, not conversational."
        )
        parser.add_argument("--push-to-hub", default="", metavar="REPO")

    def handle(self, *args, **options):
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"No project with slug {options['project']!r}.")
        container = "parquet" if options["parquet"] else "jsonl"
        if options["save_to_disk"]:
            container = "disk"
        if options["csv"]:
            container = "csv"
        try:
            version = find_version(project, options["name"])
            shipped = version_export(
                version=version,
                fmt=options["format"],
                output=options["output"],
                container=container,
                conversational=not options["standard"],
                push_to_hub=options["push_to_hub"],
            )
        except ServiceError as error:
            raise CommandError(error.message) from None
        self.stdout.write(
            f"Wrote {shipped.rows} {options['format']} rows of {version} to {shipped.output} "
            f"({container}), card at {shipped.card}"
            + (f"; pushed to {shipped.hub_url}" if shipped.hub_url else "")
        )
