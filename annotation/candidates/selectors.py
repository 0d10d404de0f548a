"""Which replies become comparison tasks, by the project's candidate policy.

When a model version has answered the project's prompts, each of its replies is paired
with one partner reply to the same prompt: the newest reply of another author (a model
version that is not retired in the project, or a person). The policy picks the partner:

- ``newest_vs_incumbent``: the incumbent's reply (the policy promoted last among those
  serving in the project: states are per project, models_registry/selectors.py); the
  incumbent itself is paired with the newest other version (never an intermediate stage
  of a run, such as the SFT before DPO, unless an admin released it). Where the chosen
  author did not answer the prompt, the newest other author's reply stands in.
- ``round_robin``: the author this version has been compared with least in the project
  so far, so every pair of versions gets about the same number of tasks.
- ``active``: the reply the latest reward model that is not retired scores closest to
  this version's reply, i.e. the pair it is least sure about (Bradley-Terry probability
  nearest 1/2); the task gets a higher priority the closer that probability is to 1/2.
  Without a reward model, round-robin is used.

A version that is the prompt's only author is paired with its own second sample, if any.

These are the reads (which pairs to make); services.py stores them as comparison tasks.
The reads of generation jobs (what a job still has to write, its preview) are at the end.
"""

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from django.db.models import Count, Q

from annotation.candidates.models import GenerationJob
from annotation.models import CandidatePolicy, Project, Prompt, Response, Task, TaskKind
from config import jobs
from config.errors import ServiceError
from models_registry import selectors as registry_selectors
from models_registry.models import ModelVersion

Score = Callable[[list[list[dict]], list[str]], list[float]]
PERSON = "person:"
# An AI judge's revision of a reply (annotation/judges/revision.py) is already paired with
# the reply it revises; it never enters comparison tasks.
REVISION_KEY = "revision_of"


def _author(response: Response) -> str:
    return str(response.model_version_id) if response.model_version_id else PERSON + response.author


def _other_replies(project: Project, model_version):
    """Replies a reply of ``model_version`` may be paired with in ``project``: another
    author's (a person or a version not retired in the project), revisions left out."""
    return (
        Response.objects.alive()
        .exclude(model_version=model_version)
        .exclude(generation_params__has_key=REVISION_KEY)
        .exclude(model_version__in=registry_selectors.retired_in(project=project))
    )


def prompts_with_partners(*, project: Project, model_version) -> set[int]:
    """Ids of the project's pool prompts that another author answered: there a reply of
    ``model_version`` is paired with another author's; elsewhere only with its own first
    sample."""
    return set(
        _other_replies(project, model_version)
        .filter(prompt__in=Prompt.objects.labeling().alive().filter(project=project))
        .values_list("prompt_id", flat=True)
        .distinct()
    )


def _partners(project: Project, response: Response, model_version) -> dict[str, Response]:
    """The newest reply of every other author of the prompt (versions retired in
    ``project`` left out)."""
    others = (
        _other_replies(project, model_version)
        .filter(prompt=response.prompt)
        .order_by("-created_at", "-id")
    )
    partners: dict[str, Response] = {}
    for other in others:
        partners.setdefault(_author(other), other)
    return partners


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
        champion = registry_selectors.incumbent(project=project)
        if champion is not None and champion.pk == model_version.pk:
            champion = (
                registry_selectors.servable_versions(project=project, kind=ModelVersion.Kind.POLICY)
                .exclude(pk=model_version.pk)
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


def _own_replies(project: Project, model_version):
    """The version's replies in the project's labeling pool that comparison tasks pair."""
    return (
        Response.objects.labeling()
        .alive()
        .filter(prompt__project=project, model_version=model_version)
        .exclude(generation_params__has_key=REVISION_KEY)
    )


def _unpaired(project: Project, own):
    """Those of ``own`` that are in no comparison task yet."""
    in_tasks = Task.objects.filter(project=project, kind=TaskKind.COMPARISON).filter(
        responses__in=own
    )
    return own.exclude(pk__in=in_tasks.values("responses"))


def _pairing(prompt_id: int, sample_index: int, *, partnered: set, firsts: set) -> str | None:
    """With whom a reply not yet in a comparison task is paired: ``"other"`` (another
    author of its prompt, chosen by the candidate policy), ``"own"`` (the version's first
    sample of the prompt) or None (nobody yet)."""
    if prompt_id in partnered:
        return "other"
    if sample_index > 0 and prompt_id in firsts:
        return "own"
    return None


def _firsts(own) -> set[int]:
    return set(own.filter(sample_index=0).values_list("prompt_id", flat=True))


def comparison_tasks_expected(
    *, project: Project, model_version, new_replies: Mapping[int, Iterable[int]] | None = None
) -> int:
    """How many comparison tasks ``ensure_comparison_tasks`` would create for
    ``model_version`` once ``new_replies`` ({prompt id: sample indexes}, not stored yet)
    are: by the same rules, so a generation job's preview says what the job will do."""
    own = _own_replies(project, model_version)
    slots = list(_unpaired(project, own).values_list("prompt_id", "sample_index"))
    firsts = _firsts(own)
    for prompt_id, indexes in (new_replies or {}).items():
        indexes = list(indexes)
        slots += [(prompt_id, index) for index in indexes]
        if 0 in indexes:
            firsts.add(prompt_id)
    partnered = prompts_with_partners(project=project, model_version=model_version)
    return sum(
        1
        for prompt_id, index in set(slots)
        if _pairing(prompt_id, index, partnered=partnered, firsts=firsts)
    )


def pending_comparison_pairs(
    *, project: Project, model_version, score: Score | None = None
) -> Iterator[tuple[Response, Response, int]]:
    """(reply, partner, priority) for every reply of ``model_version`` in the project's
    labeling pool that is in no comparison task yet and has a partner, the partner chosen
    by the project's candidate policy (``score``: the latest reward model, needed by the
    active policy). Lazy: a caller that stores each pair before asking for the next keeps
    the round-robin counts right, as the picker counts the pairs it hands out."""
    own = _own_replies(project, model_version)
    partnered = prompts_with_partners(project=project, model_version=model_version)
    firsts = _firsts(own)
    picker = _Picker(project, model_version, score)
    unpaired = _unpaired(project, own).select_related("prompt")
    for response in unpaired.order_by("prompt_id", "sample_index"):
        pairing = _pairing(
            response.prompt_id, response.sample_index, partnered=partnered, firsts=firsts
        )
        if pairing == "other":
            partner, priority = picker.pick(response, _partners(project, response, model_version))
        elif pairing == "own":
            partner, priority = own.get(prompt=response.prompt, sample_index=0), 0
        else:
            continue
        yield response, partner, priority


def candidate_counts_by_version(*, project: Project) -> dict[int, int]:
    """How many replies each model version gave to the project's labeling prompts."""
    rows = (
        Prompt.objects.labeling()
        .filter(project=project)
        .values("responses__model_version")
        .annotate(n=Count("responses", filter=Q(responses__isnull=False)))
    )
    return {row["responses__model_version"]: row["n"] for row in rows if row["n"]}


# --- generation jobs: what a job writes and the comparison tasks it makes ---------------

PAIR = 2  # replies a comparison task shows
MAX_SAMPLES_PER_PROMPT = 8


def generation_jobs(*, project: Project, limit: int = 10):
    return (
        GenerationJob.objects.filter(project=project)
        .select_related("model_version", "reward_version")
        .order_by("-created_at")[:limit]
    )


def with_outlook(job_list) -> list[GenerationJob]:
    """The jobs, each with its ``outlook`` (only active ones cost queries)."""
    job_list = list(job_list)
    for job in job_list:
        job.outlook = generation_job_outlook(job)
    return job_list


def generation_job_outlook(job: GenerationJob) -> dict:
    """Its place in line and time left (config.jobs.job_outlook) among every project's
    generation jobs: they share the gpu worker (nothing, and no query, for one that ended)."""
    return jobs.job_outlook(job)


@dataclass(frozen=True)
class GenerationPreview:
    """What a generation job would do if it ran now: the replies it writes, by prompt
    id (the sample indexes still missing), and how many comparison tasks it creates."""

    samples_per_prompt: int | None  # None: each prompt as many as its pairs need
    replies_by_prompt: dict[int, list[int]]
    comparison_tasks: int

    @property
    def replies(self) -> int:
        return sum(len(indexes) for indexes in self.replies_by_prompt.values())

    @property
    def prompts(self) -> int:
        return len(self.replies_by_prompt)


def samples_wanted(
    *, project: Project, model_version, samples_per_prompt: int | None = None
) -> dict:
    """How many samples of ``model_version`` each pool prompt of the project should hold:
    ``samples_per_prompt`` if the admin chose it, otherwise as many as the prompt's
    comparisons need: one where another author's answer is there to pair it with, two
    where there is none (the version's two samples make the pair)."""
    prompt_ids = (
        Prompt.objects.labeling()
        .alive()
        .filter(project=project)
        .order_by("id")
        .values_list("id", flat=True)
    )
    if samples_per_prompt:
        return {prompt_id: samples_per_prompt for prompt_id in prompt_ids}
    partnered = prompts_with_partners(project=project, model_version=model_version)
    return {prompt_id: 1 if prompt_id in partnered else PAIR for prompt_id in prompt_ids}


def missing_samples(
    *, project: Project, model_version, samples_per_prompt: int | None = None
) -> dict[int, list[int]]:
    """The samples a generation job still has to write, ``{prompt id: sample indexes}``:
    those wanted (``samples_wanted``) that the version has not stored yet. A job computes
    this when it starts, so a resumed job writes only what is missing."""
    wanted = samples_wanted(
        project=project, model_version=model_version, samples_per_prompt=samples_per_prompt
    )
    stored = set(
        Response.objects.filter(prompt__project=project, model_version=model_version).values_list(
            "prompt_id", "sample_index"
        )
    )
    missing = {
        prompt_id: [index for index in range(count) if (prompt_id, index) not in stored]
        for prompt_id, count in wanted.items()
    }
    return {prompt_id: indexes for prompt_id, indexes in missing.items() if indexes}


def check_generation(
    *, project: Project, model_version, samples_per_prompt: int | None = None
) -> None:
    """ServiceError unless ``model_version`` can generate for the project's prompts."""
    if model_version.kind != ModelVersion.Kind.POLICY:
        raise ServiceError("Only policy models generate candidates.")
    if samples_per_prompt is not None and not 1 <= samples_per_prompt <= MAX_SAMPLES_PER_PROMPT:
        raise ServiceError(f"samples_per_prompt must be between 1 and {MAX_SAMPLES_PER_PROMPT}.")
    if not Prompt.objects.labeling().alive().filter(project=project).exists():
        raise ServiceError("The project has no prompts yet: import some first.")


def generation_preview(
    *, project: Project, model_version, samples_per_prompt: int | None = None
) -> GenerationPreview:
    """What a generation job of ``model_version`` would write and pair if it started now,
    counted by the functions the job itself runs (``missing_samples``, then the pairing
    rules above). ServiceError where the job would be refused."""
    check_generation(
        project=project, model_version=model_version, samples_per_prompt=samples_per_prompt
    )
    missing = missing_samples(
        project=project, model_version=model_version, samples_per_prompt=samples_per_prompt
    )
    tasks = comparison_tasks_expected(
        project=project, model_version=model_version, new_replies=missing
    )
    return GenerationPreview(
        samples_per_prompt=samples_per_prompt or None,
        replies_by_prompt=missing,
        comparison_tasks=tasks,
    )
