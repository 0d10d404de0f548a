from django.core.management.base import BaseCommand

from models_registry.services import ensure_base_model


class Command(BaseCommand):
    help = "Convert the bundled SmolLM2-135M-Instruct GGUF to safetensors once and register it."

    def handle(self, *args, **options):
        version = ensure_base_model()
        self.stdout.write(f"Base model ready: {version.name} ({version.base_path})")
