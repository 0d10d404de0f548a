"""Curate a project's data into immutable dataset versions.

A recipe says what a version holds: its kind, the sources it takes (imports by name,
``labelers``, ``ai``), the AI choice, and the curation steps, run in this order:

1. ``pii``: ``scrub`` replaces each personal-data span with a typed placeholder,
   ``drop`` removes the row, ``keep`` leaves the text alone (curation/pii.py);
2. ``dedupe``: ``exact`` (normalised text) or ``near`` (MinHash LSH) over the whole row
   (prompt, context and responses), keeping the earliest copy (curation/dedupe.py);
3. ``language``: with language codes, keep rows whose prompt and first answer are in one
   of them (curation/language.py); without, no row is identified;
4. ``quality``: length bounds, repetition and symbol ratio on every text of the row; with
   ``top=SHARE``, keep only the top share of rows by score (AlpaGasus: the responses'
   rating by a judge or a reward model; a row without a score is removed)
   (curation/quality.py).

``mix`` adds the rows of other versions of the same kind, each with a weight: 0.5 takes
half of that version's rows (the same half every time: chosen by a hash of the row id),
2 takes each row twice. Mixed rows go through the steps too.

The rows are written as JSONL (sorted keys, so the same rows give the same bytes) under
``DATA_DIR/datasets/<project>/<name>/v<N>/``; the sha256 of that file is the version's
content hash. The same recipe over the same data gives the same hash, and creating it again
returns the version that exists. A version's file, card and row are never changed; the
originals (prompts, responses, judgments) are never changed either: curation only decides
what a version holds. Report examples never show the raw text of a row that held personal
data; the originals stay visible to admins in the project's data.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max

from annotation.datasets import version_rows
from annotation.datasets.writers import read_version_rows
from annotation.models import DatasetVersion, Project, PromptImport
from config.errors import ServiceError

KINDS = tuple(DatasetVersion.Kind.values)
PII_CHOICES = ("scrub", "drop", "keep")
DEDUPE_CHOICES = ("none", "exact", "near")
AI_CHOICES = ("include", "exclude", "only", "trusted")
EXAMPLES_PER_STEP = 3
EXAMPLE_CHARS = 160
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")


class RecipeError(ServiceError):
    pass


@dataclass(frozen=True)
class Recipe:
    kind: str
    sources: tuple[str, ...] = ()
    ai: str | None = None
    pii: str = "scrub"
    dedupe: str = "exact"
    languages: tuple[str, ...] = ()
    quality: str = ""
    mix: tuple[tuple[int, float], ...] = ()  # (parent version id, weight)
    licence: str = ""

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "sources": list(self.sources),
            "ai": self.ai,
            "pii": self.pii,
            "dedupe": self.dedupe,
            "languages": list(self.languages),
            "quality": self.quality,
            "mix": [[parent, weight] for parent, weight in self.mix],
            "licence": self.licence,
        }


def _split(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [item.strip() for item in items if item and item.strip()]


def _choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise RecipeError(f"Unknown {what} {value!r}; choose one of {', '.join(choices)}.")
    return value


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name or ""):
        raise RecipeError(
            "A dataset name is 1-100 lower-case letters, digits, '-' or '_', starting with a "
            "letter or digit."
        )
    return name


def _sources(project: Project, sources) -> tuple[str, ...]:
    names = _split(sources)
    known = set(
        PromptImport.objects.filter(project=project)
        .exclude(source="")
        .values_list("source", flat=True)
    )
    unknown = [n for n in names if n not in known | {version_rows.LABELERS, version_rows.AI}]
    if unknown:
        offered = ", ".join(sorted(known | {"labelers", "ai"}))
        raise RecipeError(f"Unknown source {unknown[0]!r}; this project has: {offered}.")
    return tuple(dict.fromkeys(names))


def find_version(project: Project, label: str) -> DatasetVersion:
    """``name`` (its newest version) or ``name@N``."""
    name, _, number = label.partition("@")
    versions = DatasetVersion.objects.filter(project=project, name=name.strip())
    if number:
        if not number.strip().isdigit():
            raise RecipeError(f"{label!r}: a version number after '@' is a whole number.")
        versions = versions.filter(number=int(number))
    version = versions.order_by("-number").first()
    if version is None:
        raise RecipeError(f"No dataset version {label!r} in project {project.slug}.")
    return version


def _mix(project: Project, kind: str, mix) -> tuple[tuple[int, float], ...]:
    parts = []
    for item in _split(mix):
        label, _, weight_text = item.rpartition(":")
        if not label:
            raise RecipeError(f"Mix {item!r}: write VERSION:WEIGHT, e.g. hh@2:0.5.")
        try:
            weight = float(weight_text)
        except ValueError:
            raise RecipeError(f"Mix {item!r}: {weight_text!r} is not a number.") from None
        if not 0 < weight <= 100:
            raise RecipeError(f"Mix {item!r}: the weight must be above 0 and at most 100.")
        version = find_version(project, label)
        if version.kind != kind:
            raise RecipeError(f"Mix {item!r}: that version holds {version.kind} rows, not {kind}.")
        parts.append((version.pk, weight))
    return tuple(parts)


def parse_recipe(
    project: Project,
    *,
    kind: str,
    sources=None,
    ai: str | None = None,
    pii: str = "scrub",
    dedupe: str = "exact",
    languages=None,
    quality: str = "",
    mix=None,
    licence: str = "",
    may_keep_pii: bool = True,
) -> Recipe:
    """The recipe, or a RecipeError naming the first thing wrong with it. Raw personal
    data is for admins: ``may_keep_pii`` False (a researcher) refuses ``pii="keep"``."""
    from annotation.datasets.curation.language import parse_languages
    from annotation.datasets.curation.quality import parse_quality_rules

    kind = _choice(kind, KINDS, "kind")
    if ai:
        _choice(ai, AI_CHOICES, "AI choice")
    try:
        codes = tuple(sorted(parse_languages(",".join(_split(languages))))) if languages else ()
        if quality:
            parse_quality_rules(quality)
    except ValueError as error:
        raise RecipeError(str(error)) from None
    if pii == "keep" and not may_keep_pii:
        raise RecipeError(
            "Only a project admin may keep personal data in a version; choose scrub or drop."
        )
    if len(licence) > 100:
        raise RecipeError("The licence is longer than 100 characters.")
    return Recipe(
        kind=kind,
        sources=_sources(project, sources),
        ai=ai or None,
        pii=_choice(pii, PII_CHOICES, "PII choice"),
        dedupe=_choice(dedupe, DEDUPE_CHOICES, "dedupe choice"),
        languages=codes,
        quality=quality.strip(),
        mix=_mix(project, kind, mix),
        licence=licence.strip(),
    )


# --- The steps --------------------------------------------------------------------------


@dataclass
class StepReport:
    step: str
    detail: str
    seen: int = 0
    removed: int = 0
    changed: int = 0
    examples: list[dict] = field(default_factory=list)

    def example(self, **values) -> None:
        if len(self.examples) < EXAMPLES_PER_STEP:
            self.examples.append(values)

    def as_dict(self) -> dict:
        return {
            "step": self.step,
            "detail": self.detail,
            "seen": self.seen,
            "removed": self.removed,
            "changed": self.changed,
            "examples": self.examples,
        }


def row_texts(row: dict) -> list[str]:
    texts = [message["content"] for message in row["prompt"]]
    texts.extend(row.get("responses") or [])
    if "completion" in row:
        texts.append(row["completion"])
    return texts


def _with_texts(row: dict, change: Callable[[str], str]) -> dict:
    new = dict(row)
    new["prompt"] = [{**turn, "content": change(turn["content"])} for turn in row["prompt"]]
    if "responses" in row:
        new["responses"] = [change(text) for text in row["responses"]]
    if "completion" in row:
        new["completion"] = change(row["completion"])
    return new


def _short(text: str) -> str:
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…"


Step = Callable[[dict], dict | None]


def _pii_step(choice: str, report: StepReport) -> Step:
    from annotation.datasets.curation.pii import scrub

    def run(row: dict) -> dict | None:
        found: list[str] = []

        def scrubbed(text: str) -> str:
            new, kinds = scrub(text)
            found.extend(kinds)
            return new

        new = _with_texts(row, scrubbed)
        if not found:
            return row
        kinds = sorted(set(found))
        if choice == "drop":
            report.removed += 1
            report.example(id=row["id"], kinds=kinds)
            return None
        report.changed += 1
        report.example(id=row["id"], kinds=kinds, after=_short(" | ".join(row_texts(new))))
        return new

    return run


def _dedupe_step(choice: str, report: StepReport) -> Step:
    from annotation.datasets.curation.dedupe import ExactDeduper, NearDeduper

    deduper = ExactDeduper() if choice == "exact" else NearDeduper()

    def run(row: dict) -> dict | None:
        earlier = deduper.first_of(row["id"], "\n".join(row_texts(row)))
        if earlier is None:
            return row
        report.removed += 1
        report.example(id=row["id"], duplicate_of=earlier)
        return None

    return run


def _language_step(languages: tuple[str, ...], report: StepReport) -> Step:
    from annotation.datasets.curation.language import detect_language

    wanted = set(languages)

    def run(row: dict) -> dict | None:
        answers = row.get("responses") or [row.get("completion", "")]
        language = detect_language(f"{row['prompt'][-1]['content']} {answers[0]}")
        if language not in wanted:
            report.removed += 1
            report.example(id=row["id"], language=language or "unknown")
            return None
        return {**row, "language": language}

    return run


def _quality_step(rules, report: StepReport) -> Step:
    def run(row: dict) -> dict | None:
        for text in row_texts(row):
            reason = rules.failure(text)
            if reason:
                report.removed += 1
                report.example(id=row["id"], reason=reason)
                return None
        return row

    return run


def _steps(recipe: Recipe) -> tuple[list[tuple[Step, StepReport]], object | None]:
    steps: list[tuple[Step, StepReport]] = []
    if recipe.pii != "keep":
        report = StepReport("pii", recipe.pii)
        steps.append((_pii_step(recipe.pii, report), report))
    if recipe.dedupe != "none":
        report = StepReport("dedupe", recipe.dedupe)
        steps.append((_dedupe_step(recipe.dedupe, report), report))
    if recipe.languages:
        report = StepReport("language", ",".join(recipe.languages))
        steps.append((_language_step(recipe.languages, report), report))
    rules = None
    if recipe.quality:
        from annotation.datasets.curation.quality import parse_quality_rules

        rules = parse_quality_rules(recipe.quality)
        report = StepReport("quality", recipe.quality)
        steps.append((_quality_step(rules, report), report))
    return steps, rules


def _run_steps(rows: Iterable[dict], steps) -> Iterator[dict]:
    for row in rows:
        for step, report in steps:
            report.seen += 1
            row = step(row)
            if row is None:
                break
        else:
            yield row


# --- Sources ---------------------------------------------------------------------------


def _share_of(row_id: str, parent_id: int) -> float:
    digest = hashlib.blake2b(f"{parent_id}:{row_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _mixed_rows(recipe: Recipe) -> Iterator[dict]:
    for parent_id, weight in recipe.mix:
        parent = DatasetVersion.objects.get(pk=parent_id)
        whole, part = int(weight), weight - int(weight)
        for row in read_version_rows(Path(parent.path)):
            copies = whole + (1 if _share_of(row["id"], parent_id) < part else 0)
            for copy in range(copies):
                suffix = f"#{copy + 1}" if copy else ""
                yield {**row, "id": f"{parent.name}@{parent.number}/{row['id']}{suffix}"}


def _rows(project: Project, recipe: Recipe) -> Iterator[dict]:
    if recipe.sources or not recipe.mix:
        yield from version_rows.candidate_rows(
            project, recipe.kind, list(recipe.sources) or None, recipe.ai
        )
    yield from _mixed_rows(recipe)


# --- Curation and writing --------------------------------------------------------------


@dataclass
class Curated:
    """What a recipe gives: the rows' file (when written), count, hash, stats and report."""

    recipe: Recipe
    row_count: int
    content_hash: str
    stats: dict
    report: list[dict]
    path: Path | None = None


def _line(row: dict) -> bytes:
    return orjson.dumps(row, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)


def _row_score(row: dict) -> float | None:
    scores = row.get("scores")
    return scores[0] if scores else None


class _Stats:
    def __init__(self):
        self.by_source: Counter = Counter()
        self.by_language: Counter = Counter()
        self.labels: Counter = Counter()

    def add(self, row: dict) -> None:
        self.by_source[row["source_name"]] += 1
        self.by_language[row["language"]] += 1  # "": not identified
        if row["kind"] == "preference":
            self.labels[f"{len(row['responses'])} responses"] += 1
        elif row["kind"] == "kto":
            self.labels["desirable" if row["label"] else "undesirable"] += 1

    def as_dict(self, kind: str) -> dict:
        return {
            "by_source": dict(self.by_source.most_common()),
            "by_language": dict(self.by_language.most_common()),
            "by_kind": {kind: sum(self.by_source.values())},
            "labels": dict(self.labels.most_common()),
        }


def _write(rows: Iterable[dict], stream, stats: _Stats) -> tuple[int, str]:
    digest = hashlib.sha256()
    count = 0
    for row in rows:
        line = _line(row)
        digest.update(line)
        if stream is not None:
            stream.write(line)
        stats.add(row)
        count += 1
    return count, digest.hexdigest()


def _top_share(rows: Iterable[dict], share: float, report: StepReport, workdir: Path):
    """Two passes over a spill file: the scores first, then the rows at or above the
    score of the top ``share`` (ties at the cut stay, so a few more may pass)."""
    spill = workdir / "before-top.jsonl"
    scores = []
    with spill.open("wb") as stream:
        for row in rows:
            report.seen += 1
            score = _row_score(row)
            if score is None:
                report.removed += 1
                report.example(id=row["id"], reason="no score")
                continue
            scores.append(score)
            stream.write(_line(row))
    if not scores:
        return
    scores.sort(reverse=True)
    cut = scores[max(1, min(len(scores), round(share * len(scores)))) - 1]
    for row in read_version_rows(spill):
        if _row_score(row) >= cut:
            yield row
        else:
            report.removed += 1
            report.example(id=row["id"], reason=f"score {_row_score(row):g} below {cut:g}")


def curate(project: Project, recipe: Recipe, *, output: Path | None = None) -> Curated:
    """Run the recipe; write the kept rows to ``output`` when given (a dry run otherwise)."""
    steps, rules = _steps(recipe)
    with tempfile.TemporaryDirectory(dir=_workdir_root()) as workdir:
        kept = _run_steps(_rows(project, recipe), steps)
        reports = [report for _, report in steps]
        top = getattr(rules, "top_share", None)
        if top:
            top_report = StepReport("top", f"keep the top {top:g} by score")
            kept = _top_share(kept, top, top_report, Path(workdir))
            reports.append(top_report)
        stats = _Stats()
        if output is None:
            count, content_hash = _write(kept, None, stats)
        else:
            with output.open("wb") as stream:
                count, content_hash = _write(kept, stream, stats)
    return Curated(
        recipe=recipe,
        row_count=count,
        content_hash=content_hash,
        stats=stats.as_dict(recipe.kind),
        report=[report.as_dict() for report in reports],
        path=output,
    )


def _workdir_root() -> Path:
    root = Path(settings.DATA_DIR) / "datasets" / ".work"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _card(project: Project, name: str, number: int, curated: Curated, parents) -> str:
    from annotation.datasets.writers import dataset_card

    stats = curated.stats
    return dataset_card(
        name=f"{project.slug}/{name}",
        version=number,
        kind=curated.recipe.kind,
        content_hash=curated.content_hash,
        row_count=curated.row_count,
        counts_by_source=stats["by_source"],
        counts_by_language=stats["by_language"],
        label_distribution=stats["labels"],
        agreement=None,
        recipe=curated.recipe.as_dict(),
        removed=curated.report,
        licence=curated.recipe.licence,
        parents=[str(parent) for parent in parents],
    )


def dataset_version_create(
    *, project: Project, name: str, recipe: Recipe, user=None
) -> tuple[DatasetVersion, bool]:
    """Curate and store a version; (version, created). The same rows under the same name
    give back the version that holds them (created False)."""
    name = check_name(name)
    folder = Path(settings.DATA_DIR) / "datasets" / project.slug / name
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=_workdir_root()) as workdir:
        staged = Path(workdir) / "rows.jsonl"
        curated = curate(project, recipe, output=staged)
        if curated.row_count == 0:
            raise RecipeError("The recipe keeps no rows; nothing was created.")
        existing = DatasetVersion.objects.filter(
            project=project, name=name, content_hash=curated.content_hash
        ).first()
        if existing is not None:
            return existing, False
        parents = list(DatasetVersion.objects.filter(pk__in=[p for p, _ in recipe.mix]))
        with transaction.atomic():
            Project.objects.select_for_update().filter(pk=project.pk).first()
            last = DatasetVersion.objects.filter(project=project, name=name).aggregate(
                Max("number")
            )["number__max"]
            number = (last or 0) + 1
            target = folder / f"v{number}"
            if target.exists():  # left by a crash before its row was stored
                shutil.rmtree(target)
            target.mkdir()
            card = _card(project, name, number, curated, parents)
            (target / "README.md").write_text(card, encoding="utf-8")
            staged.replace(target / "rows.jsonl")
            try:
                version = DatasetVersion.objects.create(
                    project=project,
                    name=name,
                    number=number,
                    kind=recipe.kind,
                    content_hash=curated.content_hash,
                    path=target / "rows.jsonl",
                    row_count=curated.row_count,
                    recipe=recipe.as_dict(),
                    report=curated.report,
                    stats=curated.stats,
                    card=card,
                    licence=recipe.licence,
                    created_by=user,
                )
            except IntegrityError:
                shutil.rmtree(target, ignore_errors=True)
                raise
            version.parents.set(parents)
    return version, True
