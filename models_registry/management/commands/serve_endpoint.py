import os

from django.core.management.base import BaseCommand, CommandError

from config.errors import ServiceError
from models_registry import selectors
from models_registry.endpoints import serving_endpoint_clear, serving_endpoint_set
from models_registry.models import ModelVersion


class Command(BaseCommand):
    help = (
        "Generate a model version on an OpenAI-compatible inference server (vLLM, TGI, "
        "SGLang) instead of in this process, or (--clear) in this process again. The API key "
        "is read from an environment variable so it stays out of the shell history."
    )

    def add_arguments(self, parser):
        parser.add_argument("version", help="model id, name or numeric id of the version")
        parser.add_argument("--url", help="the server's API root, e.g. http://gpu-host:8000/v1")
        parser.add_argument(
            "--model", dest="served_model_name", help="the name the server serves it under"
        )
        key = parser.add_mutually_exclusive_group()
        key.add_argument(
            "--key-env", metavar="VAR", help="environment variable that holds the API key"
        )
        key.add_argument("--no-key", action="store_true", help="send no API key")
        parser.add_argument("--clear", action="store_true", help="generate in this process again")

    def handle(self, *args, version, url, served_model_name, key_env, no_key, clear, **options):
        found = selectors.version_by_reference(version)
        if found is None and version.isdigit():
            found = ModelVersion.objects.filter(pk=int(version)).first()
        if found is None:
            raise CommandError(f"No model version {version!r} (give its model id or name).")
        if clear:
            serving_endpoint_clear(version=found)
            self.stdout.write(f"{found.name} generates in-process again.")
            return
        api_key = None  # keep the key already set
        if no_key:
            api_key = ""
        elif key_env:
            api_key = os.environ.get(key_env)
            if not api_key:
                raise CommandError(f"The environment variable {key_env} is not set or empty.")
        try:
            serving_endpoint_set(
                version=found, url=url, served_model_name=served_model_name, api_key=api_key
            )
        except ServiceError as error:
            raise CommandError(error.message) from None
        key = "with an API key" if found.serving_api_key else "without an API key"
        self.stdout.write(
            f"{found.name} now generates on {found.serving_url} as "
            f"{found.served_model_name!r} ({key})."
        )
