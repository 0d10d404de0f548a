"""Writes of candidates: replies paired into comparison tasks (the rules are in
selectors.py)."""

from annotation.candidates.selectors import Score, pending_comparison_pairs
from annotation.labeling.services import ensure_comparison_task
from annotation.models import Project


def ensure_comparison_tasks(*, project: Project, model_version, score: Score | None = None) -> int:
    """One comparison task per reply of ``model_version`` in the project's labeling pool,
    its partner chosen by the project's candidate policy (``score``: the latest reward
    model, needed by the active policy). Returns how many tasks are new; safe to repeat
    (a reply already in a comparison task is left alone)."""
    created = 0
    pairs = pending_comparison_pairs(project=project, model_version=model_version, score=score)
    for reply, partner, priority in pairs:
        created += ensure_comparison_task(
            project=project, first=reply, second=partner, priority=priority
        )
    return created
