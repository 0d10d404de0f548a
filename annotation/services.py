"""Every write of the annotation app: projects, imports, tasks, assignment, judgments."""

import csv
import io
import json
import random
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from annotation.errors import Conflict, NotAssigned, ServiceError
from annotation.models import (
    Assignment,
    Comparison,
    ComparisonTask,
    Membership,
    Project,
    Prompt,
    PromptImport,
    Response,
)

MAX_PROMPT_CHARS = 20_000
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
    external_id = record.get("id", "")
    metadata = {k: v for k, v in record.items() if k not in (*PROMPT_TEXT_KEYS, "id")}
    return ParsedPrompt(text=text.strip(), external_id=str(external_id or ""), metadata=metadata)


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


@transaction.atomic
def prompts_import(*, project: Project, file_name: str, content: bytes, user=None) -> PromptImport:
    """Load every prompt of the file, or none: the first bad record aborts the import."""
    parsed = parse_prompt_file(file_name=file_name, content=content)
    batch = PromptImport.objects.create(
        project=project, file_name=file_name[:255], prompt_count=len(parsed), created_by=user
    )
    Prompt.objects.bulk_create(
        Prompt(
            project=project,
            text=p.text,
            external_id=p.external_id[:200],
            metadata=p.metadata,
            source_import=batch,
        )
        for p in parsed
    )
    return batch


# --- comparison tasks -----------------------------------------------------------------


def ensure_comparison_tasks(*, project: Project, model_version) -> int:
    """Pair each of the version's responses with the newest response of every other
    author of the same prompt; with no other author, pair the version's own samples.
    Returns how many new tasks were created. Safe to repeat."""
    created = 0
    own = Response.objects.filter(prompt__project=project, model_version=model_version)
    for response in own.select_related("prompt").order_by("prompt_id", "sample_index"):
        others = (
            Response.objects.filter(prompt=response.prompt)
            .exclude(model_version=model_version)
            .order_by("-created_at")
        )
        partners = {}
        for other in others:
            partners.setdefault(other.model_version_id or f"person:{other.author}", other)
        if not partners and response.sample_index > 0:
            sibling = own.filter(prompt=response.prompt, sample_index=0).first()
            partners = {"self": sibling} if sibling else {}
        for partner in partners.values():
            created += ensure_comparison_task(project=project, first=response, second=partner)
    return created


def ensure_comparison_task(*, project: Project, first: Response, second: Response) -> int:
    a, b = sorted([first, second], key=lambda r: r.pk)
    _, was_created = ComparisonTask.objects.get_or_create(
        response_a=a,
        response_b=b,
        defaults={"project": project, "prompt": a.prompt, "overlap_target": project.overlap_target},
    )
    return int(was_created)


# --- assignment -----------------------------------------------------------------------


def _expire_stale_assignments(*, project: Project) -> None:
    stale = Assignment.objects.select_for_update().filter(
        task__project=project, status=Assignment.Status.PENDING, expires_at__lt=timezone.now()
    )
    for assignment in stale:
        assignment.status = Assignment.Status.EXPIRED
        assignment.save(update_fields=["status"])
        ComparisonTask.objects.filter(pk=assignment.task_id).update(
            assigned_count=F("assigned_count") - 1
        )


def assignment_next(*, project: Project, labeler, rng: random.Random | None = None):
    """The labeler's current task in the project, or a new one; None when nothing is left.

    The task row is locked while its counter goes up, and the database refuses both a
    second assignment of a task to one labeler (unique constraint) and an assignment beyond
    the overlap target (check constraint), so concurrent labelers cannot over-assign.
    """
    with transaction.atomic():
        _expire_stale_assignments(project=project)
        current = (
            Assignment.objects.filter(
                task__project=project, labeler=labeler, status=Assignment.Status.PENDING
            )
            .order_by("assigned_at")
            .first()
        )
        if current:
            return current
    for _attempt in range(5):
        try:
            with transaction.atomic():
                task = _lock_open_task(project=project, labeler=labeler)
                if task is None:
                    return None
                return _assign(task=task, labeler=labeler, rng=rng or random.Random())
        except IntegrityError:
            continue  # another worker took the last slot or raced us; pick again
    return None


def _lock_open_task(*, project: Project, labeler):
    candidates = (
        ComparisonTask.objects.filter(project=project, assigned_count__lt=F("overlap_target"))
        .exclude(assignments__labeler=labeler)
        .order_by("assigned_count", "created_at", "id")
    )
    return candidates.select_for_update(skip_locked=True).first()


def _assign(*, task: ComparisonTask, labeler, rng: random.Random) -> Assignment:
    left, right = task.response_a, task.response_b
    if rng.random() < 0.5:
        left, right = right, left
    assignment = Assignment.objects.create(
        task=task,
        labeler=labeler,
        left_response=left,
        right_response=right,
        expires_at=timezone.now() + timedelta(minutes=settings.ASSIGNMENT_TTL_MINUTES),
    )
    ComparisonTask.objects.filter(pk=task.pk).update(assigned_count=F("assigned_count") + 1)
    return assignment


# --- judgments ------------------------------------------------------------------------

CHOICE_BY_SIDE = {"left", "right", "tie", "both_bad"}


def _parse_client_id(client_id) -> uuid.UUID:
    try:
        return uuid.UUID(str(client_id))
    except (TypeError, ValueError):
        raise ServiceError("client_id must be a UUID made by the client.") from None


def comparison_submit(
    *, labeler, assignment_id: int, side: str, client_id, time_spent_ms: int = 0
) -> Comparison:
    """Store the labeler's judgment of their assignment. `side` is what they clicked:
    left, right, tie or both_bad. Sending the same client_id twice stores one row."""
    client_uuid = _parse_client_id(client_id)
    if side not in CHOICE_BY_SIDE:
        raise ServiceError(f"choice must be one of {', '.join(sorted(CHOICE_BY_SIDE))}.")
    if not isinstance(time_spent_ms, int) or not 0 <= time_spent_ms <= 86_400_000:
        raise ServiceError("time_spent_ms must be a whole number of milliseconds within a day.")
    existing = Comparison.objects.filter(client_id=client_uuid).first()
    if existing:
        return _same_submission_or_conflict(existing, labeler=labeler)
    try:
        with transaction.atomic():
            return _store_comparison(
                labeler=labeler,
                assignment_id=assignment_id,
                side=side,
                client_id=client_uuid,
                time_spent_ms=time_spent_ms,
            )
    except IntegrityError:
        # A concurrent duplicate of this very submission won the race.
        existing = Comparison.objects.filter(client_id=client_uuid).first()
        if existing is None:
            raise
        return _same_submission_or_conflict(existing, labeler=labeler)


def _same_submission_or_conflict(existing: Comparison, *, labeler) -> Comparison:
    if existing.labeler_id != labeler.pk:
        raise Conflict("This client_id was already used for another judgment.")
    return existing


def _store_comparison(*, labeler, assignment_id, side, client_id, time_spent_ms) -> Comparison:
    assignment = (
        Assignment.objects.select_for_update()
        .select_related("task")
        .filter(pk=assignment_id, labeler=labeler)
        .first()
    )
    if assignment is None:
        raise NotAssigned("This task is not assigned to you.")
    if assignment.status == Assignment.Status.DONE:
        raise Conflict("You already judged this task.")
    if assignment.status == Assignment.Status.EXPIRED:
        raise Conflict("This assignment expired; take the next task from the queue.")
    task = assignment.task
    choice = _choice_for_side(side, assignment=assignment, task=task)
    comparison = Comparison.objects.create(
        client_id=client_id,
        project_id=task.project_id,
        task=task,
        prompt_id=task.prompt_id,
        response_a_id=task.response_a_id,
        response_b_id=task.response_b_id,
        choice=choice,
        shown_order=[assignment.left_response_id, assignment.right_response_id],
        labeler=labeler,
        time_spent_ms=time_spent_ms,
    )
    assignment.status = Assignment.Status.DONE
    assignment.save(update_fields=["status"])
    return comparison


def _choice_for_side(side: str, *, assignment: Assignment, task: ComparisonTask) -> str:
    if side in {"tie", "both_bad"}:
        return side
    picked = assignment.left_response_id if side == "left" else assignment.right_response_id
    return Comparison.Choice.A if picked == task.response_a_id else Comparison.Choice.B
