"""The demo project: users, prompts, hand-written answer pairs and example judgments."""

import json
import random
import uuid
from pathlib import Path

from django.contrib.auth import get_user_model
from django.db import transaction

from annotation.judges.services import ensure_default_constitution
from annotation.labeling.services import (
    assignment_next,
    comparison_submit,
    ensure_comparison_task,
    ensure_task,
)
from annotation.models import Judgment, Project, Prompt, Response, Role, TaskKind
from annotation.projects.services import ensure_membership, ensure_project

DEMO_DATA = Path(__file__).with_name("demo_data.json")
DEMO_USERS = {
    "admin": Role.ADMIN,
    "researcher": Role.RESEARCHER,
    "labeler1": Role.LABELER,
    "labeler2": Role.LABELER,
}
GOLD_PAIRS = 3
RATED_PROMPTS = 4
DEMONSTRATION_PROMPTS = 4
# (labeler, how many demo pairs they judge): labeler2 leaves work in the queue to try.
DEMO_JUDGING = (("labeler1", 30), ("labeler2", 12))
AGREEMENT_WITH_GOOD = 0.9


def _ensure_user(username: str, password: str):
    user, _ = get_user_model().objects.get_or_create(username=username)
    user.set_password(password)
    if username == "admin":
        user.is_staff = user.is_superuser = True
    user.save()
    return user


def _ensure_pairs(project: Project) -> None:
    items = json.loads(DEMO_DATA.read_text(encoding="utf-8"))["prompts"]
    for number, item in enumerate(items, start=1):
        prompt, _ = Prompt.objects.get_or_create(
            project=project, external_id=f"demo-{number}", defaults={"text": item["prompt"]}
        )
        good, _ = Response.objects.get_or_create(
            prompt=prompt, author="demo: careful writer", defaults={"text": item["good"]}
        )
        poor, _ = Response.objects.get_or_create(
            prompt=prompt, author="demo: sloppy writer", defaults={"text": item["poor"]}
        )
        if number > len(items) - GOLD_PAIRS:
            # Known answers: the careful writer's reply (created first, so it is A) wins.
            ensure_task(
                project=project,
                kind=TaskKind.COMPARISON,
                prompt=prompt,
                responses=[good, poor],
                gold_answer={"choice": "a"},
            )
        else:
            ensure_comparison_task(project=project, first=good, second=poor)
    _ensure_other_kinds(project, items)


def _ensure_other_kinds(project: Project, items: list) -> None:
    """A few rating and demonstration tasks, after the comparisons, so every kind of work
    can be tried at once."""
    prompts = Prompt.objects.filter(project=project, external_id__startswith="demo-")
    by_number = {int(p.external_id.removeprefix("demo-")): p for p in prompts}
    for number in range(1, RATED_PROMPTS + 1):
        for response in by_number[number].responses.order_by("id"):
            ensure_task(
                project=project,
                kind=TaskKind.RATING,
                prompt=by_number[number],
                responses=[response],
                priority=-1,
            )
    for number in range(RATED_PROMPTS + 1, RATED_PROMPTS + DEMONSTRATION_PROMPTS + 1):
        ensure_task(
            project=project, kind=TaskKind.DEMONSTRATION, prompt=by_number[number], priority=-1
        )


def _judge_demo_tasks(project: Project, users: dict, rng: random.Random) -> None:
    for username, count in DEMO_JUDGING:
        labeler = users[username]
        already = Judgment.objects.filter(project=project, labeler=labeler).count()
        for _ in range(count - already):
            assignment = assignment_next(project=project, labeler=labeler, rng=rng)
            if assignment is None or assignment.task.kind != TaskKind.COMPARISON:
                break  # the rest of the queue is left for people to try
            left = assignment.shown_responses()[0]
            good_side = "left" if left.author.endswith("careful writer") else "right"
            bad_side = "right" if good_side == "left" else "left"
            side = good_side if rng.random() < AGREEMENT_WITH_GOOD else bad_side
            comparison_submit(
                project=project,
                labeler=labeler,
                assignment_id=assignment.pk,
                side=f"{side}-{rng.choice([2, 3, 4])}",
                client_id=uuid.UUID(int=rng.getrandbits(128)),
                time_spent_ms=rng.randint(4_000, 40_000),
            )


def demo_load(*, password: str, seed: int = 0) -> Project:
    """Create or refresh the demo; running it again adds nothing twice."""
    with transaction.atomic():
        project = ensure_project(
            slug="demo",
            name="Demo: helpful, harmless, honest",
            description="Everyday requests with two candidate answers each. Pick the better one.",
            overlap_target=2,
        )
        users = {name: _ensure_user(name, password) for name in DEMO_USERS}
        for name, role in DEMO_USERS.items():
            ensure_membership(project=project, user=users[name], role=role)
        _ensure_pairs(project)
        ensure_default_constitution()
    _judge_demo_tasks(project, users, random.Random(seed))
    return project
