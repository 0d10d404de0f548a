from django.core.management.base import BaseCommand, CommandError

from config.errors import ServiceError
from models_registry.models import ModelVersion
from models_registry.services import model_version_import


class Command(BaseCommand):
    help = (
        "Import a model as a candidate version: a model folder on this machine, a .gguf file "
        "(converted once to safetensors under DATA_DIR/models) or a Hugging Face hub id "
        "(downloaded where the network allows)."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="unique name of the new version")
        parser.add_argument("source", help="folder, .gguf file or hub id")
        parser.add_argument(
            "--kind", choices=ModelVersion.Kind.values, default=ModelVersion.Kind.POLICY
        )

    def handle(self, *args, name, source, kind, **options):
        try:
            version = model_version_import(name=name, source=source, kind=kind)
        except ServiceError as error:
            raise CommandError(error.message) from None
        self.stdout.write(
            f"Imported {version.name} (version {version.pk}, {version.kind}, "
            f"{version.state}) from {version.imported_from}: {version.base_path}"
        )
