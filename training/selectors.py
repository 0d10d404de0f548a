from training.models import TrainingRun


def training_runs(*, project, limit: int = 20):
    return (
        TrainingRun.objects.filter(project=project)
        .select_related("base_version", "snapshot")
        .order_by("-created_at")[:limit]
    )


def loss_curve_points(*, run: TrainingRun, width: int = 600, height: int = 200) -> dict:
    """The run's loss per step scaled into an SVG box, so the page needs no chart library."""
    steps = list(run.steps.values_list("step", "loss"))
    if not steps:
        return {"points": "", "width": width, "height": height, "steps": []}
    max_step = max(step for step, _ in steps) or 1
    losses = [loss for _, loss in steps]
    low, high = min(losses), max(losses)
    span = (high - low) or 1.0
    points = " ".join(
        f"{width * step / max_step:.1f},{height - height * (loss - low) / span:.1f}"
        for step, loss in steps
    )
    return {
        "points": points,
        "width": width,
        "height": height,
        "low": low,
        "high": high,
        "last_loss": losses[-1],
        "steps": steps,
    }
