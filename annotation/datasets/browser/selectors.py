"""The browser's reads. Every list is keyset-paged newest first by id (``id < after``,
``LIMIT PAGE_ROWS + 1``): no OFFSET and no COUNT, so a deep page costs what the first does
on the (project, id) and (project, kind|labeler|source, id) indexes.

Agreement: a judgment is *disputed* when it is a current (not superseded) human judgment
and its task holds another current human judgment with a different choice or ranking;
*agreed* when its task holds another current human judgment and none differs. One EXISTS
per row on the judgment's task index, so it stays cheap; ratings' scores are not compared.
"""

import datetime
from dataclasses import dataclass

from django.db.models import (
    Case,
    Exists,
    IntegerField,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    When,
)
from django.utils import timezone

from annotation.models import Judgment, Project, Prompt, Response, Task, TaskKind

PAGE_ROWS = 50


@dataclass
class Page:
    rows: list
    next_after: int | None


def page_query(queryset: QuerySet, after: int | None) -> QuerySet:
    """One page and one row more (to know whether a next page exists), newest first."""
    if after:
        queryset = queryset.filter(id__lt=after)
    return queryset.order_by("-id")[: PAGE_ROWS + 1]


def _page(queryset: QuerySet, after: int | None) -> Page:
    rows = list(page_query(queryset, after))
    more = len(rows) > PAGE_ROWS
    rows = rows[:PAGE_ROWS]
    return Page(rows=rows, next_after=rows[-1].pk if more else None)


def _dates(filters: dict, prefix: str = "") -> Q:
    q = Q()
    if filters.get("date_from"):
        q &= Q(**{f"{prefix}created_at__date__gte": filters["date_from"]})
    if filters.get("date_to"):
        q &= Q(**{f"{prefix}created_at__date__lte": filters["date_to"]})
    return q


def _day_start(day: datetime.date) -> datetime.datetime:
    return timezone.make_aware(datetime.datetime.combine(day, datetime.time.min))


def _edge_id(project: Project, *, before=None, since=None) -> int | None:
    """The id of the newest judgment created before `before` (or of the oldest created
    since `since`), found kind by kind on the (project, kind, created_at) index."""
    found = []
    for kind in TaskKind.values:
        rows = Judgment.objects.filter(project=project, kind=kind)
        if before is not None:
            rows = rows.filter(created_at__lt=before).order_by("-created_at", "-id")
        else:
            rows = rows.filter(created_at__gte=since).order_by("created_at", "id")
        found += rows.values_list("id", flat=True)[:1]
    if not found:
        return None
    return max(found) if before is not None else min(found)


def _judgment_id_range(project: Project, filters: dict) -> Q:
    """A date range as an id range too, so the keyset walk on (project, id) starts and
    stops at its edges instead of reading every newer (or older) row to test its date.
    Ids follow creation (created_at is the insert time); the date test itself is kept."""
    q = Q()
    if filters.get("date_to"):
        end = _day_start(filters["date_to"] + datetime.timedelta(days=1))
        newest = _edge_id(project, before=end)
        q &= Q(id__lte=newest) if newest is not None else Q(pk__in=[])
    if filters.get("date_from"):
        oldest = _edge_id(project, since=_day_start(filters["date_from"]))
        q &= Q(id__gte=oldest) if oldest is not None else Q(pk__in=[])
    return q


def _not_superseded() -> Q:
    # NOT EXISTS rather than superseded_by__isnull (a LEFT JOIN ... IS NULL), which
    # PostgreSQL estimated at one row and answered with a hash join over every judgment.
    return ~Q(Exists(Judgment.objects.filter(supersedes=OuterRef("pk"))))


def _current_human(**lookups) -> QuerySet:
    return Judgment.objects.filter(_not_superseded(), source=Judgment.Source.HUMAN, **lookups)


def _agreement(queryset: QuerySet, agreement: str) -> QuerySet:
    """The current human judgments that others of their task contradict (disputed), or
    that others exist for and all match (agreed). The others are read in one aggregate
    per row (1 when all match, 0 when one differs, NULL when there are none): PostgreSQL
    keeps an aggregate as a per-row subplan, so the newest-first walk on the id index
    stops after a page, where an EXISTS / NOT EXISTS pair became hash joins over every
    judgment (5-7 s at 1M)."""
    others = _current_human(task=OuterRef("task")).exclude(pk=OuterRef("pk"))
    all_match = (
        others.order_by()
        .values("task")
        .annotate(
            all_match=Min(
                Case(
                    When(Q(choice=OuterRef("choice"), ranking=OuterRef("ranking")), then=1),
                    default=0,
                    output_field=IntegerField(),
                )
            )
        )
        .values("all_match")
    )
    mine = queryset.filter(_not_superseded(), source=Judgment.Source.HUMAN, task__isnull=False)
    wanted = 0 if agreement == "disputed" else 1
    return mine.annotate(others_match=Subquery(all_match)).filter(others_match=wanted)


def browse_judgments(*, project: Project, filters: dict) -> Page:
    return _page(judgments_query(project=project, filters=filters), filters.get("after"))


def judgments_query(*, project: Project, filters: dict) -> QuerySet:
    """The project's judgments that pass `filters`, unordered and unpaged."""
    queryset = Judgment.objects.filter(project=project).select_related(
        "labeler", "prompt", "source_import", "judge", "task"
    )
    if not filters.get("deleted"):
        queryset = queryset.filter(prompt__deleted_at__isnull=True)
    if filters.get("q"):
        text = filters["q"]
        queryset = queryset.filter(
            Q(prompt__text__icontains=text) | Q(rationale__icontains=text) | Q(text__icontains=text)
        )
    if filters.get("source"):
        queryset = queryset.filter(source=filters["source"])
    if filters.get("import_name"):
        queryset = queryset.filter(source_import__source=filters["import_name"])
    if filters.get("labeler"):
        queryset = queryset.filter(labeler__username=filters["labeler"])
    if filters.get("model_version"):
        name = filters["model_version"]
        queryset = queryset.filter(
            Q(response_a__model_version__name=name)
            | Q(response_b__model_version__name=name)
            | Q(rated_response__model_version__name=name)
        )
    if filters.get("kind"):
        queryset = queryset.filter(kind=filters["kind"])
    if filters.get("flagged"):
        queryset = queryset.filter(Q(task__flagged=True) | ~Q(flags=[]))
    if filters.get("agreement"):
        queryset = _agreement(queryset, filters["agreement"])
    return queryset.filter(_dates(filters) & _judgment_id_range(project, filters))


def browse_prompts(*, project: Project, filters: dict) -> Page:
    queryset = Prompt.objects.filter(project=project).select_related("source_import", "deleted_by")
    if not filters.get("deleted"):
        queryset = queryset.alive()
    if filters.get("q"):
        queryset = queryset.filter(text__icontains=filters["q"])
    if filters.get("import_name"):
        queryset = queryset.filter(source_import__source=filters["import_name"])
    if filters.get("source") == Judgment.Source.IMPORT:
        queryset = queryset.filter(source_import__isnull=False)
    elif filters.get("source"):
        queryset = queryset.filter(
            Exists(Judgment.objects.filter(prompt=OuterRef("pk"), source=filters["source"]))
        )
    if filters.get("labeler"):
        queryset = queryset.filter(
            Exists(
                Judgment.objects.filter(prompt=OuterRef("pk"), labeler__username=filters["labeler"])
            )
        )
    if filters.get("model_version"):
        queryset = queryset.filter(
            Exists(
                Response.objects.filter(
                    prompt=OuterRef("pk"), model_version__name=filters["model_version"]
                )
            )
        )
    tasks = Task.objects.filter(prompt=OuterRef("pk"))
    if filters.get("kind"):
        queryset = queryset.filter(Exists(tasks.filter(kind=filters["kind"])))
    if filters.get("flagged"):
        queryset = queryset.filter(Exists(tasks.filter(flagged=True)))
    if filters.get("agreement"):
        judged = _agreement(Judgment.objects.filter(project=project), filters["agreement"])
        queryset = queryset.filter(Exists(judged.filter(prompt=OuterRef("pk"))))
    return _page(queryset.filter(_dates(filters)), filters.get("after"))


def browse_responses(*, project: Project, filters: dict) -> Page:
    queryset = Response.objects.filter(prompt__project=project).select_related(
        "prompt", "model_version", "source_import", "deleted_by"
    )
    if not filters.get("deleted"):
        queryset = queryset.alive()
    if filters.get("q"):
        queryset = queryset.filter(text__icontains=filters["q"])
    if filters.get("import_name"):
        queryset = queryset.filter(source_import__source=filters["import_name"])
    if filters.get("source") == Judgment.Source.IMPORT:
        queryset = queryset.filter(source_import__isnull=False)
    elif filters.get("source") == Judgment.Source.AI:
        queryset = queryset.filter(model_version__isnull=False)
    elif filters.get("source"):  # human or review: written by a person
        queryset = queryset.filter(model_version__isnull=True, source_import__isnull=True)
    if filters.get("labeler"):
        queryset = queryset.filter(
            Exists(
                Judgment.objects.filter(
                    prompt=OuterRef("prompt"), labeler__username=filters["labeler"]
                )
            )
        )
    if filters.get("model_version"):
        queryset = queryset.filter(model_version__name=filters["model_version"])
    tasks = Task.objects.filter(links__response=OuterRef("pk"))
    if filters.get("kind"):
        queryset = queryset.filter(Exists(tasks.filter(kind=filters["kind"])))
    if filters.get("flagged"):
        queryset = queryset.filter(Exists(tasks.filter(flagged=True)))
    if filters.get("agreement"):
        judged = _agreement(Judgment.objects.filter(project=project), filters["agreement"])
        queryset = queryset.filter(Exists(judged.filter(prompt=OuterRef("prompt"))))
    return _page(queryset.filter(_dates(filters)), filters.get("after"))


BROWSERS = {
    "judgments": browse_judgments,
    "prompts": browse_prompts,
    "responses": browse_responses,
}


def browse(*, project: Project, filters: dict) -> Page:
    return BROWSERS[filters.get("tab") or "judgments"](project=project, filters=filters)


# --- one judgment -------------------------------------------------------------------------


def judgment_detail(*, project: Project, judgment_id: int) -> Judgment | None:
    return (
        Judgment.objects.filter(project=project, pk=judgment_id)
        .select_related(
            "prompt",
            "task",
            "labeler",
            "guidelines",
            "source_import",
            "judge",
            "constitution",
            "supersedes",
            "superseded_by",
            "response_a",
            "response_b",
            "rated_response",
            "edited_from",
        )
        .first()
    )


def shown_responses(judgment: Judgment) -> list[Response]:
    """The responses in the order the labeler saw them (shown_order; else A, B or the
    rated one, for judgments that recorded no order)."""
    order = [pk for pk in judgment.shown_order if isinstance(pk, int)]
    if not order:
        fallback = (judgment.response_a, judgment.response_b, judgment.rated_response)
        return [response for response in fallback if response is not None]
    by_id = Response.objects.select_related("model_version").in_bulk(order)
    return [by_id[pk] for pk in order if pk in by_id]


def judgment_chain(judgment: Judgment) -> list[Judgment]:
    """The supersede chain through `judgment`, oldest first (bounded walk)."""
    chain = [judgment]
    earlier = judgment.supersedes
    while earlier is not None and len(chain) < 50:
        chain.insert(0, earlier)
        earlier = earlier.supersedes
    later = getattr(judgment, "superseded_by", None)
    while later is not None and len(chain) < 100:
        chain.append(later)
        later = Judgment.objects.filter(supersedes=later).first()
    return chain
