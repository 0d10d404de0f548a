"""Every write of the annotation app: projects, imports, tasks, assignment, judgments."""

import csv
import io
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from annotation.errors import Conflict, NotAssigned, ServiceError
from annotation.inputs import check_time_spent, parse_client_id
from annotation.models import (
    AiLabelPolicy,
    Assignment,
    CandidatePolicy,
    Judgment,
    Membership,
    Project,
    Prompt,
    PromptImport,
    Response,
    Task,
    TaskKind,
    TaskResponse,
)

MAX_PROMPT_CHARS = 20_000
MAX_EXTERNAL_ID_CHARS = 200
PROMPT_TEXT_KEYS = ("prompt", "text")


# --- projects -------------------------------------------------------------------------


def ensure_project(*, slug: str, name: str, description: str = "", overlap_target: int = 1):
    project, _ = Project.objects.get_or_create(
        slug=slug,
        defaults={"name": name, "description": description, "overlap_target": overlap_target},
    )
    return project


def ensure_membership(*, project: Project, user, role: str) -> Membership:
    membership, _ = Membership.objects.update_or_create(
        project=project, user=user, defaults={"role": role}
    )
    return membership


# --- prompt import --------------------------------------------------------------------


class PromptImportError(ServiceError):
    def __init__(self, message: str, *, line: int | None = None):
        super().__init__(f"Line {line}: {message}" if line else message)
        self.line = line


@dataclass(frozen=True)
class ParsedPrompt:
    text: str
    external_id: str
    metadata: dict
    line: int = 0


def _parsed_prompt(record: dict, line: int) -> ParsedPrompt:
    text = next((record[key] for key in PROMPT_TEXT_KEYS if key in record), None)
    if not isinstance(text, str) or not text.strip():
        raise PromptImportError(
            "each record needs a non-empty text field named 'prompt' or 'text'.", line=line
        )
    if len(text) > MAX_PROMPT_CHARS:
        raise PromptImportError(
            f"the prompt has {len(text)} characters; the limit is {MAX_PROMPT_CHARS}.", line=line
        )
    external_id = str(record.get("id", "") or "")
    if len(external_id) > MAX_EXTERNAL_ID_CHARS:
        # Cut short, two long ids could become one, and a re-import would match the wrong one.
        raise PromptImportError(
            f"the id has {len(external_id)} characters; the limit is {MAX_EXTERNAL_ID_CHARS}.",
            line=line,
        )
    metadata = {k: v for k, v in record.items() if k not in (*PROMPT_TEXT_KEYS, "id")}
    return ParsedPrompt(text=text.strip(), external_id=external_id, metadata=metadata, line=line)


def _parse_jsonl(text: str) -> list[ParsedPrompt]:
    prompts = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise PromptImportError(f"not valid JSON ({error.msg}).", line=line_number) from None
        if not isinstance(record, dict):
            raise PromptImportError("each line must be a JSON object.", line=line_number)
        prompts.append(_parsed_prompt(record, line_number))
    return prompts


def _parse_csv(text: str) -> list[ParsedPrompt]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or not set(PROMPT_TEXT_KEYS) & set(reader.fieldnames):
        raise PromptImportError("the CSV header needs a column named 'prompt' or 'text'.", line=1)
    prompts = []
    try:
        for record in reader:
            if None in record:
                raise PromptImportError(
                    "this row has more fields than the header.", line=reader.line_num
                )
            prompts.append(_parsed_prompt(record, reader.line_num))
    except csv.Error as error:
        raise PromptImportError(f"not valid CSV ({error}).", line=reader.line_num) from None
    return prompts


def parse_prompt_file(*, file_name: str, content: bytes) -> list[ParsedPrompt]:
    """Parse a whole JSONL or CSV file, or raise PromptImportError naming the first bad line."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = content[: error.start].count(b"\n") + 1
        raise PromptImportError("the file is not UTF-8 text.", line=line) from None
    lowered = file_name.lower()
    if lowered.endswith((".jsonl", ".json", ".ndjson")):
        prompts = _parse_jsonl(text)
    elif lowered.endswith(".csv"):
        prompts = _parse_csv(text)
    else:
        raise PromptImportError("the file name must end in .jsonl or .csv.")
    if not prompts:
        raise PromptImportError("the file holds no prompts.")
    return prompts


def _in_chunks(values: set, size: int = 500):
    """Sorted chunks, so that an ``__in`` lookup stays under SQLite's parameter limit."""
    ordered = sorted(values)
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


def _prompts_to_add(project: Project, parsed: list[ParsedPrompt]) -> tuple[list[ParsedPrompt], int]:
    """The file's prompts that the project lacks, each once, and how many of the file's
    prompts the project already holds.

    A row with an id is the prompt of that id: already there when the project has a prompt
    with that external id and the same text; the same id with other text (in the project
    or earlier in the file) refuses the file, naming the line. A row without an id is
    already there when a prompt of the labeling pool has exactly its text (stripped, as it
    is stored). Repeats within the file count once.
    """
    pool = Prompt.objects.labeling().filter(project=project)
    stored_texts_of_id: dict[str, set[str]] = {}
    for chunk in _in_chunks({p.external_id for p in parsed if p.external_id}):
        for external_id, text in pool.filter(external_id__in=chunk).values_list(
            "external_id", "text"
        ):
            stored_texts_of_id.setdefault(external_id, set()).add(text)
    stored_texts = set()
    for chunk in _in_chunks({p.text for p in parsed if not p.external_id}):
        stored_texts.update(pool.filter(text__in=chunk).values_list("text", flat=True))

    to_add, already_there = [], 0
    first_of_id: dict[str, ParsedPrompt] = {}
    texts_in_file: set[str] = set()
    for prompt in parsed:
        if prompt.external_id:
            earlier = first_of_id.get(prompt.external_id)
            if earlier is not None:
                if earlier.text != prompt.text:
                    raise PromptImportError(
                        f"id {prompt.external_id!r} is also on line {earlier.line}, with other "
                        "text; give each prompt its own id.",
                        line=prompt.line,
                    )
                continue
            first_of_id[prompt.external_id] = prompt
            texts_in_file.add(prompt.text)
            stored = stored_texts_of_id.get(prompt.external_id)
            if stored is None:
                to_add.append(prompt)
            elif prompt.text in stored:
                already_there += 1
            else:
                raise PromptImportError(
                    f"the project already has a prompt with id {prompt.external_id!r} and other "
                    "text; give this prompt a new id (or fix its text) and import the file again.",
                    line=prompt.line,
                )
        elif prompt.text not in texts_in_file:
            texts_in_file.add(prompt.text)
            if prompt.text in stored_texts:
                already_there += 1
            else:
                to_add.append(prompt)
    return to_add, already_there


def prompts_import(*, project: Project, file_name: str, content: bytes, user=None) -> PromptImport:
    """Load the file's new prompts, or nothing: a bad record refuses the whole file.

    Importing a file again adds nothing (see ``_prompts_to_add`` for what counts as the same
    prompt). The import is recorded even when every prompt was already there, so the
    history shows it: ``prompt_count`` new prompts, ``existing_count`` already there.
    """
    parsed = parse_prompt_file(file_name=file_name, content=content)
    with transaction.atomic():
        # Two imports of one file at once: the second waits here, then finds the first's
        # prompts (each statement reads what is committed, under read committed).
        Project.objects.select_for_update().filter(pk=project.pk).first()
        to_add, already_there = _prompts_to_add(project, parsed)
        batch = PromptImport.objects.create(
            project=project,
            file_name=file_name[:255],
            prompt_count=len(to_add),
            existing_count=already_there,
            created_by=user,
        )
        Prompt.objects.bulk_create(
            Prompt(
                project=project,
                text=p.text,
                external_id=p.external_id,
                metadata=p.metadata,
                source_import=batch,
            )
            for p in to_add
        )
    return batch


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
    from annotation.kinds import KINDS

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
    return (
        Assignment.objects.filter(
            task__project=project, labeler=labeler, status=Assignment.Status.PENDING
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
    tasks = Task.objects.filter(project=project, is_gold=gold, flagged=False).exclude(
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
    (checked by annotation.kinds). Sending the same client_id again, even while the first
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
            judgment = _store_judgment(
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


def _store_judgment(assignment: Assignment, *, data, client_id, time_spent_ms) -> Judgment:
    from annotation.kinds import KINDS

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


# --- project settings and task creation -------------------------------------------------

SETTINGS_FIELDS = (
    "candidate_policy",
    "overlap_target",
    "pending_limit",
    "gold_rate",
    "skip_flag_threshold",
    "criteria",
    "ai_labels",
    "ai_min_kappa",
    "ai_min_compared",
)
MAX_AI_MIN_COMPARED = 100_000
MAX_CRITERIA = 8


def _checked_criteria(criteria) -> list[str]:
    if not isinstance(criteria, list) or not 1 <= len(criteria) <= MAX_CRITERIA:
        raise ServiceError(f"Give 1 to {MAX_CRITERIA} criteria.")
    names = [str(name).strip().lower() for name in criteria]
    if any(not name.replace("_", "").isalnum() or len(name) > 30 for name in names):
        raise ServiceError("Criteria are short words: letters, digits and underscores.")
    if len(set(names)) != len(names):
        raise ServiceError("Criteria must differ from each other.")
    return names


def _check_ai_label_settings(fields: dict) -> None:
    if "ai_labels" in fields and fields["ai_labels"] not in AiLabelPolicy.values:
        raise ServiceError(f"ai_labels must be one of {', '.join(AiLabelPolicy.values)}.")
    if "ai_min_kappa" in fields:
        kappa = fields["ai_min_kappa"]
        if (
            isinstance(kappa, bool)
            or not isinstance(kappa, int | float)
            or not math.isfinite(kappa)
            or not -1 <= kappa <= 1
        ):
            raise ServiceError("ai_min_kappa must be a number between -1 and 1.")
    if "ai_min_compared" in fields:
        needed = fields["ai_min_compared"]
        if isinstance(needed, bool) or not isinstance(needed, int):
            raise ServiceError(
                f"ai_min_compared must be a whole number from 1 to {MAX_AI_MIN_COMPARED}."
            )
        if not 1 <= needed <= MAX_AI_MIN_COMPARED:
            raise ServiceError(
                f"ai_min_compared must be a whole number from 1 to {MAX_AI_MIN_COMPARED}."
            )


@transaction.atomic
def project_settings_update(*, project: Project, **fields) -> Project:
    """Change how the project's queue works. A new overlap target applies to new tasks and
    to existing ones that are not already assigned beyond it."""
    unknown = set(fields) - set(SETTINGS_FIELDS)
    if unknown:
        raise ServiceError(f"Unknown settings: {', '.join(sorted(unknown))}.")
    if "criteria" in fields:
        fields["criteria"] = _checked_criteria(fields["criteria"])
    if "gold_rate" in fields and not 0 <= float(fields["gold_rate"]) <= 1:
        raise ServiceError("gold_rate must be between 0 and 1.")
    if "candidate_policy" in fields and fields["candidate_policy"] not in CandidatePolicy.values:
        raise ServiceError(f"candidate_policy must be one of {', '.join(CandidatePolicy.values)}.")
    for name in ("overlap_target", "pending_limit", "skip_flag_threshold"):
        if name in fields and not 1 <= int(fields[name]) <= 100:
            raise ServiceError(f"{name} must be between 1 and 100.")
    _check_ai_label_settings(fields)
    for name, value in fields.items():
        setattr(project, name, value)
    project.save(update_fields=list(fields))
    if "overlap_target" in fields:
        Task.objects.filter(
            project=project, is_gold=False, assigned_count__lte=project.overlap_target
        ).update(overlap_target=project.overlap_target)
    return project


def tasks_create(*, project: Project, kind: str, options: dict, priority: int = 0):
    """Create a batch of tasks of one kind from the project's prompts and responses.
    Returns the kind's ``TaskBatch``: the new tasks and why other prompts or responses got
    none (``batch.message`` says both)."""
    from annotation.kinds import KINDS

    spec = KINDS.get(kind)
    if spec is None or spec.create_tasks is None:
        creatable = sorted(k for k, s in KINDS.items() if s.create_tasks)
        raise ServiceError(f"kind must be one of {', '.join(creatable)}.")
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
