from models_registry.models import GenerationJob, ModelVersion


def policy_versions():
    return ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY).select_related("parent")


def versions(*, kind: str | None = None):
    """Every registered version (policies and reward models), or those of one kind."""
    rows = ModelVersion.objects.select_related("parent")
    return rows.filter(kind=kind) if kind else rows


def generation_jobs(*, project, limit: int = 10):
    return (
        GenerationJob.objects.filter(project=project)
        .select_related("model_version", "reward_version")
        .order_by("-created_at")[:limit]
    )
