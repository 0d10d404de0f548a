"""Builders of AI judges and AI judgments for tests, made as the judge jobs store them:
source "ai", no labeler, the judge, its constitution version and a principle, a soft label
P(A better) and per-order probabilities in ``ai_details``."""

import itertools

from annotation.models import Constitution, Judge, Judgment, Task, TaskKind, Workspace
from annotation.projects.services import ensure_workspace
from tests.factories import make_version

_counter = itertools.count(1)

PRINCIPLES = [
    {
        "name": "helpfulness",
        "critique_request": "Say how the reply could help more.",
        "revision_request": "Rewrite the reply to help more.",
        "comparison_question": "Which reply helps the user more?",
    }
]


def make_workspace() -> Workspace:
    number = next(_counter)
    return ensure_workspace(slug=f"workspace-{number}", name=f"Workspace {number}")


def make_constitution(
    name: str = "loop-default", version: int = 1, *, workspace: Workspace | None = None
) -> Constitution:
    """A constitution version of ``workspace``; built-in (no owner) when None."""
    return Constitution.objects.create(
        workspace=workspace, name=name, version=version, principles=PRINCIPLES
    )


def make_judge(
    name: str = "judge-local",
    constitution: Constitution | None = None,
    *,
    workspace: Workspace | None = None,
) -> Judge:
    """A local judge of ``workspace``: pass the project's (``project.workspace``) for a judge
    its jobs may use; None makes a workspace of its own, which no project uses."""
    return Judge.objects.create(
        workspace=workspace or make_workspace(),
        name=name,
        backend=Judge.Backend.LOCAL,
        model_version=make_version(f"{name}-model"),
        constitution=constitution or make_constitution(),
    )


def make_remote_judge(
    name: str,
    *,
    api_key: str,
    constitution: Constitution,
    workspace: Workspace | None = None,
) -> Judge:
    """A remote judge of ``workspace`` (None: a workspace of its own, as make_judge)."""
    return Judge.objects.create(
        workspace=workspace or make_workspace(),
        name=name,
        backend=Judge.Backend.REMOTE,
        endpoint_url="https://judge.example/v1",
        endpoint_model="judge-model",
        api_key=api_key,
        constitution=constitution,
    )


def make_ai_judgment(
    task: Task,
    judge: Judge,
    *,
    soft_label: float,
    agree: bool = True,
    swapped: bool = False,
    constitution: Constitution | None = None,
    principle: str = "helpfulness",
    choice: str | None = None,
) -> Judgment:
    """An AI comparison of the task's two responses; A is the task's first response
    unless ``swapped``. The choice follows the soft label unless given."""
    first, second = task.links.order_by("position").values_list("response_id", flat=True)
    if swapped:
        first, second = second, first
    if choice is None:
        choice = "a" if soft_label > 0.5 else "b" if soft_label < 0.5 else "tie"
    # As annotation/judges/pairwise.py stores them: order 1 showed A (X) first, order 2 B;
    # p_x is P(A better) read from that order.
    p_one = min(1.0, soft_label + 0.05)
    p_two = max(0.0, soft_label - 0.05) if agree else 1.0 - p_one
    orders = [
        _order("x", p_one, [first, second]),
        _order("y", p_two, [second, first]),
    ]
    return Judgment.objects.create(
        kind=TaskKind.COMPARISON,
        project=task.project,
        task=task,
        prompt=task.prompt,
        shown_order=[first, second],
        response_a_id=first,
        response_b_id=second,
        choice=choice,
        source=Judgment.Source.AI,
        labeler=None,
        judge=judge,
        constitution=constitution or judge.constitution,
        principle=principle,
        soft_label=soft_label,
        rationale="The first reply answers the question.",
        ai_details={"orders": orders, "agree": agree, "method": "logprobs", "unsure": False},
    )


def _order(first: str, p_x: float, shown_order: list[int]) -> dict:
    p_first = p_x if first == "x" else 1.0 - p_x  # P("A") of what was shown as (A)
    return {
        "first": first,
        "method": "logprobs",
        "probabilities": {"A": p_first, "B": 1.0 - p_first},
        "verdict": "A" if p_first > 0.5 else "B",
        "verdict_text": None,
        "critique": "",
        "p_x_raw": p_x,
        "p_x": p_x,
        "shown_order": shown_order,
    }
