from models_registry.models import GenerationJob, ModelVersion


def policy_versions():
    return ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY).select_related("parent")


def generation_jobs(*, project, limit: int = 10):
    return (
        GenerationJob.objects.filter(project=project)
        .select_related("model_version")
        .order_by("-created_at")[:limit]
    )
