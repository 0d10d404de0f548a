"""Writes of candidates: generation jobs, which write a model version's replies to the
project's prompts, and those replies paired into comparison tasks (the rules are in
selectors.py).

Generation calls the registry (a version's generator, ``models_registry.endpoints
.generator_for``, which is its inference server or its files in this process; a reward
model's scorer) and the engine; the registry never calls back here."""

import logging
import time

from django.conf import settings
from django.db import transaction

from annotation.candidates import selectors
from annotation.candidates.models import GenerationJob
from annotation.candidates.selectors import Score, pending_comparison_pairs
from annotation.labeling.services import ensure_comparison_task
from annotation.models import CandidatePolicy, Project, Prompt, Response
from config import jobs
from config.celery import enqueue_after_commit
from config.errors import ServiceError
from models_registry import selectors as registry_selectors
from models_registry import services as registry_services
from models_registry.endpoints import generator_for
from models_registry.engine import ml
from models_registry.models import ModelVersion, StateChange

logger = logging.getLogger(__name__)


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


# --- generation jobs ------------------------------------------------------------------

MAX_BEST_OF = 16


def generation_job_start(
    *,
    project: Project,
    model_version: ModelVersion,
    user=None,
    samples_per_prompt: int | None = None,
    params: dict | None = None,
    best_of: int = 1,
    reward_version: ModelVersion | None = None,
    queue: bool = True,
) -> GenerationJob:
    """Queue candidates from ``model_version`` for the project's prompts. Each prompt gets
    ``samples_per_prompt`` samples, or by default as many as its comparisons need (two
    where no other author answered it, one otherwise: ``selectors.samples_wanted``; the
    job stores 0 for that). With ``best_of`` > 1 each candidate is the best of that many
    samples by ``reward_version`` (best-of-n serving). ``queue=False`` leaves the job
    queued for the caller to execute itself (the ``train --now`` command)."""
    samples_per_prompt = samples_per_prompt or None
    registry_selectors.check_in_sight(project, model_version, reward_version)
    selectors.check_generation(
        project=project, model_version=model_version, samples_per_prompt=samples_per_prompt
    )
    if not 1 <= best_of <= MAX_BEST_OF:
        raise ServiceError(f"best_of must be between 1 and {MAX_BEST_OF}.")
    if best_of > 1 and (reward_version is None or reward_version.kind != ModelVersion.Kind.REWARD):
        raise ServiceError("Best-of-n needs a reward model to pick the best reply.")
    try:
        generation_params = ml.GenerationParams(**(params or {}))
    except (TypeError, ValueError) as error:
        raise ServiceError(f"Bad generation parameters: {error}") from None
    with transaction.atomic():
        job = GenerationJob.objects.create(
            project=project,
            model_version=model_version,
            samples_per_prompt=samples_per_prompt or 0,
            best_of=best_of,
            reward_version=reward_version if best_of > 1 else None,
            generation_params=generation_params.as_dict(),
            created_by=user,
        )
        if queue:
            _enqueue(job)
    return job


def _enqueue(job: GenerationJob) -> None:
    from annotation.candidates.tasks import generation_job_execute_task

    enqueue_after_commit(
        generation_job_execute_task,
        job_id=job.pk,
        on_failure=lambda message: jobs.job_finish(
            GenerationJob, job.pk, GenerationJob.Status.FAILED, message
        ),
    )


def generation_job_cancel(*, job: GenerationJob) -> GenerationJob:
    """Cancel a generation job: a queued one at once, a running one before its next batch
    (the replies already stored stay and are paired). ServiceError once it has ended."""
    try:
        return jobs.job_cancel_request(GenerationJob, job.pk)
    except jobs.JobNotActive as error:
        raise ServiceError(error.message) from None


def generation_jobs_fail_stale(*, project: Project | None = None) -> int:
    """Take up running jobs whose worker stopped reporting for
    ``GENERATION_STALE_AFTER_SECONDS``: each is queued again and resumes with the replies
    still missing (failed with the reason once it has used its attempts). Returns how many."""
    filters = {"project": project} if project is not None else {}
    return jobs.job_fail_stale(
        GenerationJob,
        after_seconds=settings.GENERATION_STALE_AFTER_SECONDS,
        resume=_enqueue,
        **filters,
    )


def generation_job_execute(*, job_id: int) -> None:
    """Claim the job (once; a redelivery after a crash resumes it), write the replies its
    prompts still miss under a heartbeat, checking for a cancel before each batch, then
    pair every stored reply of the version into comparison tasks, also those a dead
    attempt or a cancelled run stored."""
    stale_after = settings.GENERATION_STALE_AFTER_SECONDS
    job = jobs.job_claim(GenerationJob, job_id, stale_after=stale_after)
    if job is None:
        return
    missing = sum(len(indexes) for indexes in _missing_samples(job).values())
    if job.attempts == 1 or not job.total:  # a first attempt, or one lost before counting
        jobs.job_progress(GenerationJob, job.pk, done=0, total=missing)
    else:  # resumed: what the dead attempt stored counts as done
        jobs.job_progress(GenerationJob, job.pk, done=max(job.total - missing, 0))
    status, error = GenerationJob.Status.SUCCEEDED, ""
    try:
        with jobs.job_heartbeat(GenerationJob, job.pk, every=max(stale_after / 4, 0.05)):
            try:
                _generate_all(job)
            except jobs.JobCancelled:
                status = GenerationJob.Status.CANCELLED
                jobs.job_log(GenerationJob, job.pk, "cancelled; pairing the replies stored")
            ensure_comparison_tasks(
                project=job.project, model_version=job.model_version, score=_active_scorer(job)
            )
    except Exception as error_:
        logger.exception("Generation job %s failed", job_id)
        status, error = GenerationJob.Status.FAILED, f"{type(error_).__name__}: {error_}"
    jobs.job_finish(GenerationJob, job.pk, status, error)


def _active_scorer(job: GenerationJob):
    """The latest reward model's scorer when the project pairs replies by active learning."""
    if job.project.candidate_policy != CandidatePolicy.ACTIVE:
        return None
    version = registry_selectors.latest_reward_model(project=job.project)
    return registry_services.reward_scorer(version) if version else None


def _reply_source(job: GenerationJob, score):
    """A function from (conversations, params) to ``(reply, extra generation params)`` per
    conversation: the version's generator (``models_registry.endpoints.generator_for``: its
    inference server, or its files in this process), or best-of-n by ``score``, which
    samples in this process from the version's files (it needs the policy's own sampling)."""
    version = job.model_version
    if score is None:
        generator = generator_for(version)
        generator.prepare()
        batch_size = settings.GENERATION_BATCH_SIZE

        def generate(conversations, params):
            replies = generator.generate(conversations, params, batch_size=batch_size)
            return [(reply, {}) for reply in replies]

        return generate
    model, tokenizer = ml.load_policy(version.base_path, version.adapter_path or None)
    extra = {"best_of": job.best_of, "reward_version": job.reward_version_id}

    def best_of_n(conversations, params):
        best = ml.generate_best_of_n(
            model, tokenizer, conversations, params, n=job.best_of, score=score
        )
        return [(reply, {**extra, "reward": reward}) for reply, reward in best]

    return best_of_n


def _missing_samples(job: GenerationJob) -> dict[int, list[int]]:
    return selectors.missing_samples(
        project=job.project,
        model_version=job.model_version,
        samples_per_prompt=job.samples_per_prompt or None,
    )


def _generate_all(job: GenerationJob) -> None:
    """Write the samples the job's prompts still miss (``selectors.missing_samples``, read
    afresh, so a resumed job adds only what is missing), one sample index at a time."""
    version = job.model_version
    missing = _missing_samples(job)
    if not missing:
        return
    score = registry_services.reward_scorer(job.reward_version) if job.best_of > 1 else None
    replies_for = _reply_source(job, score)
    batch_size = settings.GENERATION_BATCH_SIZE
    prompts = Prompt.objects.in_bulk(list(missing))
    for sample_index in sorted({index for indexes in missing.values() for index in indexes}):
        params = ml.GenerationParams(**job.generation_params)
        params.seed = params.seed + 1000 * sample_index
        todo = [prompts[pk] for pk in sorted(missing) if sample_index in missing[pk]]
        for start in range(0, len(todo), batch_size):
            if jobs.job_cancel_requested(GenerationJob, job.pk):
                raise jobs.JobCancelled
            batch = todo[start : start + batch_size]
            started = time.perf_counter()
            replies = replies_for([prompt.as_conversation() for prompt in batch], params)
            logger.info("Generated %d replies in %.1fs", len(batch), time.perf_counter() - started)
            Response.objects.bulk_create(
                [
                    Response(
                        prompt=prompt,
                        model_version=version,
                        sample_index=sample_index,
                        text=reply.text,
                        generation_params={**params.as_dict(), **extra},
                        completion_tokens=reply.completion_tokens,
                        generation_seconds=reply.seconds,
                        finished=reply.finished,
                    )
                    for prompt, (reply, extra) in zip(batch, replies, strict=True)
                ],
                ignore_conflicts=True,
            )
            jobs.job_progress(GenerationJob, job.pk, add=len(batch))


def model_version_release(
    *, version: ModelVersion, project: Project, user=None, note: str = ""
) -> StateChange:
    """Release an intermediate stage of a run in ``project`` (``models_registry.services
    .model_version_release``: refused, changing nothing, unless it is one and was trained
    there), then, for a policy, queue a generation job for its
    candidates in its run's project. One transaction: a refused job start leaves the stage
    unreleased; a broker that is down leaves it released, its job failed with the reason
    (QueueUnavailable)."""
    with transaction.atomic():
        change = registry_services.model_version_release(
            version=version, user=user, note=note, project=project
        )
        run = version.training_run
        if run is not None and version.kind == ModelVersion.Kind.POLICY:
            generation_job_start(project=run.project, model_version=version, user=user)
    return change
