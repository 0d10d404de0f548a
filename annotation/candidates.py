"""Which replies become comparison tasks, by the project's candidate policy.

When a model version has answered the project's prompts, each of its replies is paired
with one partner reply to the same prompt: the newest reply of another author (a model
version that is not retired, or a person). The policy picks the partner:

- ``newest_vs_incumbent``: the incumbent's reply (the serving policy promoted last); the
  incumbent itself is paired with the newest other version. Where the chosen author did
  not answer the prompt, the newest other author's reply stands in.
- ``round_robin``: the author this version has been compared with least in the project
  so far, so every pair of versions gets about the same number of tasks.
- ``active``: the reply the latest reward model scores closest to this version's reply,
  i.e. the pair it is least sure about (Bradley-Terry probability nearest 1/2); the task
  gets a higher priority the closer that probability is to 1/2. Without a reward model,
  round-robin is used.

A version that is the prompt's only author is paired with its own second sample, if any.
"""

import math
from collections import Counter
from collections.abc import Callable

from annotation.models import CandidatePolicy, Project, Response, Task, TaskKind
from annotation.services import ensure_comparison_task
from models_registry import selectors as registry_selectors
from models_registry.models import ModelVersion

Score = Callable[[list[list[dict]], list[str]], list[float]]
PERSON = "person:"
# An AI judge's revision of a reply (annotation/ai/revision.py) is already paired with
# the reply it revises; it never enters comparison tasks.
REVISION_KEY = "revision_of"


def _author(response: Response) -> str:
    return str(response.model_version_id) if response.model_version_id else PERSON + response.author


def _partners(response: Response, model_version) -> dict[str, Response]:
    """The newest reply of every other author of the prompt (retired versions left out)."""
    others = (
        Response.objects.filter(prompt=response.prompt)
        .exclude(model_version=model_version)
        .exclude(generation_params__has_key=REVISION_KEY)
        .exclude(model_version__state=ModelVersion.State.RETIRED)
        .order_by("-created_at", "-id")
    )
    partners: dict[str, Response] = {}
    for other in others:
        partners.setdefault(_author(other), other)
    return partners


def latest_reward_model() -> ModelVersion | None:
    return (
        ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD)
        .exclude(state=ModelVersion.State.RETIRED)
        .order_by("-created_at", "-id")
        .first()
    )


def _pair_counts(project: Project, model_version) -> Counter:
    """How often each author has been compared with ``model_version`` in the project."""
    counts: Counter = Counter()
    tasks = Task.objects.filter(
        project=project, kind=TaskKind.COMPARISON, responses__model_version=model_version
    ).prefetch_related("responses")
    for task in tasks:
        for response in task.responses.all():
            if response.model_version_id != model_version.pk:
                counts[_author(response)] += 1
    return counts


class _Picker:
    def __init__(self, project: Project, model_version, score: Score | None):
        self.policy = project.candidate_policy
        self.model_version = model_version
        self.score = score if self.policy == CandidatePolicy.ACTIVE else None
        self.counts = _pair_counts(project, model_version)
        champion = registry_selectors.incumbent()
        if champion is not None and champion.pk == model_version.pk:
            champion = (
                ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY)
                .exclude(pk=model_version.pk)
                .exclude(state=ModelVersion.State.RETIRED)
                .order_by("-created_at", "-id")
                .first()
            )
        self.champion = str(champion.pk) if champion else None

    def pick(self, response: Response, partners: dict[str, Response]) -> tuple[Response, int]:
        """The partner reply and the task's priority."""
        if self.policy == CandidatePolicy.NEWEST_VS_INCUMBENT and self.champion in partners:
            return partners[self.champion], 0
        if self.policy == CandidatePolicy.NEWEST_VS_INCUMBENT:
            return next(iter(partners.values())), 0
        if self.score is not None:
            return self._least_sure(response, partners)
        author = min(partners, key=lambda name: (self.counts[name], name))
        self.counts[author] += 1
        return partners[author], 0

    def _least_sure(self, response: Response, partners: dict[str, Response]):
        candidates = list(partners.values())
        conversation = response.prompt.as_conversation()
        rewards = self.score(
            [conversation] * (len(candidates) + 1), [response.text, *(c.text for c in candidates)]
        )
        gaps = [abs(rewards[0] - other) for other in rewards[1:]]
        best = min(range(len(candidates)), key=gaps.__getitem__)
        # Bradley-Terry probability that one beats the other, from the normalised rewards.
        p = 1 / (1 + math.exp(-gaps[best]))
        return candidates[best], round(100 * (1 - 2 * abs(p - 0.5)))


def ensure_comparison_tasks(*, project: Project, model_version, score: Score | None = None) -> int:
    """One comparison task per reply of ``model_version`` in the project's labeling pool,
    its partner chosen by the project's candidate policy (``score``: the latest reward
    model, needed by the active policy). Returns how many tasks are new; safe to repeat
    (a reply already in a comparison task is left alone)."""
    own = (
        Response.objects.labeling()
        .filter(prompt__project=project, model_version=model_version)
        .exclude(generation_params__has_key=REVISION_KEY)
    )
    in_tasks = set(
        Task.objects.filter(project=project, kind=TaskKind.COMPARISON)
        .filter(responses__in=own)
        .values_list("responses", flat=True)
    )
    picker = _Picker(project, model_version, score)
    created = 0
    for response in own.select_related("prompt").order_by("prompt_id", "sample_index"):
        if response.pk in in_tasks:
            continue
        partners = _partners(response, model_version)
        if partners:
            partner, priority = picker.pick(response, partners)
        elif response.sample_index > 0:
            partner = own.filter(prompt=response.prompt, sample_index=0).first()
            priority = 0
        else:
            continue
        if partner is None:
            continue
        created += ensure_comparison_task(
            project=project, first=response, second=partner, priority=priority
        )
    return created
