"""Writes of the training app: snapshots, runs, and the bridge to training/methods.

A run goes queued -> running -> succeeded | failed | cancelled. The worker claims it with
a row lock, reports every optimizer step (which is also its heartbeat), writes
checkpoints, and on success publishes the artifact, evaluates it against its parent and
registers it as a model version. A run whose worker stopped reporting is failed with the
reason; a failed or cancelled run with a checkpoint can be resumed from it. Claim,
heartbeat, log, cancel and the stale sweep are the shared lifecycle of config/jobs.py.
"""

import dataclasses
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotation.candidates.models import GenerationJob
from annotation.candidates.services import generation_job_execute, generation_job_start
from annotation.datasets import writers
from annotation.datasets.selectors import (
    ANALYSIS_KEYS,
    DEFAULT_RATING_THRESHOLD,
    AiSelection,
    jsonl_lines,
    kto_rows,
    rrhf_candidate_rows,
    rrhf_rows,
    sft_rows,
    training_preference_rows,
)
from annotation.datasets.versions import find_version
from annotation.judges.trust import ai_choice, ai_label_plan
from annotation.models import DatasetVersion, Project, Prompt
from config import jobs
from config.celery import QueueUnavailable, enqueue_after_commit
from config.errors import ServiceError
from models_registry import selectors as registry_selectors
from models_registry.models import ModelVersion
from models_registry.services import ensure_full_weights, model_version_register, reward_scorer
from training import selectors
from training.methods.common import TrainingCancelled, checkpoint_step
from training.methods.launch import Devices, check_launch, train_in_processes
from training.models import DatasetSnapshot, TrainingRun, TrainingStep
from training.specs import METHODS, MethodSpec, check_runtime_settings, method_spec

logger = logging.getLogger(__name__)

DATASETS = ("sft", "preferences", "prompts", "unpaired", "rankings")
EVAL_MAX_PROMPTS = 32


# --- Snapshots ------------------------------------------------------------------------


def _clean_filters(dataset: str, filters: dict | None) -> dict:
    filters = dict(filters or {})
    allowed = {
        "sft": {"include_chosen", "ai"},
        "preferences": {"min_margin", "ai"},
        "prompts": set(),
        "unpaired": {"rating_threshold", "ai"},
        "rankings": {"ai", "scores"},
    }
    unknown = sorted(set(filters) - allowed[dataset])
    if unknown:
        raise ServiceError(f"Unknown filter(s) for {dataset} data: {', '.join(unknown)}.")
    if "include_chosen" in filters and not isinstance(filters["include_chosen"], bool):
        raise ServiceError("include_chosen must be true or false.")
    margin = filters.get("min_margin")
    if margin is not None and (
        isinstance(margin, bool) or not isinstance(margin, int | float) or margin < 0
    ):
        raise ServiceError("min_margin must be a number >= 0.")
    if dataset == "unpaired":
        threshold = filters.get("rating_threshold", DEFAULT_RATING_THRESHOLD)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise ServiceError("rating_threshold must be a number from 1 to 7.")
        if not 1 <= threshold <= 7:
            raise ServiceError("rating_threshold must be a number from 1 to 7.")
        filters["rating_threshold"] = float(threshold)  # recorded even when left out
    if "scores" in filters and filters["scores"] not in RANKING_SCORES:
        raise ServiceError(f"scores must be one of {', '.join(RANKING_SCORES)}.")
    return {key: value for key, value in filters.items() if value not in (None, False)}


# Who scores RRHF's responses: people (rrhf_rows) or, at train time, the run's reward
# model (rrhf_candidate_rows: every response of a prompt, unscored). Left out: people.
RANKING_SCORES = ("people", "reward-model")

PROVENANCE = ("source", "judge", "constitution", "principle", *ANALYSIS_KEYS)
AI_DATASETS = ("sft", "preferences", "unpaired", "rankings")
# Snapshots recorded before the ai choice was written down always, with "ai" absent, were
# made with every AI label: "include" was the default then and left unrecorded.
LEGACY_AI = "include"


def with_ai_choice(*, project: Project, dataset: str | None, filters: dict | None) -> dict:
    """The filters with the ai choice written out (the project's setting when they name
    none), for the datasets that hold labels; others' filters unchanged."""
    filters = dict(filters or {})
    if dataset in AI_DATASETS:
        filters["ai"] = ai_choice(project=project, ai=filters.get("ai"))
    return filters


def _dataset_rows(project: Project, dataset: str, filters: dict, ai: AiSelection | None = None):
    if dataset == "sft":
        yield from sft_rows(project, ai=ai)
        if filters.get("include_chosen"):
            for row in training_preference_rows(project, ai=ai):
                yield {
                    "prompt": row["prompt"],
                    "completion": row["chosen"],
                    **{key: row[key] for key in PROVENANCE},
                }
    elif dataset == "preferences":
        minimum = filters.get("min_margin")
        for row in training_preference_rows(project, ai=ai):
            if minimum is None or (row.get("margin") or 0) >= minimum:
                yield row
    elif dataset == "unpaired":
        yield from kto_rows(project, ai=ai, rating_threshold=filters.get("rating_threshold"))
    elif dataset == "rankings" and filters.get("scores") == "reward-model":
        yield from rrhf_candidate_rows(project, ai=ai)
    elif dataset == "rankings":
        yield from rrhf_rows(project, ai=ai)
    else:
        prompts = Prompt.objects.labeling().alive().filter(project=project).order_by("id")
        for prompt in prompts.iterator(chunk_size=1000):
            yield {"prompt": prompt.as_conversation()}


def snapshot_create(
    *, project: Project, dataset: str = "preferences", filters: dict | None = None
) -> DatasetSnapshot:
    """Freeze the project's current training rows into a content-addressed file.

    ``dataset`` is ``sft`` (demonstrations; ``include_chosen`` adds the chosen reply of
    every preference pair), ``preferences`` (comparison and ranking pairs with margin and
    agreement; ``min_margin`` drops weak ones), ``prompts`` (for PPO and RAFT),
    ``unpaired`` (KTO: single replies labelled desirable or not, from ratings against
    ``rating_threshold``, default 5 of 7, comparisons and rankings; see ``kto_rows``) or
    ``rankings`` (RRHF: each prompt's responses with scores from rankings, comparisons or
    ratings, its demonstrations the best; see ``rrhf_rows``; with ``scores``
    "reward-model", every response of each prompt unscored, for the run's reward model to
    score: ``rrhf_candidate_rows``). For sft
    and preferences, ``ai`` is ``exclude`` (people's labels only), ``trusted`` (and the AI
    labels of judges that clear the project's agreement threshold), ``include`` (every AI
    label) or ``only`` (AI labels only); left out, the project's setting
    (annotation/judges/trust.py). Every row carries its source (annotation/datasets/). The
    recorded filters always say the ai choice and, unless AI labels were left out, which
    judges' labels went in (``ai_judges``; for ``trusted`` also ``ai_threshold``). The same
    rows give the same snapshot row.
    """
    if dataset not in DATASETS:
        raise ServiceError(f"Unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}.")
    filters = _clean_filters(dataset, filters)
    ai = None
    if dataset in AI_DATASETS:
        ai = AiSelection(ai_choice(project=project, ai=filters.get("ai")))
        filters["ai"] = ai.ai
        if ai.ai != "exclude":  # reads the agreement report: whose labels go in
            plan = ai_label_plan(project=project, ai=ai.ai)
            ai = AiSelection(plan.ai, plan.trusted_keys)
            filters.update(plan.recorded())
    return _stored_snapshot(
        project=project,
        dataset=dataset,
        rows=_dataset_rows(project, dataset, filters, ai),
        filters=filters,
    )


def _stored_snapshot(*, project: Project, dataset: str, rows, filters: dict) -> DatasetSnapshot:
    """Write ``rows`` as JSONL named by its sha256; the same rows give the same row."""
    settings.SNAPSHOTS_DIR.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    row_count = 0
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=settings.SNAPSHOTS_DIR, suffix=".part", delete=False
    ) as handle:
        for line in jsonl_lines(rows):
            handle.write(line)
            digest.update(line.encode("utf-8"))
            row_count += 1
    content_hash = digest.hexdigest()
    final_path = settings.SNAPSHOTS_DIR / f"{project.slug}-{dataset}-{content_hash[:16]}.jsonl"
    os.replace(handle.name, final_path)
    snapshot, _ = DatasetSnapshot.objects.get_or_create(
        project=project,
        format=dataset,
        content_hash=content_hash,
        defaults={"path": str(final_path), "row_count": row_count, "filters": filters},
    )
    return snapshot


# --- Snapshots from dataset versions --------------------------------------------------

# The export format (annotation/datasets/writers.py) each training dataset is made from; the
# version kinds that can give it are those whose FORMATS_OF_KIND hold that format.
VERSION_FORMATS = {
    "sft": "sft",
    "preferences": "dpo",
    "unpaired": "kto",
    "prompts": "prompt",
    "rankings": "ranking",
}


def version_kinds(dataset: str) -> tuple[str, ...]:
    """The dataset version kinds whose rows can fill ``dataset``."""
    fmt = VERSION_FORMATS[dataset]
    return tuple(kind for kind, formats in writers.FORMATS_OF_KIND.items() if fmt in formats)


def version_label(version: DatasetVersion) -> str:
    return f"{version.name}@{version.number}"


def dataset_version_of(
    *, project: Project, dataset_version: DatasetVersion | str | None
) -> DatasetVersion | None:
    """The version a run names, as a row or a ``name@N`` label (``name``: its newest);
    another project's version is refused as if it did not exist."""
    if dataset_version is None or dataset_version == "":
        return None
    if isinstance(dataset_version, str):
        return find_version(project, dataset_version)
    if dataset_version.project_id != project.pk:
        raise ServiceError(
            f"No dataset version {version_label(dataset_version)!r} in project {project.slug}."
        )
    return dataset_version


def check_version_feeds(version: DatasetVersion, dataset: str) -> None:
    """ServiceError unless the version's kind can fill ``dataset``, naming the kinds that can."""
    kinds = version_kinds(dataset)
    if version.kind not in kinds:
        methods = " and ".join(spec.label for spec in METHODS.values() if spec.dataset == dataset)
        raise ServiceError(
            f"Dataset version {version_label(version)} holds {version.kind} rows; {methods} "
            f"train on a version of kind {' or '.join(kinds)}."
        )


def _ranked(row: dict, scored_by_reward_model: bool) -> dict | None:
    """An RRHF row from a ranking export row, or None when it gives nothing to rank. A
    version without scores lists its responses best first: they score k - position, as a
    labeler's ranking does (annotation.datasets.selectors.rrhf_rows); a text met twice
    keeps its higher score."""
    responses = row["responses"]
    if scored_by_reward_model:
        if len(set(responses)) < 2:
            return None
        return {**row, "scores": None, "scored_by": "reward-model"}
    scores = row["scores"] or [float(len(responses) - place) for place in range(len(responses))]
    by_text: dict[str, float] = {}
    for text, score in zip(responses, scores, strict=True):
        by_text[text] = max(score, by_text.get(text, score))
    if len(set(by_text.values())) < 2:
        return None
    ordered = sorted(by_text.items(), key=lambda item: -item[1])
    scored_by = "scores" if row["scores"] else "order"
    return {
        **row,
        "responses": [text for text, _ in ordered],
        "scores": [score for _, score in ordered],
        "scored_by": scored_by,
    }


def _version_dataset_rows(version: DatasetVersion, dataset: str, *, scores: str):
    rows = writers.export_rows(
        writers.read_version_rows(version.path), VERSION_FORMATS[dataset], conversational=True
    )
    for row in rows:
        if dataset == "preferences":  # what the comparison rows carry; a version has neither
            yield {**row, "margin": None, "agreement": None}
        elif dataset == "rankings":
            ranked = _ranked(row, scored_by_reward_model=scores == "reward-model")
            if ranked is not None:
                yield ranked
        else:
            yield row


def snapshot_from_version(
    *, project: Project, version: DatasetVersion, dataset: str, scores: str = "people"
) -> DatasetSnapshot:
    """Freeze a dataset version's rows into the snapshot form ``dataset`` needs: sft ->
    TRL messages rows (a preference version gives its best responses), preferences -> DPO
    pairs (margin and agreement null), unpaired -> KTO rows, prompts -> each prompt once,
    rankings -> RRHF's scored responses (``scores`` "reward-model": unscored, for the run's
    reward model). Written and content-hashed as ``snapshot_create`` does; the filters
    record the version (``name@N``) and its hash. Raises ServiceError for another
    project's version or a kind that cannot fill ``dataset``; nothing is stored then."""
    if dataset not in VERSION_FORMATS:
        raise ServiceError(f"Unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}.")
    if scores not in RANKING_SCORES:
        raise ServiceError(f"scores must be one of {', '.join(RANKING_SCORES)}.")
    version = dataset_version_of(project=project, dataset_version=version)
    check_version_feeds(version, dataset)
    filters = {"dataset_version": version_label(version), "version_hash": version.content_hash}
    if dataset == "rankings" and scores == "reward-model":
        filters["scores"] = scores
    return _stored_snapshot(
        project=project,
        dataset=dataset,
        rows=_version_dataset_rows(version, dataset, scores=scores),
        filters=filters,
    )


# --- Starting, cancelling, resuming ---------------------------------------------------

EMPTY_DATASET = {
    "sft": "There are no demonstrations to train on yet (tick 'include chosen replies' to "
    "train on the winners of comparisons).",
    "preferences": "There are no decisive comparisons to train on yet (ties and both-bad "
    "are left out).",
    "prompts": "The project has no prompts yet: import some first.",
    "unpaired": "There is no feedback to train KTO on yet: it needs rated replies, "
    "comparisons with a winner (or both bad) or rankings.",
    "rankings": "There is nothing to rank yet: RRHF needs a prompt with at least two "
    "differently scored responses (a ranking, decisive comparisons or ratings of "
    "different replies).",
}
EMPTY_CANDIDATES = (
    "There is nothing to rank yet: RRHF scored by a reward model needs a prompt with at "
    "least two different responses (candidates of model versions, imported responses or "
    "demonstrations)."
)


def _check_versions(spec: MethodSpec, *, project, base_version, reward_version, mix_with) -> None:
    registry_selectors.check_in_sight(project, base_version, reward_version, mix_with)
    if base_version.kind != ModelVersion.Kind.POLICY:
        raise ServiceError(f"{spec.label} starts from a policy; pick a policy as the base.")
    if spec.needs_reward_model:
        if reward_version is None:
            raise ServiceError(f"{spec.label} needs a reward model: train one first.")
        if reward_version.kind != ModelVersion.Kind.REWARD:
            raise ServiceError(f"{reward_version} is not a reward model.")
    optional = spec.optional_reward_model and reward_version is not None
    if optional and reward_version.kind != ModelVersion.Kind.REWARD:
        raise ServiceError(f"{reward_version} is not a reward model.")
    if spec.mixes_two_versions:
        if mix_with is None or mix_with.pk == base_version.pk:
            raise ServiceError("A soup mixes two different versions: pick the second one.")
        for version in (base_version, mix_with):
            if not version.adapter_path:
                raise ServiceError(f"{version} has no LoRA adapter to mix.")
        if base_version.base_path != mix_with.base_path:
            raise ServiceError("Both versions of a soup must be trained from the same base.")


def training_run_start(
    *,
    project: Project,
    base_version: ModelVersion,
    method: str = "dpo",
    config: dict | None = None,
    filters: dict | None = None,
    reward_version: ModelVersion | None = None,
    mix_with: ModelVersion | None = None,
    user=None,
    queue: bool = True,
    sft_first: bool = False,
    previous: TrainingRun | None = None,
    follow_up: dict | None = None,
    processes: int | None = None,
    strategy: str = "ddp",
    dataset_version: DatasetVersion | str | None = None,
) -> TrainingRun:
    """Validate, snapshot the data and queue a run on the gpu queue; nothing is stored
    when anything is wrong. ``queue=False`` leaves the run queued for the caller to
    execute itself (the ``train --now`` command).

    ``dataset_version`` (a version or its ``name@N`` label) trains on that version's rows
    (``snapshot_from_version``) instead of the project's current judgments; the filters,
    which choose among judgments, are refused with it (RRHF's ``scores`` aside).

    ``sft_first`` (DPO) queues an SFT run on the chosen replies instead, whose success
    starts the DPO run from the SFT model (off by default: with its NLL term on chosen, DPO
    alone moved held-out answers as far in two thirds of the time, bench/behaviour_shift.py).
    Both stages train with the settings they share (``sft_stage_config``: learning rate,
    epochs, max_steps, batch size, lengths, LoRA, seed...); beta, loss type and the NLL
    weight are DPO's alone. The SFT model is registered as an intermediate version.
    """
    try:
        spec = method_spec(method)
        method_config = spec.config_from(config or {})
        check_runtime_settings(spec, method_config)
    except (TypeError, ValueError) as error:
        raise ServiceError(f"Bad training config: {error}") from None
    scored_by_reward_model = spec.optional_reward_model and reward_version is not None
    processes = training_layout(
        spec,
        method_config,
        processes=processes,
        strategy=strategy,
        scored_by_reward_model=scored_by_reward_model,
    )
    version = _run_dataset_version(
        spec, project=project, dataset_version=dataset_version, filters=filters
    )
    _check_versions(
        spec,
        project=project,
        base_version=base_version,
        reward_version=reward_version,
        mix_with=mix_with,
    )
    # Written out now, so that an SFT stage and the follow-up it starts use the same choice
    # even if the project's setting changes in between.
    if version is None:
        filters = with_ai_choice(project=project, dataset=spec.dataset, filters=filters)
    else:
        filters = dict(filters or {})
    if spec.optional_reward_model:
        filters = _reward_scores_filter(spec, filters, scored_by_reward_model)
    if sft_first:
        return _start_sft_stage(
            project=project,
            base_version=base_version,
            spec=spec,
            method_config=method_config,
            filters=filters,
            user=user,
            queue=queue,
            processes=processes,
            strategy=strategy,
            version=version,
        )
    snapshot = None
    if spec.dataset is not None:
        snapshot = _run_snapshot(
            project=project, dataset=spec.dataset, filters=filters, version=version
        )
        if snapshot.row_count == 0:
            raise ServiceError(_empty_message(spec, version, scored_by_reward_model))
    with transaction.atomic():
        run = TrainingRun.objects.create(
            project=project,
            method=spec.method,
            base_version=base_version,
            reward_version=reward_version
            if spec.needs_reward_model or scored_by_reward_model
            else None,
            mix_with=mix_with if spec.mixes_two_versions else None,
            snapshot=snapshot,
            dataset_version=version,
            config=method_config.to_dict(),
            seed=getattr(method_config, "seed", 0),
            created_by=user,
            follow_up=follow_up or {},
            previous=previous,
            processes=processes,
            strategy=strategy,
        )
        if queue:
            _enqueue(run)
    return run


def _run_dataset_version(
    spec: MethodSpec, *, project: Project, dataset_version, filters: dict | None
) -> DatasetVersion | None:
    version = dataset_version_of(project=project, dataset_version=dataset_version)
    if version is None:
        return None
    if spec.dataset is None:
        raise ServiceError(f"{spec.label} trains on no data: leave the dataset version out.")
    check_version_feeds(version, spec.dataset)
    judgment_filters = sorted(set(filters or {}) - {"scores"})
    if judgment_filters:
        raise ServiceError(
            f"Filters ({', '.join(judgment_filters)}) choose among the project's judgments; "
            f"dataset version {version_label(version)} holds the rows its recipe kept: "
            "leave them out."
        )
    return version


def _run_snapshot(
    *, project: Project, dataset: str, filters: dict, version: DatasetVersion | None
) -> DatasetSnapshot:
    if version is None:
        return snapshot_create(project=project, dataset=dataset, filters=filters)
    return snapshot_from_version(
        project=project, version=version, dataset=dataset, scores=filters.get("scores", "people")
    )


def _empty_message(
    spec: MethodSpec, version: DatasetVersion | None, scored_by_reward_model: bool = False
) -> str:
    if version is None:
        return EMPTY_CANDIDATES if scored_by_reward_model else EMPTY_DATASET[spec.dataset]
    return (
        f"Dataset version {version_label(version)} gives no {spec.dataset} rows for "
        f"{spec.label}: its pairs are ties or its prompts have fewer than two differently "
        "scored responses."
    )


def _reward_scores_filter(spec: MethodSpec, filters: dict, scored_by_reward_model: bool) -> dict:
    """The ``scores`` filter of a method whose reward model is optional (RRHF): set to
    "reward-model" when the run has one; asking for either without the other is refused."""
    asked = filters.get("scores")
    if scored_by_reward_model:
        if asked not in (None, "reward-model"):
            raise ServiceError(
                f"A reward model scores {spec.label}'s responses: leave the scores filter out "
                "or set it to reward-model."
            )
        return {**filters, "scores": "reward-model"}
    if asked == "reward-model":
        raise ServiceError(f"scores reward-model needs a reward model: pick one for {spec.label}.")
    return filters


def training_devices() -> Devices:
    """The training worker's devices: ``TRAINING_DEVICES`` when it runs elsewhere, else
    this machine's."""
    text = settings.TRAINING_DEVICES
    if not text:
        return Devices.detect()
    try:
        return Devices.parse(text)
    except ValueError as error:
        raise ServiceError(f"The TRAINING_DEVICES setting is wrong: {error}") from None


def training_layout(
    spec: MethodSpec,
    method_config,
    *,
    processes: int | None,
    strategy: str,
    scored_by_reward_model: bool = False,
) -> int:
    """The number of processes a run gets (``None``: every GPU of the training worker for a
    method that can use several, else 1); raises ``ServiceError`` for a layout the worker
    cannot run (more processes than devices, FSDP without 2 GPUs, QLoRA without CUDA...).
    A run scored by a reward model (RRHF with one) trains in one process: the launcher
    cannot pass a score function to its processes."""
    devices = training_devices()
    if scored_by_reward_model:
        if processes is not None and processes > 1:
            raise ServiceError(
                f"Bad training layout: {spec.label} scored by a reward model trains in one process."
            )
        processes = 1
    if processes is None:
        processes = devices.default_processes() if spec.distributable else 1
    try:
        check_launch(
            processes=processes,
            strategy=strategy,
            qlora=bool(getattr(method_config, "qlora", False)),
            distributable=spec.distributable,
            devices=devices,
            precision=getattr(method_config, "mixed_precision", "auto"),
        )
    except ValueError as error:
        raise ServiceError(f"Bad training layout: {error}") from None
    return processes


SFT_FIRST_METHODS = {"dpo"}


def _start_sft_stage(
    *,
    project,
    base_version,
    spec: MethodSpec,
    method_config,
    filters,
    user,
    queue,
    processes: int,
    strategy: str,
    version: DatasetVersion | None = None,
) -> TrainingRun:
    """The SFT stage on the chosen replies (a version's: its best responses)."""
    if spec.method not in SFT_FIRST_METHODS:
        raise ServiceError(f"An SFT stage first is offered for {', '.join(SFT_FIRST_METHODS)}.")
    # Check the preference data now, not when the SFT stage is over.
    checked = _run_snapshot(project=project, dataset=spec.dataset, filters=filters, version=version)
    if checked.row_count == 0:
        raise ServiceError(_empty_message(spec, version))
    follow_up = {
        "method": spec.method,
        "config": method_config.to_dict(),
        "filters": filters or {},
        "processes": processes,
        "strategy": strategy,
    }
    if version is not None:
        follow_up["dataset_version"] = version_label(version)
    return training_run_start(
        project=project,
        base_version=base_version,
        method="sft",
        config=sft_stage_config(method_config),
        filters={} if version else {"include_chosen": True, "ai": filters["ai"]},
        user=user,
        queue=queue,
        follow_up=follow_up,
        processes=processes,
        strategy=strategy,
        dataset_version=version,
    )


def sft_stage_settings() -> set[str]:
    """The config fields an SFT stage takes from its run (those SFT has: learning rate,
    epochs, max_steps, batch size, lengths, LoRA, seed, warmup, held-out share...)."""
    return {field.name for field in dataclasses.fields(method_spec("sft").config_class())}


def sft_stage_config(method_config) -> dict:
    """The SFT stage's config: every setting of ``method_config`` that SFT has too, so
    what was asked for the run (max_steps, say) holds for both stages."""
    shared = sft_stage_settings()
    return {name: value for name, value in method_config.to_dict().items() if name in shared}


def _start_follow_up(run: TrainingRun, version: ModelVersion, *, queue: bool) -> None:
    plan = run.follow_up
    filters = dict(plan.get("filters") or {})
    if method_spec(plan["method"]).dataset in AI_DATASETS and not plan.get("dataset_version"):
        # A plan stored before the ai choice was written out meant the old default.
        filters.setdefault("ai", LEGACY_AI)
    try:
        follow_up = training_run_start(
            project=run.project,
            base_version=version,
            method=plan["method"],
            config=plan["config"],
            filters=filters,
            user=run.created_by,
            queue=queue,
            previous=run,
            processes=plan.get("processes", 1),  # plans stored before layouts: one process
            strategy=plan.get("strategy", "ddp"),
            dataset_version=plan.get("dataset_version"),
        )
    except (ServiceError, QueueUnavailable) as error:
        _append_log(
            run.pk,
            f"could not start the follow-up {plan['method']} run: {error} ({version.name} stays "
            "an intermediate version: release it on its page to use it)",
        )
    else:
        _append_log(run.pk, f"started the follow-up {plan['method']} run #{follow_up.pk}")


def _start_generation(run: TrainingRun, version: ModelVersion, *, queue: bool) -> None:
    try:
        job = generation_job_start(project=run.project, model_version=version, queue=queue)
    except (ServiceError, QueueUnavailable) as error:
        _append_log(run.pk, f"no candidates from {version.name}: {error}")
    else:
        _append_log(run.pk, f"generation job #{job.pk} makes candidates from {version.name}")


def _enqueue(run: TrainingRun) -> None:
    from training.tasks import training_run_execute_task

    enqueue_after_commit(
        training_run_execute_task,
        job_id=run.pk,
        on_failure=lambda message: _run_finished(run.pk, TrainingRun.Status.FAILED, message),
    )


def training_run_cancel(*, run: TrainingRun) -> TrainingRun:
    """A queued run ends cancelled now; a running one stops at its next step."""
    try:
        return jobs.job_cancel_request(TrainingRun, run.pk)
    except jobs.JobNotActive:
        run.refresh_from_db(fields=["status"])
        raise ServiceError(f"The run has already {run.status}.") from None


def training_run_resume(*, run: TrainingRun, user=None) -> TrainingRun:
    """Queue a failed or cancelled run again; it continues from its last checkpoint."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if not run.can_resume:
            if run.status not in {TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED}:
                raise ServiceError(
                    f"Only failed or cancelled runs resume; this one is {run.status}."
                )
            raise ServiceError("The run has no checkpoint yet; start a new run instead.")
        run.status = TrainingRun.Status.QUEUED
        run.cancel_requested = False
        run.error = ""
        run.finished_at = None
        run.save(update_fields=["status", "cancel_requested", "error", "finished_at"])
        _append_log(run.pk, f"resume requested from the checkpoint at step {run.checkpoint_step}")
        _enqueue(run)
    return run


def training_runs_fail_stale(*, project: Project | None = None) -> int:
    """Fail running runs whose worker stopped reporting (died, lost its connection):
    no step or heartbeat for ``TRAINING_STALE_AFTER_SECONDS``. Returns how many."""
    return jobs.job_fail_stale(
        TrainingRun,
        after_seconds=settings.TRAINING_STALE_AFTER_SECONDS,
        on_lost=_fail_lost_run,
        **({"project": project} if project is not None else {}),
    )


def _fail_lost_run(run: TrainingRun) -> None:
    """Fail a locked run whose worker died, naming the checkpoint it can resume from
    (``config.jobs`` calls it for a silent run and for the redelivery of a lost one)."""
    # The worker may have written a checkpoint it did not live to report; on a shared
    # disk the folder says so, elsewhere the last reported one stands.
    run.checkpoint_step = max(run.checkpoint_step, checkpoint_step(checkpoint_dir(run.pk)))
    resume = (
        f"resume to continue from the checkpoint at step {run.checkpoint_step}"
        if run.checkpoint_step
        else "no checkpoint was written yet, so start it again"
    )
    message = (
        f"The worker stopped reporting at step {run.step} of {run.total_steps} "
        f"(it died or lost its connection); {resume}."
    )
    run.status = TrainingRun.Status.FAILED
    run.error = message
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "error", "finished_at", "checkpoint_step"])
    _append_log(run.pk, message)


# --- Execution (in the gpu worker) ----------------------------------------------------


def checkpoint_dir(run_id: int) -> Path:
    return settings.MODELS_DIR / "checkpoints" / f"run-{run_id}"


def _claim_run(run_id: int) -> TrainingRun | None:
    # A run is not resumable by a redelivery: a lost one is failed with its checkpoint
    # named, and an admin resumes it (training_run_resume).
    return jobs.job_claim(
        TrainingRun,
        run_id,
        stale_after=settings.TRAINING_STALE_AFTER_SECONDS,
        on_lost=_fail_lost_run,
    )


def training_run_execute(*, run_id: int, queue: bool = True) -> None:
    """Train, verify, evaluate and register; a failure leaves the run failed with the
    reason and registers nothing. Checkpoints are kept until the run succeeds.

    Then the follow-up stage starts (the DPO after an SFT stage, whose SFT model is
    registered as an intermediate version and generates nothing), or, for a final policy,
    the generation job of its candidates. ``queue=False`` (``train --now``) creates them
    without queueing them, for the caller to execute in its own process."""
    run = _claim_run(run_id)
    if run is None:
        return
    spec = method_spec(run.method)
    _append_log(run.pk, f"attempt {run.attempts} started on {_device_name()}")
    settings.MODELS_DIR.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f".run-{run.pk}-", dir=settings.MODELS_DIR))
    try:
        with _heartbeat(run.pk):
            result = _train(run, spec, work_dir)
            final_dir = _publish(run, work_dir)
            evaluation = _evaluate(run, spec, final_dir)
        version = _register(run, spec, final_dir, result, evaluation)
    except TrainingCancelled:
        shutil.rmtree(work_dir, ignore_errors=True)
        _append_log(run.pk, "cancelled")
        _run_finished(run.pk, TrainingRun.Status.CANCELLED)
        return
    except Exception as error:
        logger.exception("Training run %s failed", run.pk)
        shutil.rmtree(work_dir, ignore_errors=True)
        message = f"{type(error).__name__}: {error}"
        _append_log(run.pk, f"failed: {message}")
        _run_finished(run.pk, TrainingRun.Status.FAILED, message)
        return
    shutil.rmtree(checkpoint_dir(run.pk), ignore_errors=True)
    _append_log(run.pk, f"registered {version.name}")
    _run_finished(run.pk, TrainingRun.Status.SUCCEEDED)
    if run.follow_up:
        _start_follow_up(run, version, queue=queue)
    elif version.kind == ModelVersion.Kind.POLICY:
        _start_generation(run, version, queue=queue)


def training_chain_execute(*, run: TrainingRun) -> list[TrainingRun]:
    """Everything that follows a run, in this process (the ``train --now`` command): train
    it, then the follow-up stage it starts (the DPO after an SFT stage), then the
    generation job of the final policy's candidates; nothing is queued for a worker.
    Returns the runs of the chain in order; each ends succeeded, failed or cancelled."""
    chain = []
    next_run: TrainingRun | None = run
    while next_run is not None:
        training_run_execute(run_id=next_run.pk, queue=False)
        next_run.refresh_from_db()
        chain.append(next_run)
        next_run = next_run.follow_ups.filter(status=TrainingRun.Status.QUEUED).first()
    for job in selectors.generation_jobs_of(runs=chain).filter(status=GenerationJob.Status.QUEUED):
        generation_job_execute(job_id=job.pk)
    return chain


def _device_name() -> str:
    from training.methods.common import pick_device

    return pick_device()


def _hooks(run: TrainingRun):
    from training.methods.common import Hooks

    return Hooks(
        on_step=lambda step, total, metrics: _record_step(run.pk, step, total, metrics),
        should_stop=lambda: _cancel_requested(run.pk),
        log=lambda message: _append_log(run.pk, message),
        checkpoint_dir=checkpoint_dir(run.pk),
    )


def _train(run: TrainingRun, spec: MethodSpec, work_dir: Path):
    config = spec.config_from(run.config)
    if spec.mixes_two_versions:
        from training.methods.soups import mix_adapters

        _append_log(run.pk, f"mixing {run.base_version} ({config.weight:g}) with {run.mix_with}")
        return mix_adapters(
            Path(run.base_version.adapter_path),
            Path(run.mix_with.adapter_path),
            weight=config.weight,
            output_dir=work_dir,
        )
    base_path = ensure_full_weights(run.base_version)
    if run.processes > 1:
        return _train_in_processes(run, spec, base_path, work_dir)
    kwargs = {}
    if spec.needs_reward_model or (spec.optional_reward_model and run.reward_version):
        kwargs["score"] = reward_scorer(run.reward_version)
    return spec.train_function()(
        config,
        dataset_path=run.snapshot.path,
        base_model_path=base_path,
        output_dir=work_dir,
        hooks=_hooks(run),
        **kwargs,
    )


def _train_in_processes(run: TrainingRun, spec: MethodSpec, base_path, work_dir: Path):
    """The run under ``accelerate launch``: its ranks report through the launcher, whose
    channel folder (job, events, the processes' log) is this attempt's own."""
    channel = Path(tempfile.mkdtemp(prefix=f".launch-{run.pk}-", dir=settings.MODELS_DIR))
    try:
        result = train_in_processes(
            module=spec.module,
            method=spec.method,
            config_name=spec.config_name,
            config=run.config,
            dataset_path=run.snapshot.path,
            base_model_path=base_path,
            output_dir=work_dir,
            channel=channel,
            hooks=_hooks(run),
            processes=run.processes,
            strategy=run.strategy,
        )
    finally:
        shutil.rmtree(channel, ignore_errors=True)
    return SimpleNamespace(**result)


def _publish(run: TrainingRun, work_dir: Path) -> Path:
    final_dir = settings.MODELS_DIR / f"run-{run.pk}-{run.method}"
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.replace(work_dir, final_dir)
    return final_dir


def _evaluation_judge(run: TrainingRun) -> ModelVersion | None:
    """The run's own reward model, else the latest one not retired in its project."""
    if run.reward_version is not None:
        return run.reward_version
    return registry_selectors.latest_reward_model(project=run.project)


def _evaluation_prompts(run: TrainingRun, config) -> list:
    from training.methods.evaluation import held_out_prompts

    if run.snapshot is not None and getattr(config, "eval_fraction", 0) > 0:
        prompts = held_out_prompts(
            run.snapshot.path, eval_fraction=config.eval_fraction, seed=config.seed
        )
    else:
        project_prompts = (
            Prompt.objects.labeling().alive().filter(project=run.project).order_by("id")
        )
        prompts = [p.as_conversation() for p in project_prompts[:EVAL_MAX_PROMPTS]]
    return prompts[:EVAL_MAX_PROMPTS]


def _evaluate(run: TrainingRun, spec: MethodSpec, final_dir: Path) -> dict:
    """Win rate of the new policy against its parent on held-out prompts, judged by the
    latest reward model. A run is not failed for an evaluation that cannot run: the
    reason is recorded instead."""
    if spec.produces != "policy":
        return {}
    judge = _evaluation_judge(run)
    if judge is None:
        return {"skipped": "no reward model yet: train one to get a win rate"}
    prompts = _evaluation_prompts(run, spec.config_from(run.config))
    if not prompts:
        return {"skipped": "no held-out prompts"}
    from training.methods.evaluation import win_rate

    _append_log(run.pk, f"evaluating against {run.base_version} on {len(prompts)} prompts")
    parent = run.base_version
    candidate_base = parent.base_path if spec.mixes_two_versions else ensure_full_weights(parent)
    try:
        outcome = win_rate(
            candidate=(candidate_base, _adapter_of(final_dir)),
            parent=(parent.base_path, parent.adapter_path or None),
            prompts=prompts,
            score=reward_scorer(judge),
        )
    except Exception as error:  # the model is fine; only its report card is missing
        logger.exception("Evaluation of run %s failed", run.pk)
        return {"error": f"{type(error).__name__}: {error}"}
    report = outcome.as_dict()
    report["judge"] = judge.name
    _append_log(run.pk, f"win rate against the parent: {report['win_rate']:.2f}")
    return report


def _adapter_of(folder: Path) -> str | None:
    return str(folder) if (folder / "adapter_config.json").is_file() else None


def _register(
    run: TrainingRun, spec: MethodSpec, final_dir: Path, result, evaluation: dict
) -> ModelVersion:
    metrics = dict(getattr(result, "metrics", {}) or {})
    if "win_rate" in evaluation:
        metrics["win_rate_vs_parent"] = evaluation["win_rate"]
    TrainingRun.objects.filter(pk=run.pk).update(final_metrics=metrics, evaluation=evaluation)
    base = run.base_version
    adapter = _adapter_of(final_dir)
    if spec.mixes_two_versions:
        base_path = base.base_path
    elif adapter is None:
        base_path = str(final_dir)  # full fine-tuning: the artifact is the whole model
    else:
        base_path = ensure_full_weights(base)
    return model_version_register(
        name=f"{base.name} / {spec.label} run {run.pk}",
        kind=spec.produces,
        method=spec.method,
        base_path=base_path,
        adapter_path=adapter or "",
        parent=base,
        training_run=run,
        snapshot_hash=run.snapshot.content_hash if run.snapshot else "",
        config=run.config,
        seed=run.seed,
        library_versions=getattr(result, "library_versions", None) or {},
        metrics=metrics,
        intermediate=bool(run.follow_up),  # a stage: the follow-up run makes the final one
    )


# --- Progress -------------------------------------------------------------------------


def _run_finished(run_id: int, status: str, error: str = "") -> None:
    jobs.job_finish(TrainingRun, run_id, status, error)


def _record_step(run_id: int, step: int, total: int, metrics: dict) -> None:
    TrainingStep.objects.update_or_create(
        run_id=run_id,
        step=step,
        defaults={"loss": float(metrics.get("loss", 0.0)), "metrics": metrics},
    )
    TrainingRun.objects.filter(pk=run_id).update(
        step=step,
        total_steps=total,
        heartbeat_at=timezone.now(),
        checkpoint_step=checkpoint_step(checkpoint_dir(run_id)),
    )


def _append_log(run_id: int, message: str) -> None:
    jobs.job_log(TrainingRun, run_id, message)


def _cancel_requested(run_id: int) -> bool:
    return jobs.job_cancel_requested(TrainingRun, run_id)


def _heartbeat(run_id: int):
    """Keep ``heartbeat_at`` fresh while the worker is busy in a long phase that reports
    no steps (loading, the reference pass, evaluation)."""
    return jobs.job_heartbeat(TrainingRun, run_id, every=settings.TRAINING_HEARTBEAT_SECONDS)
