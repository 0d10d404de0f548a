"""Demonstrations: the labeler writes the ideal assistant reply, either from scratch (a
"write" task: no response; `task.context` may hold earlier turns of a conversation whose
last user turn is the prompt) or by editing a model's reply (an "edit" task: one response,
the editor starts with its text). These rows are the supervised fine-tuning data of the
InstructGPT recipe (Ouyang et al. 2022, step 1), exported by `sft_rows`.

Stored on the judgment: `text` (the ideal reply, stripped, newlines normalised to \\n) and,
for edits, `edited_from` (the response) and `edit_diff`, a unified line diff from the
model's reply to the edited one. Submitting a model's reply unchanged is allowed (it says
"this reply is already ideal", which is worth keeping) and stores an empty `edit_diff`.

Gold items carry {"text": ..., "min_similarity": 0.8 (optional)}: free text cannot be
auto-scored exactly, so a demonstration matches when the word-level similarity of the two
normalised texts (case-folded, whitespace collapsed; difflib's ratio, 0 to 1) reaches the
threshold. This catches careless or empty work on a gold item whose answer is short and
well defined (e.g. "fix the wrong date in this reply"); open-ended demonstrations are
reviewed by people, not scored.
"""

import difflib
import hashlib
import json
from collections.abc import Iterator, Mapping

from django.db import transaction

from annotation.labeling.kinds import NO_PROMPTS, KindSpec, TaskBatch, counted, value
from annotation.labeling.services import ensure_task
from annotation.models import Judgment, Project, Prompt, Response, Task, TaskKind
from config.errors import ServiceError
from models_registry import selectors as registry_selectors

MAX_TEXT = 20_000
MAX_TURN_CHARS = 20_000
DEFAULT_GOLD_SIMILARITY = 0.8
ROLES = ("system", "user", "assistant")
MODES = ("edit", "write")
# Prompt.metadata key holding the earlier turns of a conversation (same shape as
# Task.context); a prompt import line may carry it too.
CONTEXT_KEY = "context"


# --- submission -----------------------------------------------------------------------


def normalised_newlines(text: str) -> str:
    """Browsers submit textarea lines ending in CRLF; store and compare with LF only."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _submitted_text(data: Mapping) -> str:
    raw = value(data, "text")
    if raw is None:
        raise ServiceError("text is required: write the ideal reply.")
    if not isinstance(raw, str):
        raise ServiceError("text must be a string.")
    text = normalised_newlines(raw).strip()
    if not text:
        raise ServiceError("text is empty: write the ideal reply.")
    if len(text) > MAX_TEXT:
        raise ServiceError(f"The reply has {len(text)} characters; keep it to {MAX_TEXT} at most.")
    return text


def edit_diff(*, original: str, edited: str) -> str:
    """Unified line diff from the model's reply to the edited one; "" when they match."""
    before = normalised_newlines(original).strip().splitlines()
    after = edited.splitlines()
    lines = difflib.unified_diff(before, after, "model", "edited", lineterm="")
    return "\n".join(lines)


def parse(data, *, assignment) -> dict:
    text = _submitted_text(data)
    links = list(assignment.task.links.select_related("response").order_by("position"))
    if not links:
        return {"text": text}
    original = links[0].response
    return {
        "text": text,
        "edited_from_id": original.pk,
        "edit_diff": edit_diff(original=original.text, edited=text),
    }


# --- gold -----------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return normalised_newlines(text or "").casefold().split()


def text_similarity(first: str, second: str) -> float:
    """Word-level similarity in [0, 1] (difflib's ratio on case-folded words)."""
    a, b = _words(first), _words(second)
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def matches_gold(judgment: Judgment, gold_answer: dict) -> bool:
    """Gold answer: {"text": ..., "min_similarity": 0.8}; see the module docstring."""
    expected = (gold_answer or {}).get("text")
    if not isinstance(expected, str) or not expected.strip():
        return False
    try:
        threshold = float(gold_answer.get("min_similarity", DEFAULT_GOLD_SIMILARITY))
    except (TypeError, ValueError):
        threshold = DEFAULT_GOLD_SIMILARITY
    return text_similarity(judgment.text, expected) >= threshold


# --- conversations --------------------------------------------------------------------


def checked_turns(turns, *, what: str) -> list[dict]:
    """Turns as [{"role", "content"}, ...] with known roles and non-empty text, or a
    ServiceError that starts with `what`."""
    if not isinstance(turns, list):
        raise ServiceError(f"{what} must be a list of {{role, content}} turns.")
    checked = []
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict) or set(turn) - {"role", "content"}:
            raise ServiceError(f"{what}: turn {number} must be an object with role and content.")
        role, content = turn.get("role"), turn.get("content")
        if role not in ROLES:
            raise ServiceError(f"{what}: turn {number} has role {role!r}; use {', '.join(ROLES)}.")
        if not isinstance(content, str) or not content.strip():
            raise ServiceError(f"{what}: turn {number} needs non-empty text content.")
        if len(content) > MAX_TURN_CHARS:
            raise ServiceError(
                f"{what}: turn {number} has {len(content)} characters; "
                f"the limit is {MAX_TURN_CHARS}."
            )
        checked.append({"role": role, "content": normalised_newlines(content).strip()})
    return checked


def _prompt_context(prompt: Prompt) -> list[dict]:
    turns = (prompt.metadata or {}).get(CONTEXT_KEY)
    if turns is None:
        return []
    return checked_turns(turns, what=f"Prompt {prompt.pk}'s {CONTEXT_KEY}")


@transaction.atomic
def demonstration_task_for_conversation(*, project: Project, messages: list[dict]) -> Task:
    """A write task for the next assistant turn of a conversation: every turn but the last
    goes to the task's context, the last (a user turn) becomes the prompt. The same
    conversation twice gives the same task."""
    turns = checked_turns(messages, what="messages")
    if not turns:
        raise ServiceError("messages must hold at least one user turn.")
    if turns[-1]["role"] != "user":
        raise ServiceError("The conversation must end with a user turn: the reply answers it.")
    *context, last = turns
    fingerprint = hashlib.sha256(json.dumps(turns, sort_keys=True).encode()).hexdigest()
    prompt = Prompt.objects.filter(
        project=project, metadata__conversation_sha256=fingerprint
    ).first() or Prompt.objects.create(
        project=project,
        text=last["content"],
        metadata={CONTEXT_KEY: context, "conversation_sha256": fingerprint},
    )
    task, _ = _ensure_demonstration_task(project=project, prompt=prompt, context=context)
    return task


def _ensure_demonstration_task(*, project, prompt, response=None, context) -> tuple[Task, bool]:
    return ensure_task(
        project=project,
        kind=TaskKind.DEMONSTRATION,
        prompt=prompt,
        responses=[response] if response else [],
        context=context,
    )


# --- task creation --------------------------------------------------------------------


def _model_version_id(raw) -> int:
    if isinstance(raw, bool):
        raw = None
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise ServiceError("Edit mode needs model_version: the id of a model version.") from None


@transaction.atomic
def create_tasks(*, project: Project, options: Mapping) -> TaskBatch:
    """{"mode": "write"}: one write task per prompt of the project (a prompt whose metadata
    holds `context` turns gets a multi-turn task). {"mode": "edit", "model_version": id}: one
    edit task per response of that version in the project. Returns the new tasks and why
    other prompts or responses got none; safe to repeat. Bad options, or a prompt with a
    malformed context, create nothing."""
    if not isinstance(options, Mapping):
        raise ServiceError("Options must be an object with a mode.")
    mode = options.get("mode")
    if mode not in MODES:
        raise ServiceError("mode must be write (reply from scratch) or edit (improve a model's).")
    if mode == "edit":
        version_id = _model_version_id(options.get("model_version"))
        version = registry_selectors.visible_to(project.workspace).filter(pk=version_id).first()
        if version is None:
            raise ServiceError(f"There is no model version {version_id}.")
    if not project.prompts.labeling().alive().exists():
        return TaskBatch(TaskKind.DEMONSTRATION, 0, (NO_PROMPTS,))
    created = already = 0
    if mode == "write":
        for prompt in project.prompts.labeling().alive().order_by("id").iterator(chunk_size=500):
            _, new = _ensure_demonstration_task(
                project=project, prompt=prompt, context=_prompt_context(prompt)
            )
            created += int(new)
            already += int(not new)
        reasons = (
            (f"{counted(already, 'prompt already has', 'prompts already have')} a write task",)
            if already
            else ()
        )
        return TaskBatch(TaskKind.DEMONSTRATION, created, reasons)
    responses = (
        Response.objects.labeling()
        .alive()
        .filter(prompt__project=project, model_version=version)
        .select_related("prompt")
        .order_by("prompt_id", "sample_index")
    )
    for response in responses.iterator(chunk_size=500):
        _, new = _ensure_demonstration_task(
            project=project,
            prompt=response.prompt,
            response=response,
            context=_prompt_context(response.prompt),
        )
        created += int(new)
        already += int(not new)
    if created + already == 0:
        reason = f"{version.name} has no answers in this project yet; generate some on Models"
        return TaskBatch(TaskKind.DEMONSTRATION, 0, (reason,))
    answers = counted(
        already, f"answer of {version.name} already has", f"answers of {version.name} already have"
    )
    reasons = (f"{answers} an edit task",) if already else ()
    return TaskBatch(TaskKind.DEMONSTRATION, created, reasons)


# --- export ---------------------------------------------------------------------------


def sft_rows(project: Project) -> Iterator[dict]:
    """TRL's conversational SFT form, {"messages": [...earlier turns, user, assistant]}:
    SFTTrainer reads these rows unchanged. Only current demonstrations (a corrected one
    appears in its newest form)."""
    demonstrations = (
        Judgment.objects.filter(
            project=project, kind=TaskKind.DEMONSTRATION, superseded_by__isnull=True
        )
        .exclude(text="")
        .exclude(reviews__decision="rejected")
        .select_related("prompt")
        .order_by("created_at", "id")
    )
    for demonstration in demonstrations.iterator(chunk_size=500):
        yield {
            "messages": [
                *demonstration.context,
                {"role": "user", "content": demonstration.prompt.text},
                {"role": "assistant", "content": demonstration.text},
            ]
        }


SPEC = KindSpec(
    kind=TaskKind.DEMONSTRATION,
    template="annotation/labeling/kinds/_demonstration.html",
    parse=parse,
    matches_gold=matches_gold,
    min_responses=0,
    max_responses=1,
    create_tasks=create_tasks,
    create_help=(
        'Demonstrations. {"mode": "write"}: labelers write the ideal reply to every prompt '
        '(a prompt with "context" turns in its metadata becomes a multi-turn task). '
        '{"mode": "edit", "model_version": <id>}: labelers edit each reply of that model '
        "version into an ideal one."
    ),
)
