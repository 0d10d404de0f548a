"""Which AI labels go into exports and training snapshots, and why (read only).

A project's ``ai_labels`` setting (on *Tasks*) is what every export and snapshot takes when
its caller names no choice (the export page, file and API, the training page and API, the
``export_preferences`` and ``train`` commands):

- ``exclude`` (a new project's default): people's labels only (labelers' and reviewers');
- ``trusted``: people's labels, and the AI labels of every judge whose agreement with the
  human majority clears the project's threshold: Cohen's kappa at least ``ai_min_kappa``
  over at least ``ai_min_compared`` compared items. A judge is counted per constitution
  version, as the agreement report groups it (annotation/judges/agreement.py); one with no
  kappa (nothing compared, or one answer throughout) is left out;
- ``include``: every AI label.

A caller may name its own choice instead: those three, or ``only`` (AI labels only, from
every judge). ``ai_label_plan`` says for one choice whose labels go in and whose stay out
and why, in words for the pages; warns when labels of a judge below the threshold go in;
and gives what a training snapshot records.
"""

from dataclasses import dataclass, replace

from django.db.models import Count

from annotation.judges.agreement import judge_agreement
from annotation.models import Constitution, Judge, Judgment, Project
from config.errors import ServiceError

AI_OPTIONS = ("include", "exclude", "only", "trusted")
AI_LABELS = {
    "exclude": "People's labels only (no AI labels)",
    "trusted": "People's labels and AI labels from trusted judges",
    "include": "People's and all AI labels",
    "only": "AI labels only",
}
JudgeKey = tuple[int | None, int | None]  # (judge id, constitution id)


def check_ai(ai) -> str:
    """The ``ai`` option, or ServiceError naming the allowed values."""
    if ai not in AI_OPTIONS:
        raise ServiceError(f"ai must be one of {', '.join(AI_OPTIONS)}; not {ai!r}.")
    return ai


def ai_choice(*, project: Project, ai: str | None = None) -> str:
    """The caller's choice, or the project's setting when it names none (None or "")."""
    return check_ai(ai) if ai not in (None, "") else project.ai_labels


@dataclass(frozen=True)
class JudgeStanding:
    """One judge (under one constitution version) with AI labels in the project."""

    judge_id: int | None
    constitution_id: int | None
    judge: str
    constitution: str
    labels: int  # current AI labels: not superseded, not rejected
    compared: int  # items compared with a human majority
    kappa: float | None
    trusted: bool
    reason: str  # why it is (not) trusted, e.g. "kappa 0.42 ≥ 0.3 on 25 items"

    @property
    def key(self) -> JudgeKey:
        return (self.judge_id, self.constitution_id)

    @property
    def name(self) -> str:
        judge = self.judge or "an unknown judge"
        return f"{judge} ({self.constitution})" if self.constitution else judge

    def record(self) -> dict:
        """What a training snapshot keeps of the judge."""
        return {
            "judge": self.judge,
            "constitution": self.constitution,
            "kappa": None if self.kappa is None else round(self.kappa, 4),
            "compared": self.compared,
            "labels": self.labels,
        }


def _standing(key: JudgeKey, *, names: dict, labels: int, report: dict | None, project):
    kappa = report["kappa"] if report else None
    compared = report["compared"] if report else 0
    minimum, needed = project.ai_min_kappa, project.ai_min_compared
    problems = []
    if kappa is None:
        problems.append(
            "no kappa (nothing compared with a human majority)"
            if compared == 0
            else "no kappa (the same answer on every compared item)"
        )
    elif kappa < minimum:
        problems.append(f"kappa {kappa:.2f} below {minimum:g}")
    if compared < needed:
        problems.append(f"{compared} items compared with people, fewer than {needed}")
    judge, constitution = names[key]
    return JudgeStanding(
        judge_id=key[0],
        constitution_id=key[1],
        judge=judge,
        constitution=constitution,
        labels=labels,
        compared=compared,
        kappa=kappa,
        trusted=not problems,
        reason="; ".join(problems) or f"kappa {kappa:.2f} ≥ {minimum:g} on {compared} items",
    )


def judge_standings(*, project: Project) -> list[JudgeStanding]:
    """Every (judge, constitution version) with current AI labels in the project, whether
    its agreement with people clears the project's threshold, and why."""
    counts = {
        (judge_id, constitution_id): n
        for judge_id, constitution_id, n in Judgment.objects.filter(
            project=project, source=Judgment.Source.AI, superseded_by__isnull=True
        )
        .exclude(reviews__decision="rejected")
        .order_by()
        .values_list("judge_id", "constitution_id")
        .annotate(n=Count("id"))
    }
    if not counts:
        return []
    reports = {(r["judge_id"], r["constitution_id"]): r for r in judge_agreement(project=project)}
    judges = Judge.objects.in_bulk({j for j, _ in counts if j})
    constitutions = Constitution.objects.in_bulk({c for _, c in counts if c})
    names = {
        (j, c): (
            judges[j].name if j in judges else "",
            str(constitutions[c]) if c in constitutions else "",
        )
        for j, c in counts
    }
    standings = [
        _standing(key, names=names, labels=n, report=reports.get(key), project=project)
        for key, n in counts.items()
    ]
    return sorted(standings, key=lambda s: (s.judge, s.constitution, s.judge_id or 0))


def trusted_judges(*, project: Project) -> frozenset[JudgeKey]:
    """The (judge, constitution) pairs whose labels a ``trusted`` export takes."""
    return frozenset(s.key for s in judge_standings(project=project) if s.trusted)


@dataclass(frozen=True)
class AiLabelPlan:
    """What one choice puts in, for one project, now."""

    ai: str
    project_default: bool
    min_kappa: float
    min_compared: int
    judges: tuple[JudgeStanding, ...]

    @property
    def included(self) -> list[JudgeStanding]:
        if self.ai == "exclude":
            return []
        if self.ai == "trusted":
            return [s for s in self.judges if s.trusted]
        return list(self.judges)

    @property
    def left_out(self) -> list[JudgeStanding]:
        return [s for s in self.judges if s not in self.included]

    @property
    def below_threshold(self) -> list[JudgeStanding]:
        return [s for s in self.judges if not s.trusted]

    @property
    def trusted_keys(self) -> frozenset[JudgeKey]:
        return frozenset(s.key for s in self.judges if s.trusted)

    @property
    def threshold(self) -> str:
        return f"kappa ≥ {self.min_kappa:g} on at least {self.min_compared} items"

    @property
    def headline(self) -> str:
        total, taken = len(self.judges), len(self.included)
        if self.ai == "exclude":
            text = "AI labels: excluded"
        elif self.ai == "only":
            text = f"AI labels only, from all {total} judges (people's labels left out)"
        elif self.ai == "include":
            text = f"AI labels: all included, from all {total} judges"
        else:
            text = f"AI labels: included from {taken} of {total} judges ({self.threshold})"
        if self.ai != "exclude" and total == 0:
            text += ", but there are no AI labels yet"
        return text + (" (project default)" if self.project_default else "")

    @property
    def details(self) -> list[str]:
        """One line per judge: in or left out, and its agreement."""
        lines = []
        for standing in self.judges:
            if self.ai == "exclude":
                lines.append(f"{standing.name} left out ({standing.reason})")
            elif standing not in self.included:
                lines.append(f"{standing.name} left out: {standing.reason}")
            else:
                lines.append(f"{standing.name} {standing.reason}")
        return lines

    @property
    def text(self) -> str:
        """The headline and the details in one line, for messages and command output."""
        return f"{self.headline}: {'; '.join(self.details)}" if self.details else self.headline

    @property
    def warnings(self) -> list[str]:
        """Labels of judges below the threshold that this choice puts in."""
        return [
            f"Labels of {s.name} go in although it is below the project's threshold "
            f"({self.threshold}): {s.reason}."
            for s in self.included
            if not s.trusted
        ]

    def of_judge(self, judge_id: int) -> "AiLabelPlan":
        """The same plan narrowed to one judge's constitution versions (a job's page)."""
        return replace(self, judges=tuple(s for s in self.judges if s.judge_id == judge_id))

    def recorded(self) -> dict:
        """What a training snapshot's filters keep: the choice, and (unless AI labels were
        left out) the judges whose labels went in and, for ``trusted``, the threshold."""
        if self.ai == "exclude":
            return {"ai": self.ai}
        record = {"ai": self.ai, "ai_judges": [s.record() for s in self.included]}
        if self.ai == "trusted":
            record["ai_threshold"] = {
                "min_kappa": self.min_kappa,
                "min_compared": self.min_compared,
            }
        return record


def ai_label_plan(*, project: Project, ai: str | None = None) -> AiLabelPlan:
    """Whose AI labels ``ai`` (None: the project's setting) puts in, and why."""
    chosen = ai_choice(project=project, ai=ai)
    return AiLabelPlan(
        ai=chosen,
        project_default=ai in (None, ""),
        min_kappa=project.ai_min_kappa,
        min_compared=project.ai_min_compared,
        judges=tuple(judge_standings(project=project)),
    )
