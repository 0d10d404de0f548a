"""Ranking: order k responses (3 to 9) from best to worst, or say that all of them are bad.

A ranking is stored as response ids, best first (`Judgment.ranking`); it must hold exactly
the responses the labeler was shown, each once. It comes either as the list `ranking` (the
API; repeated form fields work too) or, from the page, as one `rank_<response id>` field per
response holding its place 1..k (the selects that make the page work without JavaScript).

`all_bad` ("all are bad") may come with a complete ranking (from the page it always does:
the least bad first is still worth keeping) or with none. Either way an all-bad judgment
yields no preference pairs: saying which of several bad answers is less bad is not a
signal to train towards (InstructGPT, Ouyang et al. 2022, drops such comparisons too).
"""

from collections.abc import Sequence
from itertools import combinations

from django.db.models import Count, Max, Q

from annotation.labeling.kinds import NO_PROMPTS, KindSpec, TaskBatch, counted, value, values
from annotation.models import Judgment, Prompt, TaskKind
from config.errors import ServiceError

MIN_K = 3
MAX_K = 9
DEFAULT_K = 4
MAX_RATIONALE = 5000
# A judgment agrees with a gold ranking when Kendall's tau is at least this: at most a
# quarter of the pairs flipped, e.g. one swap of neighbours among 4 responses (tau 0.67),
# but not two (tau 0.33). Checking only the top choice would waste most of a ranking.
GOLD_MIN_TAU = 0.5
TRUE_WORDS = {"true", "1", "on", "yes"}
FALSE_WORDS = {"false", "0", "off", "no", ""}


def _flag(raw, *, name: str) -> bool:
    if raw is None or isinstance(raw, bool):
        return bool(raw)
    if isinstance(raw, str) and raw.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return raw.strip().lower() in TRUE_WORDS
    raise ServiceError(f"{name} must be true or false.")


def _whole_number(raw) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw.strip())
    return None


def _ranking_from_list(raw: list, *, shown: list[int]) -> list[int]:
    ids = [_whole_number(item) for item in raw]
    if None in ids:
        raise ServiceError("ranking must list response ids (whole numbers), best first.")
    if sorted(ids) != sorted(shown):
        raise ServiceError(
            f"ranking must hold each of the {len(shown)} shown responses exactly once."
        )
    return ids


def _ranking_from_places(data, *, shown: list[int]) -> list[int]:
    k = len(shown)
    places = {}
    for response_id in shown:
        place = _whole_number(value(data, f"rank_{response_id}"))
        if place is None or not 1 <= place <= k:
            raise ServiceError(f"Give every response a place from 1 to {k}.")
        places[response_id] = place
    if len(set(places.values())) != k:
        raise ServiceError(f"Give each response a different place from 1 to {k}.")
    return sorted(shown, key=places.__getitem__)


def _ranking(data, *, shown: list[int]) -> list[int]:
    listed = [item for item in values(data, "ranking") if item is not None]
    if listed:
        return _ranking_from_list(listed, shown=shown)
    if any(value(data, f"rank_{response_id}") is not None for response_id in shown):
        return _ranking_from_places(data, shown=shown)
    return []


def parse(data, *, assignment) -> dict:
    shown = list(assignment.shown_order)
    all_bad = _flag(value(data, "all_bad"), name="all_bad")
    ranking = _ranking(data, shown=shown)
    if not ranking and not all_bad:
        raise ServiceError(f"Rank the {len(shown)} responses best first, or mark them all bad.")
    rationale = str(value(data, "rationale", "") or "").strip()
    if len(rationale) > MAX_RATIONALE:
        raise ServiceError(f"Keep the rationale under {MAX_RATIONALE} characters.")
    return {"ranking": ranking, "all_bad": all_bad, "rationale": rationale}


def ranking_pairs(judgment: Judgment) -> list[tuple[int, int]]:
    """The k(k-1)/2 preference pairs (chosen_id, rejected_id) a ranking implies, each
    better response paired with every worse one (InstructGPT's K-choose-2 comparisons).
    None when the labeler said all are bad."""
    if judgment.all_bad:
        return []
    return list(combinations(judgment.ranking, 2))


def kendall_tau(first: Sequence, second: Sequence) -> float | None:
    """Kendall's tau of two rankings (items best first) over the items both hold: 1 same
    order, -1 reversed; None when they share fewer than two. Rankings have no ties, so
    tau-a equals tau-b. https://en.wikipedia.org/wiki/Kendall_rank_correlation_coefficient"""
    place = {item: index for index, item in enumerate(second)}
    common = [item for item in first if item in place]
    pairs = list(combinations(common, 2))
    if not pairs:
        return None
    concordant = sum(1 for better, worse in pairs if place[better] < place[worse])
    return (2 * concordant - len(pairs)) / len(pairs)


def matches_gold(judgment: Judgment, gold_answer: dict) -> bool:
    """Gold answer: {"ranking": [ids best first]} or {"all_bad": true}. An all-bad gold
    matches an all-bad judgment (whatever its ranking); otherwise the judgment must not be
    all-bad and its ranking must have Kendall's tau >= GOLD_MIN_TAU with the gold one."""
    if gold_answer.get("all_bad"):
        return judgment.all_bad
    gold = list(gold_answer.get("ranking") or [])
    if judgment.all_bad or not gold or sorted(gold) != sorted(judgment.ranking):
        return False
    tau = kendall_tau(judgment.ranking, gold)
    return tau is not None and tau >= GOLD_MIN_TAU


def _k(options) -> int:
    raw = value(options or {}, "k")
    k = DEFAULT_K if raw in (None, "") else _whole_number(raw)
    if k is None or not MIN_K <= k <= MAX_K:
        raise ServiceError(f"k must be a whole number from {MIN_K} to {MAX_K}.")
    return k


def create_tasks(*, project, options) -> TaskBatch:
    """For every prompt of the project with at least k responses, one task ranking its k
    newest responses. Returns the new tasks and why other prompts got none (too few
    candidate answers, or already ranked); safe to repeat."""
    from annotation.labeling.services import ensure_task

    k = _k(options)
    pool = (
        Prompt.objects.labeling()
        .alive()
        .filter(project=project)
        .annotate(response_count=Count("responses", filter=Q(responses__deleted_at__isnull=True)))
    )
    if not pool.exists():
        return TaskBatch(TaskKind.RANKING, 0, (NO_PROMPTS,))
    created = already = 0
    for prompt in pool.filter(response_count__gte=k).order_by("id"):
        newest = list(prompt.responses.alive().order_by("-created_at", "-id")[:k])
        # Positions in id order, so the same k responses always make the same task.
        responses = sorted(newest, key=lambda response: response.pk)
        _, is_new = ensure_task(
            project=project, kind=TaskKind.RANKING, prompt=prompt, responses=responses
        )
        created += int(is_new)
        already += int(not is_new)
    reasons = []
    if already:
        reasons.append(
            f"{counted(already, 'prompt already has', 'prompts already have')} a ranking "
            f"task of {'its' if already == 1 else 'their'} {k} newest answers"
        )
    short = pool.filter(response_count__lt=k).aggregate(
        prompts=Count("id"), most=Max("response_count")
    )
    if short["prompts"]:
        if created + already == 0:
            few = f"no prompt has {k} or more candidate answers (the most any prompt has is "
        else:
            few = (
                f"{counted(short['prompts'], 'prompt has', 'prompts have')} fewer than {k} "
                "candidate answers (the most any of them has is "
            )
        reasons.append(f"{few}{short['most']}); generate more samples per prompt on Models")
    return TaskBatch(TaskKind.RANKING, created, tuple(reasons))


SPEC = KindSpec(
    kind=TaskKind.RANKING,
    template="annotation/labeling/kinds/_ranking.html",
    parse=parse,
    matches_gold=matches_gold,
    min_responses=MIN_K,
    max_responses=MAX_K,
    create_tasks=create_tasks,
    create_help=(
        f"Option k ({MIN_K} to {MAX_K}, default {DEFAULT_K}): for every prompt with at least "
        "k responses, one task ranking its k newest responses best to worst."
    ),
)
