from django.apps import AppConfig


class ModelsRegistryConfig(AppConfig):
    name = "models_registry"
    verbose_name = "Model registry"

    def ready(self):
        from django.core import checks

        from config.checks import v1_limits

        checks.register(v1_limits)
