"""Sending imported judgments to the human review queue, and what a reviewer's correction
of one reads.

An imported judgment (source "import": a dataset's label, brought in by
annotation/datasets/imports.py) is nobody's work in this project: quality figures and the
legacy exports leave it out, and a reviewer may check a sample of it as of AI labels
(annotation/judges/send_to_review.py). ``send_import_to_review`` flags a seeded share of
one import's judgments with ``needs_review``; the review queue
(annotation/review/selectors.py) lists them until a Review decides each; accepting,
rejecting and correcting are the ordinary review services (annotation/review/services.py).
As for AI labels, the flag is only ever set, never cleared, and the imported row is never
changed.

Imported judgments belong to no task, while the kinds' parsers
(annotation/labeling/kinds/) read a labeler's answer against an assignment of a task: the
responses it showed and the task's project and links. ``imported_review_view`` stands in
for that assignment with the responses the imported judgment names, so a correction is
parsed by the same code as a labeler's answer.
"""

import math
from dataclasses import dataclass, field

from annotation.judges.send_to_review import flag_for_review
from annotation.models import Judgment, Project, PromptImport, Response, TaskKind
from config.errors import ServiceError

DEFAULT_SHARE = 0.1


def _share(raw) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ServiceError("share must be a number above 0 and at most 1.")
    if not 0 < raw <= 1:
        raise ServiceError("share must be a number above 0 and at most 1.")
    return float(raw)


def _seed(raw) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ServiceError("seed must be a whole number.")
    return raw


def _import_of(project: Project, source_import) -> PromptImport:
    """The project's import (an instance or its id); another project's reads as unknown."""
    if isinstance(source_import, PromptImport):
        source_import = source_import.pk
    if isinstance(source_import, bool) or not isinstance(source_import, int):
        raise ServiceError("source_import must be the id of an import.")
    found = PromptImport.objects.filter(pk=source_import, project=project).first()
    if found is None:
        raise ServiceError(f"There is no import {source_import} in this project.")
    return found


def reviewable_imported_judgments(*, project: Project, source_import: PromptImport | None = None):
    """Imported judgments a reviewer could still decide on: current (not superseded) and
    with no Review yet; of one import, or of all."""
    rows = Judgment.objects.filter(
        project=project, source=Judgment.Source.IMPORT, superseded_by__isnull=True
    ).filter(reviews__isnull=True)
    if source_import is not None:
        rows = rows.filter(source_import=source_import)
    return rows


def send_import_to_review(
    *, project: Project, source_import, share: float = DEFAULT_SHARE, seed: int = 0
) -> int:
    """Flag a seeded random ``share`` (at least one when any is left) of the import's
    judgments not yet flagged nor reviewed; returns how many were newly flagged. The same
    seed over the same judgments picks the same ones; a second call adds another share of
    those left. Bad input (share outside (0, 1], a seed that is not a whole number, an
    import of no judgment of this project) raises ServiceError and flags nothing."""
    share = _share(share)
    seed = _seed(seed)
    batch = _import_of(project, source_import)
    waiting = reviewable_imported_judgments(project=project, source_import=batch)
    return flag_for_review(waiting.filter(needs_review=False), share=share, seed=seed)


def import_review_waiting(*, project: Project) -> int:
    """How many imported judgments were sent to review and are not decided yet."""
    return reviewable_imported_judgments(project=project).filter(needs_review=True).count()


def import_review_summary(*, project: Project) -> dict:
    """What the review page's form shows: the project's imports that brought judgments,
    each with how many, and how many imported judgments wait in the queue."""
    imports = list(
        PromptImport.objects.filter(project=project, judgments__isnull=False)
        .distinct()
        .order_by("-created_at", "-id")
    )
    return {
        "imports": imports,
        "imported_total": Judgment.objects.filter(
            project=project, source=Judgment.Source.IMPORT
        ).count(),
        "imported_waiting": import_review_waiting(project=project),
        "default_share": DEFAULT_SHARE,
    }


def parse_import_fill(data) -> dict:
    """The fill request's fields from a form or a JSON body: source_import (an id), share
    (a number or its text; blank for the default) and an optional seed."""
    if not hasattr(data, "get"):
        raise ServiceError("Send an object: {source_import, share, seed}.")
    fields = {
        "source_import": _whole(data.get("source_import"), name="source_import", default=None),
        "seed": _whole(data.get("seed"), name="seed", default=0),
    }
    share = data.get("share")
    if share is None or share == "":
        share = DEFAULT_SHARE
    elif isinstance(share, str):
        try:
            share = float(share)
        except ValueError:
            raise ServiceError("share must be a number.") from None
    return {**fields, "share": share}


def _whole(raw, *, name: str, default):
    if raw is None or raw == "":
        if default is None:
            raise ServiceError(f"Give {name}.")
        return default
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            raise ServiceError(f"{name} must be a whole number.") from None
    return raw  # the service checks the type


# --- a correction's stand-in assignment ------------------------------------------------


@dataclass
class _Link:
    response: Response

    @property
    def response_id(self) -> int:
        return self.response.pk


@dataclass
class _Links:
    """The few queryset calls the kinds' parsers make on ``task.links``, over a fixed list
    of responses in order."""

    links: list[_Link]

    def select_related(self, *names):
        return self

    def order_by(self, *names):
        return self

    def values_list(self, name: str, *, flat: bool = False):
        return [getattr(link, name) for link in self.links]

    def __iter__(self):
        return iter(self.links)


@dataclass
class _ImportedTask:
    project: Project
    links: _Links


@dataclass
class ImportedReviewView:
    """What an assignment gives a kind's parser and template: the responses shown (in the
    imported judgment's own order, which is the correction's order) and their "task"."""

    task: _ImportedTask
    shown_order: list[int] = field(default_factory=list)
    pk: str = "import"  # element ids in the kinds' templates


def imported_response_ids(judgment: Judgment) -> list[int]:
    """The responses an imported judgment is about, in its order: A then B, the ranked
    ones as shown, the rated one; none for a demonstration (it stores only its text)."""
    if judgment.kind == TaskKind.COMPARISON:
        return [judgment.response_a_id, judgment.response_b_id]
    if judgment.kind == TaskKind.RATING:
        return [judgment.rated_response_id]
    return [pk for pk in judgment.shown_order or judgment.ranking or [] if pk is not None]


def imported_review_view(*, judgment: Judgment) -> ImportedReviewView:
    """An unsaved stand-in for the assignment a correction of this imported judgment is
    parsed against (see the module docstring)."""
    ids = imported_response_ids(judgment)
    by_id = Response.objects.in_bulk(ids)
    links = [_Link(by_id[pk]) for pk in ids if pk in by_id]
    task = _ImportedTask(project=judgment.project, links=_Links(links))
    return ImportedReviewView(task=task, shown_order=[link.response_id for link in links])
