"""Small builders for test data; they go through services where a service exists."""

import itertools
import json
import uuid
from datetime import datetime

from django.contrib.auth import get_user_model
from django.utils import timezone
from django.utils.text import slugify

from annotation.labeling.services import ensure_comparison_task, ensure_task
from annotation.models import Judgment, Project, Prompt, Response, Role, Task, TaskKind
from annotation.projects.services import ensure_membership, ensure_project
from models_registry.models import ModelVersion

_counter = itertools.count(1)
PASSWORD = "correct-horse-battery"


def make_user(username: str | None = None, **extra):
    username = username or f"user{next(_counter)}"
    user = get_user_model().objects.create_user(username=username, password=PASSWORD, **extra)
    return user


def make_project(slug: str | None = None, *, overlap_target: int = 1) -> Project:
    slug = slug or f"project-{next(_counter)}"
    return ensure_project(slug=slug, name=slug.title(), overlap_target=overlap_target)


def make_member(project: Project, role: str, username: str | None = None):
    user = make_user(username)
    ensure_membership(project=project, user=user, role=role)
    return user


def make_version(
    name: str | None = None,
    *,
    path: str = "/nonexistent",
    state: str = ModelVersion.State.SERVING,
    **fields,
) -> ModelVersion:
    """A registry row for tests that never load the weights (serving, as a base model is)."""
    name = name or f"model-{next(_counter)}"
    return ModelVersion.objects.create(
        name=name,
        model_id=fields.pop("model_id", slugify(name)),
        method=fields.pop("method", ModelVersion.Method.BASE),
        base_path=path,
        state=state,
        promoted_at=timezone.now() if state == ModelVersion.State.SERVING else None,
        **fields,
    )


def make_prompt(project: Project, text: str | None = None) -> Prompt:
    return Prompt.objects.create(project=project, text=text or f"Question {next(_counter)}?")


def make_task(
    project: Project, *, prompt: Prompt | None = None, texts=("Answer one", "Answer two")
):
    prompt = prompt or make_prompt(project)
    first = Response.objects.create(prompt=prompt, author="test: first", text=texts[0])
    second = Response.objects.create(prompt=prompt, author="test: second", text=texts[1])
    ensure_comparison_task(project=project, first=first, second=second)
    return project.tasks.get(links__response=first)


def make_kind_task(project: Project, kind: str, *, responses: int = 2, gold_answer=None) -> Task:
    """A task of any kind over `responses` new responses to a new prompt."""
    prompt = make_prompt(project)
    made = [
        Response.objects.create(prompt=prompt, author=f"test: {i}", text=f"Answer {i}")
        for i in range(responses)
    ]
    task, _ = ensure_task(
        project=project, kind=kind, prompt=prompt, responses=made, gold_answer=gold_answer
    )
    return task


def judge(task: Task, labeler, *, ms: int = 1000, at: datetime | None = None, **fields):
    """A stored human judgment of the task (comparison choice "a" unless given), written
    directly rather than through the queue so a test can set any field and the time."""
    order = list(task.links.order_by("position").values_list("response_id", flat=True))
    if task.kind == TaskKind.COMPARISON:
        fields = {"response_a_id": order[0], "response_b_id": order[1], "choice": "a", **fields}
    if task.kind == TaskKind.RATING:
        fields = {"rated_response_id": order[0], **fields}
    judgment = Judgment.objects.create(
        kind=task.kind,
        project=task.project,
        task=task,
        prompt=task.prompt,
        shown_order=order,
        labeler=labeler,
        time_spent_ms=ms,
        **fields,
    )
    if at is not None:
        Judgment.objects.filter(pk=judgment.pk).update(created_at=at)
        judgment.refresh_from_db()
    return judgment


CALLER_ROLES = {"labeler": Role.LABELER, "researcher": Role.RESEARCHER, "admin": Role.ADMIN}


def make_caller(who: str, project):
    """The user a permission test signs in as (None: anonymous)."""
    if who == "anonymous":
        return None
    if who == "outsider":
        return make_user("outsider")
    return make_member(project, CALLER_ROLES[who], f"caller-{who}")


def jsonl_bytes(records) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in records).encode()


ROLES = (Role.LABELER, Role.RESEARCHER, Role.ADMIN)


def judge_all(project: Project, labeler, *, prefer=None, strength: int | None = None) -> int:
    """Work the labeler's whole queue of comparisons. ``prefer(text)`` says whether a
    reply should win (the left one wins when neither or both do); ``strength`` 1-4."""
    from annotation.labeling.services import assignment_next, comparison_submit

    judged = 0
    while (assignment := assignment_next(project=project, labeler=labeler)) is not None:
        left, right = (Response.objects.get(pk=pk).text for pk in assignment.shown_order)
        side = "right" if prefer and prefer(right) and not prefer(left) else "left"
        comparison_submit(
            project=project,
            labeler=labeler,
            assignment_id=assignment.pk,
            side=side if strength is None else f"{side}-{strength}",
            client_id=uuid.uuid4(),
        )
        judged += 1
    return judged


def make_preferences(project: Project, labeler, count: int, *, strength: int | None = None):
    """``count`` judged comparisons with a learnable signal: the short "Yes" answer always
    wins over the long refusal, wherever it was shown."""
    for number in range(count):
        make_task(project, texts=(f"Yes {number}.", f"No, never, not at all {number}."))
    judge_all(project, labeler, prefer=lambda text: text.startswith("Yes"), strength=strength)


def make_trained_version(parent: ModelVersion, *, method: str, project) -> ModelVersion:
    """A version registered by a training run on ``parent``, named as training names them
    ("<parent> / DPO run 7"), reusing the parent's weights (nothing is trained)."""
    from models_registry.services import model_version_register
    from training.models import TrainingRun

    run = TrainingRun.objects.create(project=project, method=method, base_version=parent)
    return model_version_register(
        name=f"{parent.name} / {method.upper()} run {run.pk}",
        method=method,
        base_path=parent.base_path,
        parent=parent,
        training_run=run,
    )


# A version's inference-server endpoint, as the page, the API and the command set it.
GOOD_ENDPOINT = {"url": "http://gpu-host:8000/v1", "served_model_name": "tiny-lora", "api_key": "k"}


def endpoint_fields(version) -> tuple[str, str, str]:
    """The endpoint a version holds in the database now: (url, served name, key)."""
    from models_registry.models import ModelVersion

    stored = ModelVersion.objects.get(pk=version.pk)
    return (stored.serving_url, stored.served_model_name, stored.serving_api_key)


def make_api_key(user, workspace=None, name: str = "test key") -> str:
    """A new API key of ``user`` (the secret), scoped to ``workspace``, by default the
    workspace of the user's first project."""
    from models_registry.services import api_key_create

    if workspace is None:
        workspace = Project.objects.filter(memberships__user=user).order_by("pk").first().workspace
    return api_key_create(user=user, workspace=workspace, name=name)[1]


def make_outsider_key(project: Project, username: str = "outsider") -> str:
    """A key whose user has since left every project (a user in none cannot make one)."""
    user = make_member(project, Role.LABELER, username)
    key = make_api_key(user, project.workspace)
    user.memberships.all().delete()
    return key
