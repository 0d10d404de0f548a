from django.utils import timezone

from annotation.candidates.models import GenerationJob
from config import jobs
from training.models import TrainingRun

# The per-step metrics each method's page charts, in order, with their labels.
CHART_METRICS = {
    "sft": (("loss", "loss (NLL on replies)"),),
    "reward": (("loss", "pairwise loss"), ("accuracy", "pair accuracy"), ("margin", "margin")),
    "dpo": (
        ("loss", "total loss"),
        ("dpo_loss", "DPO loss"),
        ("nll_loss", "NLL on chosen"),
        ("reward_accuracy", "reward accuracy"),
        ("reward_margin", "reward margin"),
    ),
    "ppo": (
        ("score", "reward-model score"),
        ("kl", "KL to reference"),
        ("kl_coef", "KL coefficient"),
        ("policy_loss", "policy loss"),
        ("value_loss", "value loss"),
        ("reply_length", "reply length"),
    ),
    "raft": (
        ("loss", "SFT loss"),
        ("reward_mean", "mean reward of kept"),
        ("reward_best", "best reward"),
    ),
    "soup": (),
}
SUMMARY_METRICS = (
    ("loss", "final loss"),
    ("train_loss", "mean training loss"),
    ("accuracy", "pair accuracy"),
    ("reward_accuracy", "reward accuracy"),
    ("reward_margin", "reward margin"),
    ("score", "reward-model score"),
    ("kl", "KL to reference"),
    ("reward_mean", "mean reward of kept"),
    ("pairs", "training pairs"),
    ("rows", "training rows"),
    ("train_seconds", "seconds"),
    ("tokens_per_s", "tokens/s"),
)
LOG_LINES = 200


def generation_jobs_of(*, runs):
    """The generation jobs of the versions the runs registered, oldest first."""
    return GenerationJob.objects.filter(model_version__training_run__in=runs).order_by("pk")


def training_runs(*, project, limit: int = 20):
    return (
        TrainingRun.objects.filter(project=project)
        .select_related("base_version", "snapshot", "reward_version", "mix_with", "dataset_version")
        .order_by("-created_at")[:limit]
    )


def _chart(points: list[tuple[int, float]], *, width: int, height: int, max_step: int) -> dict:
    values = [value for _, value in points]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    polyline = " ".join(
        f"{width * step / max_step:.1f},{height - height * (value - low) / span:.1f}"
        for step, value in points
    )
    return {"points": polyline, "count": len(points), "low": low, "high": high, "last": values[-1]}


def run_charts(*, run: TrainingRun, width: int = 300, height: int = 90) -> list[dict]:
    """One small SVG chart per metric of the run's method, each on its own scale (loss
    and accuracy do not share one), so the page needs no chart library and htmx redraws
    them by swapping the fragment."""
    rows = list(run.steps.values_list("step", "metrics"))
    if not rows:
        return []
    max_step = max(step for step, _ in rows) or 1
    charts = []
    for key, label in CHART_METRICS.get(run.method, ()):
        points = [(step, float(m[key])) for step, m in rows if m.get(key) is not None]
        if points:
            chart = _chart(points, width=width, height=height, max_step=max_step)
            charts.append({"key": key, "label": label, "width": width, "height": height, **chart})
    return charts


def run_eta_seconds(*, run: TrainingRun) -> float | None:
    """Seconds left at the pace of the last ten steps; None before two steps are in."""
    if run.status != TrainingRun.Status.RUNNING or not run.total_steps:
        return None
    recent = list(run.steps.order_by("-step").values_list("step", "created_at")[:10])
    if len(recent) < 2:
        return None
    (last_step, last_at), (first_step, first_at) = recent[0], recent[-1]
    per_step = (last_at - first_at).total_seconds() / max(1, last_step - first_step)
    since_last = (timezone.now() - last_at).total_seconds()
    return max(0.0, per_step * (run.total_steps - last_step) - since_last)


def run_outlook(*, run: TrainingRun) -> dict:
    """Its place in line and time left (config.jobs.job_outlook) among the runs, which share
    the gpu queue; a running run's time left is at the pace of its last steps
    (``run_eta_seconds``), a truer clock than the whole run's pace, which counts loading."""
    outlook = jobs.job_outlook(run, done_field="step", total_field="total_steps")
    if run.status == TrainingRun.Status.RUNNING:
        seconds = run_eta_seconds(run=run)
        outlook["eta_seconds"] = None if seconds is None else round(seconds)
        outlook["text"] = jobs.outlook_text(
            status=run.status,
            position=None,
            eta_seconds=seconds,
            done=run.step,
            total=run.total_steps,
        )
    return outlook


def with_outlook(runs) -> list[TrainingRun]:
    """The runs, each with its ``outlook`` (only active ones cost queries)."""
    runs = list(runs)
    for run in runs:
        run.outlook = run_outlook(run=run)
    return runs


def held_out_metrics(*, run: TrainingRun) -> list[tuple[str, float]]:
    metrics = run.final_metrics or {}
    return [
        (key.removeprefix("eval_").replace("_", " "), value)
        for key, value in sorted(metrics.items())
        if key.startswith("eval_") and isinstance(value, int | float)
    ]


def run_summary(*, run: TrainingRun) -> list[tuple[str, float]]:
    metrics = run.final_metrics or {}
    return [(label, metrics[key]) for key, label in SUMMARY_METRICS if key in metrics]


def log_tail(*, run: TrainingRun, lines: int = LOG_LINES) -> list[str]:
    return run.log.splitlines()[-lines:]


def snapshot_ai(snapshot) -> str | None:
    """The ai choice a snapshot was made with; None for data without labels (prompts) and
    for a dataset version's rows, whose recipe chose them. A snapshot recorded before the
    choice was always written out holds every AI label."""
    from training.services import AI_DATASETS, LEGACY_AI

    if snapshot is None or snapshot.format not in AI_DATASETS:
        return None
    if "dataset_version" in (snapshot.filters or {}):
        return None
    return (snapshot.filters or {}).get("ai", LEGACY_AI)


def snapshot_ai_text(snapshot) -> str:
    """In words, whose AI labels a snapshot holds ("" for prompts)."""
    ai = snapshot_ai(snapshot)
    if ai is None:
        return ""
    filters = snapshot.filters or {}
    if "ai" not in filters:
        return "every AI label (include: the default when this snapshot was made)"
    if ai == "exclude":
        return "none (exclude: people's labels only)"
    judges = [
        f"{j.get('judge', '')} ({j.get('constitution', '')}, kappa "
        + ("–" if j.get("kappa") is None else f"{j['kappa']:.2f}")
        + ")"
        for j in filters.get("ai_judges", [])
    ]
    return f"{ai}: from {', '.join(judges) if judges else 'no judge'}"
