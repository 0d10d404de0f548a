"""Reads of the labeling pages and API: the task queue's counts."""

from django.db.models import Count, F, Q

from annotation.models import Judgment, Project, Task


def task_counts_by_kind(*, project: Project) -> list[dict]:
    rows = (
        Task.objects.filter(project=project)
        .values("kind")
        .annotate(
            total_tasks=Count("id"),
            gold_tasks=Count("id", filter=Q(is_gold=True)),
            flagged_tasks=Count("id", filter=Q(flagged=True)),
            open_tasks=Count(
                "id",
                filter=Q(is_gold=False, flagged=False, assigned_count__lt=F("overlap_target")),
            ),
        )
        .order_by("kind")
    )
    return list(rows)


# --- going back to a judgment (annotation/labeling/changes.py) --------------------------

RECENT_LIMIT = 10


def recent_judgments(*, project: Project, labeler, limit: int = RECENT_LIMIT) -> list:
    """The labeler's last current judgments of tasks in this project, newest first: what
    the label page's "Recently judged" strip offers to go back to."""
    return list(
        Judgment.objects.filter(
            project=project,
            labeler=labeler,
            source=Judgment.Source.HUMAN,
            task__isnull=False,
            superseded_by__isnull=True,
        )
        .select_related("prompt")
        .order_by("-id")[:limit]
    )


def _side_shown(choice: str, *, judgment: Judgment) -> str:
    """A comparison choice in task terms (a, b, tie, both_bad) as the side it was shown on."""
    if choice not in (Judgment.Choice.A, Judgment.Choice.B):
        return choice
    picked = judgment.response_a_id if choice == Judgment.Choice.A else judgment.response_b_id
    return "left" if picked == judgment.shown_order[0] else "right"


def answer_as_shown(judgment: Judgment) -> dict:
    """A judgment as the values of its kind's form fields, to prefill the form when the
    labeler goes back to it: `choice` (a comparison button's value), `checked`
    ("name:value" of each radio and checkbox to tick), `rationale` and `text`."""
    checked = {f"flag:{flag}" for flag in judgment.flags or []}
    checked |= {f"score_{name}:{score}" for name, score in (judgment.scores or {}).items()}
    for name, choice in (judgment.criteria_choices or {}).items():
        checked.add(f"criterion_{name}:{_side_shown(choice, judgment=judgment)}")
    choice = _side_shown(judgment.choice, judgment=judgment) if judgment.choice else ""
    if choice in ("left", "right") and judgment.strength:
        choice = f"{choice}-{judgment.strength}"
    return {
        "choice": choice,
        "checked": checked,
        "rationale": judgment.rationale,
        "text": judgment.text,
        "all_bad": judgment.all_bad,
    }


def responses_as_answered(judgment: Judgment, shown: list) -> list:
    """The responses in the order the labeler answered with: a ranking best first (its
    form's order is the answer), every other kind as shown."""
    if not judgment.ranking:
        return shown
    place = {pk: index for index, pk in enumerate(judgment.ranking)}
    return sorted(shown, key=lambda response: place.get(response.pk, len(place)))


def own_judgment(*, project: Project, labeler, judgment_id: int) -> Judgment | None:
    """One of the labeler's judgments in this project, with its task and prompt."""
    return (
        Judgment.objects.select_related("task", "task__project", "prompt")
        .filter(pk=judgment_id, project=project, labeler=labeler)
        .first()
    )
