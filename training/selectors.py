from training.models import TrainingRun


def training_runs(*, project, limit: int = 20):
    return (
        TrainingRun.objects.filter(project=project)
        .select_related("base_version", "snapshot")
        .order_by("-created_at")[:limit]
    )


CHART_SERIES = (("loss", "total loss"), ("dpo_loss", "DPO loss"), ("nll_loss", "NLL on chosen"))
SUMMARY_METRICS = (
    ("reward_accuracy", "reward accuracy"),
    ("reward_margin", "reward margin"),
    ("dpo_loss", "DPO loss"),
    ("nll_loss", "NLL on chosen"),
    ("pairs", "pairs"),
    ("train_seconds", "seconds"),
    ("tokens_per_s", "tokens/s"),
)


def loss_chart(*, run: TrainingRun, width: int = 600, height: int = 200) -> dict:
    """The run's per-step losses as SVG polylines on one shared scale, so the page needs no
    chart library and htmx can redraw it by swapping the fragment."""
    rows = list(run.steps.values_list("step", "metrics"))
    series = [
        (key, label, [(step, metrics[key]) for step, metrics in rows if key in metrics])
        for key, label in CHART_SERIES
    ]
    values = [value for _, _, points in series for _, value in points]
    if not values:
        return {"width": width, "height": height, "series": [], "steps": 0}
    max_step = max(step for step, _ in rows) or 1
    low, high = min(0.0, min(values)), max(values)
    span = (high - low) or 1.0

    def scaled(points):
        return " ".join(
            f"{width * step / max_step:.1f},{height - height * (value - low) / span:.1f}"
            for step, value in points
        )

    return {
        "width": width,
        "height": height,
        "low": low,
        "high": high,
        "steps": len(rows),
        "last_loss": rows[-1][1].get("loss"),
        "series": [
            {"key": key, "label": label, "points": scaled(points), "count": len(points)}
            for key, label, points in series
            if points
        ],
    }


def run_summary(*, run: TrainingRun) -> list[tuple[str, float]]:
    metrics = run.final_metrics or {}
    return [(label, metrics[key]) for key, label in SUMMARY_METRICS if key in metrics]
