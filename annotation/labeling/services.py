"""Every write of the annotation app not yet in a feature package: tasks, assignment,
judgments. Projects and memberships are in annotation/projects/, prompt imports in
annotation/prompts/."""

import random
from collections.abc import Mapping, Sequence
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from annotation.labeling.inputs import check_time_spent, parse_client_id
from annotation.models import (
    Assignment,
    Judgment,
    Project,
    Prompt,
    Response,
    Task,
    TaskKind,
    TaskResponse,
)
from annotation.projects.selectors import latest_guidelines
from annotation.prompts.alive import alive_assignments, alive_tasks
from config.errors import Conflict, NotAssigned, ServiceError

# --- tasks ----------------------------------------------------------------------------


def _dedupe_key(kind: str, prompt: Prompt, responses: Sequence[Response], context) -> str:
    if kind == TaskKind.COMPARISON:
        ids = sorted(r.pk for r in responses)  # A-vs-B is the same work as B-vs-A
    else:
        ids = [r.pk for r in responses]
    parts = [kind, f"p{prompt.pk}", *map(str, ids)]
    if context:
        parts.append(f"c{len(context)}")
    return ":".join(parts)[:200]


def ensure_task(
    *,
    project: Project,
    kind: str,
    prompt: Prompt,
    responses: Sequence[Response] = (),
    context: list | None = None,
    priority: int = 0,
    gold_answer=None,
) -> tuple[Task, bool]:
    """The task for this exact work, created if new. Gold tasks carry `gold_answer`."""
    from annotation.labeling.kinds import KINDS

    KINDS[kind].check_responses(len(responses))
    with transaction.atomic():
        task, created = Task.objects.get_or_create(
            project=project,
            dedupe_key=_dedupe_key(kind, prompt, responses, context),
            defaults={
                "kind": kind,
                "prompt": prompt,
                "context": context or [],
                "overlap_target": project.overlap_target,
                "priority": priority,
                "is_gold": gold_answer is not None,
                "gold_answer": gold_answer,
            },
        )
        if created:
            TaskResponse.objects.bulk_create(
                TaskResponse(task=task, response=response, position=position)
                for position, response in enumerate(responses)
            )
    return task, created


def ensure_comparison_task(
    *, project: Project, first: Response, second: Response, priority: int = 0
) -> int:
    a, b = sorted([first, second], key=lambda r: r.pk)
    _, created = ensure_task(
        project=project,
        kind=TaskKind.COMPARISON,
        prompt=a.prompt,
        responses=[a, b],
        priority=priority,
    )
    return int(created)


# --- assignment -----------------------------------------------------------------------


def _release_slot(task_id: int) -> None:
    Task.objects.filter(pk=task_id, is_gold=False).update(assigned_count=F("assigned_count") - 1)


def _has_stale_assignments(project: Project) -> bool:
    return Assignment.objects.filter(
        task__project=project, status=Assignment.Status.PENDING, expires_at__lt=timezone.now()
    ).exists()


def _expire_stale_assignments(*, project: Project) -> None:
    stale = Assignment.objects.select_for_update(skip_locked=True).filter(
        task__project=project, status=Assignment.Status.PENDING, expires_at__lt=timezone.now()
    )
    for assignment in stale:
        assignment.status = Assignment.Status.EXPIRED
        assignment.save(update_fields=["status"])
        _release_slot(assignment.task_id)


def _pending(project: Project, labeler):
    # A held task whose prompt or a response was deleted is not shown (it expires unused).
    return (
        alive_assignments(
            Assignment.objects.filter(
                task__project=project, labeler=labeler, status=Assignment.Status.PENDING
            )
        )
        .select_related("task__prompt")
        .order_by("assigned_at", "id")
    )


def assignment_next(
    *, project: Project, labeler, rng: random.Random | None = None, after: int | None = None
) -> Assignment | None:
    """The labeler's oldest unjudged task in the project, or a newly assigned one; None when
    nothing is left or the labeler holds `pending_limit` tasks. With `after`, the task to
    show after that assignment (the client prefetches it while the labeler works).

    The task row is locked while its counter goes up, and the database refuses both a
    second assignment of a task to one labeler (unique constraint) and an assignment beyond
    the overlap target (check constraint), so concurrent labelers cannot over-assign.
    """
    rng = rng or random.Random()
    if _has_stale_assignments(project):
        with transaction.atomic():
            _expire_stale_assignments(project=project)
    held = list(_pending(project, labeler))
    waiting = [a for a in held if a.pk != after]
    if waiting:
        return waiting[0]
    if len(held) >= max(project.pending_limit, 1):
        return None
    for _attempt in range(5):
        try:
            with transaction.atomic():
                task = _lock_open_task(project=project, labeler=labeler, rng=rng)
                if task is None:
                    return None
                return _assign(task=task, labeler=labeler, rng=rng)
        except IntegrityError:
            continue  # another labeler took the last slot or raced us; pick again
    return None


def _open_tasks(project: Project, labeler, *, gold: bool):
    tasks = alive_tasks(Task.objects.filter(project=project, is_gold=gold, flagged=False)).exclude(
        assignments__labeler=labeler
    )
    if not gold:
        tasks = tasks.filter(assigned_count__lt=F("overlap_target"))
    return tasks.order_by("-priority", "assigned_count", "id")


def _lock_open_task(*, project: Project, labeler, rng: random.Random) -> Task | None:
    wants_gold = project.gold_rate > 0 and rng.random() < project.gold_rate
    order = (True, False) if wants_gold else (False,)
    for gold in order:
        task = _open_tasks(project, labeler, gold=gold).select_for_update(skip_locked=True).first()
        if task is not None:
            return task
    return None


def _assign(*, task: Task, labeler, rng: random.Random) -> Assignment:
    order = list(task.links.order_by("position").values_list("response_id", flat=True))
    rng.shuffle(order)
    assignment = Assignment.objects.create(
        task=task,
        labeler=labeler,
        shown_order=order,
        expires_at=timezone.now() + timedelta(minutes=settings.ASSIGNMENT_TTL_MINUTES),
    )
    if not task.is_gold:
        Task.objects.filter(pk=task.pk).update(assigned_count=F("assigned_count") + 1)
    return assignment


MAX_SKIP_REASON = 200


def assignment_skip(*, project: Project, labeler, assignment_id, reason: str) -> Assignment:
    """Give a task back with a reason. It returns to the pool for others; after
    `skip_flag_threshold` skips it is flagged for admins and no longer handed out."""
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("Say why you skip this task.")
    if len(reason) > MAX_SKIP_REASON:
        raise ServiceError(f"Keep the reason under {MAX_SKIP_REASON} characters.")
    with transaction.atomic():
        assignment = _locked_assignment(
            project=project, labeler=labeler, assignment_id=assignment_id
        )
        assignment.status = Assignment.Status.SKIPPED
        assignment.skip_reason = reason
        assignment.save(update_fields=["status", "skip_reason"])
        task = Task.objects.select_for_update().get(pk=assignment.task_id)
        task.skip_count = F("skip_count") + 1
        task.save(update_fields=["skip_count"])
        task.refresh_from_db(fields=["skip_count"])
        if task.skip_count >= task.project.skip_flag_threshold:
            Task.objects.filter(pk=task.pk).update(flagged=True)
        _release_slot(task.pk)
    return assignment


def _locked_assignment(*, project: Project, labeler, assignment_id) -> Assignment:
    """The labeler's live assignment in this project, locked; refusals say why."""
    if not isinstance(assignment_id, int):
        raise NotAssigned("This task is not assigned to you.")
    assignment = (
        # Lock the assignment row only: joined task and project rows stay free, so
        # judgments of different tasks in one project do not queue behind each other.
        Assignment.objects.select_for_update(of=("self",))
        .select_related("task", "task__project")
        .filter(pk=assignment_id, labeler=labeler, task__project=project)
        .first()
    )
    if assignment is None:
        raise NotAssigned("This task is not assigned to you.")
    if assignment.status == Assignment.Status.DONE:
        raise Conflict("You already judged this task.")
    if assignment.status == Assignment.Status.SKIPPED:
        raise Conflict("You skipped this task.")
    expired = assignment.expires_at < timezone.now()
    if assignment.status == Assignment.Status.EXPIRED or expired:
        raise Conflict("This assignment expired; take the next task from the queue.")
    return assignment


# --- judgments ------------------------------------------------------------------------


def judgment_submit(**arguments) -> Judgment:
    """Store the labeler's judgment of their assignment; see judgment_record."""
    judgment, _created = judgment_record(**arguments)
    return judgment


def judgment_record(
    *, project: Project, labeler, assignment_id, data: Mapping, client_id, time_spent_ms: int = 0
) -> tuple[Judgment, bool]:
    """Store the labeler's judgment of their assignment; `data` holds the kind's own fields
    (checked by annotation.labeling.kinds). Sending the same client_id again, even while the first
    send is still being stored, returns the stored judgment: (judgment, created)."""
    client_uuid = parse_client_id(client_id)
    check_time_spent(time_spent_ms)
    existing = Judgment.objects.filter(client_id=client_uuid).first()
    if existing:
        return _same_submission_or_conflict(existing, labeler=labeler), False
    try:
        with transaction.atomic():
            assignment = _locked_assignment(
                project=project, labeler=labeler, assignment_id=assignment_id
            )
            judgment = store_judgment(
                assignment, data=data, client_id=client_uuid, time_spent_ms=time_spent_ms
            )
            Assignment.objects.filter(pk=assignment.pk).update(status=Assignment.Status.DONE)
            return judgment, True
    except (IntegrityError, Conflict):
        # A concurrent send of this very judgment won the race (the unique client_id, or
        # the assignment it already marked done): answer with what it stored.
        existing = Judgment.objects.filter(client_id=client_uuid).first()
        if existing is None:
            raise
        return _same_submission_or_conflict(existing, labeler=labeler), False


def store_judgment(
    assignment: Assignment, *, data, client_id, time_spent_ms, supersedes: Judgment | None = None
) -> Judgment:
    """The labeler's answer to the task as the assignment shows it, parsed by its kind, under
    the latest guidelines; a change of an earlier answer names it in ``supersedes``."""
    from annotation.labeling.kinds import KINDS

    task = assignment.task
    fields = KINDS[task.kind].parse(data, assignment=assignment)
    return Judgment.objects.create(
        client_id=client_id,
        kind=task.kind,
        project_id=task.project_id,
        task=task,
        prompt_id=task.prompt_id,
        shown_order=assignment.shown_order,
        context=task.context,
        labeler_id=assignment.labeler_id,
        time_spent_ms=time_spent_ms,
        guidelines=latest_guidelines(task.project),
        supersedes=supersedes,
        **fields,
    )


def _same_submission_or_conflict(existing: Judgment, *, labeler) -> Judgment:
    if existing.labeler_id != labeler.pk:
        raise Conflict("This client_id was already used for another judgment.")
    return existing


def comparison_submit(
    *,
    project: Project,
    labeler,
    assignment_id,
    side: str,
    client_id,
    time_spent_ms: int = 0,
    **extra,
) -> Judgment:
    """A pairwise vote: `side` is what the labeler clicked (left, right, tie, both_bad)."""
    return judgment_submit(
        project=project,
        labeler=labeler,
        assignment_id=assignment_id,
        data={"choice": side, **extra},
        client_id=client_id,
        time_spent_ms=time_spent_ms,
    )


# --- task creation ------------------------------------------------------------------


def tasks_create(*, project: Project, kind: str, options: dict, priority: int = 0):
    """Create a batch of tasks of one kind from the project's prompts and responses.
    Returns the kind's ``TaskBatch``: the new tasks and why other prompts or responses got
    none (``batch.message`` says both)."""
    from annotation.labeling.kinds import KINDS

    spec = KINDS.get(kind)
    if spec is None or spec.create_tasks is None:
        creatable = sorted(k for k, s in KINDS.items() if s.create_tasks)
        raise ServiceError(f"kind must be one of {', '.join(creatable)}.")
    if not project.uses(kind):
        raise ServiceError(
            f"This project does not use {kind} tasks: an admin turns them on under "
            "Kinds of task on Tasks."
        )
    if not -100 <= priority <= 100:
        raise ServiceError("priority must be between -100 and 100.")
    with transaction.atomic():
        started = timezone.now()
        batch = spec.create_tasks(project=project, options=options)
        if priority:
            Task.objects.filter(project=project, kind=kind, created_at__gte=started).update(
                priority=priority
            )
    return batch
