"""AI judge jobs: start, run on a Celery worker, cancel; and the pairwise runner.

A job row is the unit of work, on the one job lifecycle (config/jobs.py).
``judge_job_start`` validates and queues it (local judges on the ``gpu`` queue, remote ones
on ``default``); ``judge_job_execute`` claims it under a row lock with a status check (a
redelivered message does nothing), builds a ``JobContext`` and calls the runner of its kind,
heartbeating while it runs. A job whose worker died (no heartbeat for
``JUDGE_JOB_STALE_AFTER_SECONDS``, seen by the sweep when its pages or API are read, or by
the redelivered message) is ended with the reason, never run again by itself: the runners
count their items from the start (self-instruct cannot tell which new prompts a dead attempt
stored), while a new pairwise or revision job already skips the pairs and replies judged or
revised. Runners store every finished item at once, so whatever happens later keeps it;
they call ``ctx.request()`` before each model request (the budget), and look at
``ctx.cancelled()`` between items. Final status: every item done -> succeeded; some done,
then an error, the budget, failed items or a lost worker -> partial with the reason in
``error``; none done -> failed; cancel -> cancelled.
"""

from __future__ import annotations

import json
import logging
import random

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from annotation.judges.backends import BackendError, JudgeBackend, LocalBackend, RemoteBackend
from annotation.judges.selectors import judges_usable
from annotation.models import (
    Judge,
    JudgeJob,
    Judgment,
    Project,
    Task,
    TaskKind,
)
from annotation.prompts.alive import alive_tasks
from config import jobs
from config.celery import enqueue_after_commit
from config.errors import Conflict, ServiceError
from config.parsers import UnsafeJson, loads_checked
from models_registry import selectors as registry_selectors
from models_registry.endpoints import generator_for

logger = logging.getLogger(__name__)

MAX_BUDGET = 10_000
MAX_LIMIT = 10_000
DEFAULT_PAIRWISE_LIMIT = 50
MAX_OPTIONS_CHARS = 10_000
MAX_LOG_CHARS = 50_000


class BudgetExhausted(Exception):
    """The job made as many model requests as its budget allows."""


# --- Backends ---------------------------------------------------------------------------


def backend_for(judge: Judge, *, job_seed: int = 0) -> JudgeBackend:
    """The judge's backend (a local one samples from ``job_seed`` on). Remote timeouts
    and retries come from the settings ``AI_JUDGE_TIMEOUT_S`` (30),
    ``AI_JUDGE_MAX_RETRIES`` (3) and ``AI_JUDGE_BACKOFF_S`` (1.0)."""
    if judge.backend == Judge.Backend.LOCAL:
        return LocalBackend(generator=generator_for(judge.model_version), seed=job_seed)
    return RemoteBackend(
        judge.endpoint_url,
        judge.endpoint_model,
        judge.api_key,
        timeout=settings.AI_JUDGE_TIMEOUT_S,
        max_retries=settings.AI_JUDGE_MAX_RETRIES,
        backoff=settings.AI_JUDGE_BACKOFF_S,
        allow_private=settings.OUTBOUND_ALLOW_PRIVATE,
    )


# --- The context a runner works in ------------------------------------------------------


class JobContext:
    """What a runner gets: the job, its judge, constitution version and backend, and the
    calls that count requests, report progress, check for cancel and write the log."""

    def __init__(self, job: JudgeJob, backend: JudgeBackend | None = None):
        self.job = job
        self.judge = job.judge
        self.constitution = job.judge.constitution
        self.backend = backend if backend is not None else backend_for(self.judge, job_seed=job.pk)
        self.last_item_error = ""

    def scrub(self, text: str) -> str:
        """The text with the judge's API key masked."""
        text = str(text)
        key = self.judge.api_key
        return text.replace(key, "***") if key else text

    def request(self) -> None:
        """Count one model request; BudgetExhausted when the budget is already spent."""
        counted = JudgeJob.objects.filter(
            pk=self.job.pk, requests_made__lt=F("max_requests")
        ).update(requests_made=F("requests_made") + 1)
        if not counted:
            raise BudgetExhausted(
                f"Stopped by the budget: {self.job.max_requests} model requests were spent."
            )
        self.job.requests_made += 1

    def cancelled(self) -> bool:
        return JudgeJob.objects.filter(pk=self.job.pk, cancel_requested=True).exists()

    def progress(
        self, done: int | None = None, total: int | None = None, failed: int | None = None
    ) -> None:
        fields = {
            name: value
            for name, value in (("done", done), ("total", total), ("failed", failed))
            if value is not None
        }
        if fields:
            jobs.job_progress(JudgeJob, self.job.pk, done=done, total=total)
            if failed is not None:
                JudgeJob.objects.filter(pk=self.job.pk).update(failed=failed)
            for name, value in fields.items():
                setattr(self.job, name, value)

    def item_failed(self, message: str) -> None:
        """One item could not be done: count it and log why (the job goes on)."""
        self.last_item_error = self.scrub(message)
        JudgeJob.objects.filter(pk=self.job.pk).update(failed=F("failed") + 1)
        self.job.failed += 1
        self.log(f"Item failed: {message}")

    def log(self, message: str) -> None:
        # Not config.jobs.job_log: this log masks the API key and keeps its last
        # MAX_LOG_CHARS. Only this worker writes it; other writers (cancel) touch other
        # fields. A line is also a heartbeat.
        line = f"{timezone.now():%Y-%m-%d %H:%M:%S} {self.scrub(message)}\n"
        current = JudgeJob.objects.filter(pk=self.job.pk).values_list("log", flat=True).first()
        text = ((current or "") + line)[-MAX_LOG_CHARS:]
        JudgeJob.objects.filter(pk=self.job.pk).update(log=text, heartbeat_at=timezone.now())
        self.job.log = text


# --- Pairwise runner --------------------------------------------------------------------


def _comparison_tasks(*, project: Project):
    return alive_tasks(Task.objects.filter(project=project, kind=TaskKind.COMPARISON))


def pairwise_candidates(*, job: JudgeJob) -> list[tuple[Task, list]]:
    """The job's pairs: the project's comparison tasks with two responses (or those listed in
    ``options["task_ids"]``) that this judge has not judged under this constitution version,
    oldest first, up to ``options["limit"]``."""
    options = job.options or {}
    judge = job.judge
    tasks = (
        _comparison_tasks(project=job.project)
        .exclude(
            judgments__source=Judgment.Source.AI,
            judgments__judge=judge,
            judgments__constitution=judge.constitution,
        )
        .select_related("prompt")
        .order_by("id")
    )
    if options.get("task_ids"):
        tasks = tasks.filter(pk__in=options["task_ids"])
    limit = options.get("limit", DEFAULT_PAIRWISE_LIMIT)
    pairs = []
    for task in tasks.iterator():
        responses = task.ordered_responses()
        if len(responses) == 2:
            pairs.append((task, responses))
        if len(pairs) >= limit:
            break
    return pairs


def run_pairwise(ctx: JobContext) -> None:
    """Judge each pair in both orders under a principle drawn at random (seeded by the job
    id) and store it as an AI comparison at once; a pair with no verdict counts as failed."""
    from annotation.judges import pairwise

    pairs = pairwise_candidates(job=ctx.job)
    ctx.progress(total=len(pairs), done=0, failed=0)
    principles = ctx.constitution.principles
    rng = random.Random(ctx.job.pk)
    options = ctx.job.options or {}
    threshold = float(options.get("unsure_threshold", pairwise.DEFAULT_UNSURE_THRESHOLD))
    critique_tokens = int(options.get("critique_max_tokens", pairwise.CRITIQUE_MAX_TOKENS))
    ctx.log(
        f"{len(pairs)} pairs to judge with {ctx.judge.name} under {ctx.constitution} "
        f"({'chain of thought, ' if ctx.judge.chain_of_thought else ''}both orders)."
    )
    done = 0
    for task, (response_a, response_b) in pairs:
        if ctx.cancelled():
            ctx.log("Cancelled.")
            return
        principle = rng.choice(principles)
        conversation = [*(task.context or []), *task.prompt.as_conversation()]
        try:
            result = pairwise.judge_pair(
                ctx.backend,
                conversation=conversation,
                response_x=response_a.text,
                response_y=response_b.text,
                principle=principle,
                chain_of_thought=ctx.judge.chain_of_thought,
                before_request=ctx.request,
                unsure_threshold=threshold,
                critique_max_tokens=critique_tokens,
            )
        except pairwise.PairFailed as error:
            ctx.item_failed(f"task {task.pk}: {error.message}")
            continue
        details = result.details()
        for order in details["orders"]:
            first, second = (
                (response_a, response_b) if order["first"] == "x" else (response_b, response_a)
            )
            order["shown_order"] = [first.pk, second.pk]
        Judgment.objects.create(
            kind=TaskKind.COMPARISON,
            project=ctx.job.project,
            task=task,
            prompt=task.prompt,
            context=task.context or [],
            shown_order=[response_a.pk, response_b.pk],
            response_a=response_a,
            response_b=response_b,
            choice=result.choice,
            soft_label=result.soft_label,
            rationale=result.critique,
            source=Judgment.Source.AI,
            labeler=None,
            judge=ctx.judge,
            judge_job=ctx.job,
            constitution=ctx.constitution,
            principle=result.principle,
            ai_details=details,
        )
        done += 1
        ctx.progress(done=done)
    ctx.log(f"Judged {done} pairs; {ctx.job.failed} failed.")


def run_revision(ctx: JobContext) -> None:
    from annotation.judges.revision import run_revision as runner

    runner(ctx)


def run_self_instruct(ctx: JobContext) -> None:
    from annotation.judges.self_instruct import run_self_instruct as runner

    runner(ctx)


KIND_RUNNERS = {
    JudgeJob.Kind.PAIRWISE.value: run_pairwise,
    JudgeJob.Kind.REVISION.value: run_revision,
    JudgeJob.Kind.SELF_INSTRUCT.value: run_self_instruct,
}


# --- Start, execute, cancel -------------------------------------------------------------


def _int_in_range(value, *, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ServiceError(f"{name} must be a whole number from {low} to {high}.")
    try:
        number = int(value)
    except ValueError:
        raise ServiceError(f"{name} must be a whole number from {low} to {high}.") from None
    if not low <= number <= high:
        raise ServiceError(f"{name} must be a whole number from {low} to {high}.")
    return number


def _check_pairwise_options(*, project: Project, options: dict) -> dict:
    known = {"limit", "task_ids", "unsure_threshold", "critique_max_tokens"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ServiceError(f"Unknown options for pairwise judging: {', '.join(unknown)}.")
    cleaned: dict = {
        "limit": _int_in_range(
            options.get("limit", DEFAULT_PAIRWISE_LIMIT), name="limit", low=1, high=MAX_LIMIT
        )
    }
    if options.get("task_ids") not in (None, [], ""):
        raw = options["task_ids"]
        if not isinstance(raw, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in raw
        ):
            raise ServiceError("task_ids must be a list of task ids.")
        found = set(
            _comparison_tasks(project=project).filter(pk__in=raw).values_list("pk", flat=True)
        )
        missing = sorted(set(raw) - found)
        if missing:
            raise ServiceError(
                "Not comparison tasks of this project: " + ", ".join(map(str, missing[:10]))
            )
        cleaned["task_ids"] = sorted(found)
    if "unsure_threshold" in options:
        value = options["unsure_threshold"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 0.5:
            raise ServiceError("unsure_threshold must be a number from 0 to 0.5.")
        cleaned["unsure_threshold"] = float(value)
    if "critique_max_tokens" in options:
        cleaned["critique_max_tokens"] = _int_in_range(
            options["critique_max_tokens"], name="critique_max_tokens", low=1, high=1024
        )
    return cleaned


def _check_options(*, project: Project, kind: str, options) -> dict:
    if options in (None, ""):
        options = {}
    if isinstance(options, str):
        try:
            options = loads_checked(options)
        except UnsafeJson as error:
            raise ServiceError(f"Options: {error}") from None
        except ValueError:
            raise ServiceError("Options must be a JSON object.") from None
    if not isinstance(options, dict):
        raise ServiceError("Options must be a JSON object.")
    if len(json.dumps(options)) > MAX_OPTIONS_CHARS:
        raise ServiceError(f"Options are limited to {MAX_OPTIONS_CHARS} characters of JSON.")
    if kind == JudgeJob.Kind.PAIRWISE:
        return _check_pairwise_options(project=project, options=options)
    if kind == JudgeJob.Kind.REVISION:
        from annotation.judges.revision import check_revision_options

        return check_revision_options(options, project=project)
    from annotation.judges.self_instruct import check_self_instruct_options

    return check_self_instruct_options(options)


def check_judge_usable(judge: Judge, project: Project) -> None:
    """A local judge's model must not be retired in the project the job runs in."""
    if judge.backend == Judge.Backend.LOCAL:
        version = judge.model_version
        if (
            version is None
            or registry_selectors.retired_in(project=project).filter(pk=version.pk).exists()
        ):
            raise ServiceError(f"The judge {judge.name}'s model version is retired.")


def _usable_in(judge: Judge, project: Project) -> bool:
    """Its own workspace's judge, or one its owner shared with the project's workspace
    (``selectors.judges_usable``): a job spends the judge's endpoint and key, which only the
    owner may lend."""
    return judges_usable(workspace=project.workspace).filter(pk=judge.pk).exists()


def judge_job_start(
    *,
    project: Project,
    judge: Judge,
    kind: str,
    options=None,
    max_requests=200,
    user=None,
) -> JudgeJob:
    """Validate and queue a job (after commit). Refuses bad input with a clear ServiceError
    and stores nothing; QueueUnavailable (config.celery) when the broker is down, with the
    job marked failed."""
    if not isinstance(judge, Judge) or not _usable_in(judge, project):
        raise ServiceError("Choose a judge.")
    if kind not in JudgeJob.Kind.values:
        raise ServiceError("Choose what the job does: " + ", ".join(JudgeJob.Kind.values) + ".")
    budget = _int_in_range(max_requests, name="The budget", low=1, high=MAX_BUDGET)
    cleaned = _check_options(project=project, kind=kind, options=options)
    check_judge_usable(judge, project)
    with transaction.atomic():
        job = JudgeJob.objects.create(
            project=project,
            judge=judge,
            kind=kind,
            options=cleaned,
            max_requests=budget,
            created_by=user if getattr(user, "is_authenticated", False) else None,
        )
        _enqueue(job)
    return job


def _enqueue(job: JudgeJob) -> None:
    from annotation.judges.tasks import judge_job_run_gpu_task, judge_job_run_task

    task = (
        judge_job_run_gpu_task if job.judge.backend == Judge.Backend.LOCAL else judge_job_run_task
    )
    job_id = job.pk
    enqueue_after_commit(
        task, job_id=job_id, on_failure=lambda message: _queue_failed(job_id, message)
    )


def _queue_failed(job_id: int, message: str) -> None:
    JudgeJob.objects.filter(pk=job_id, status=JudgeJob.Status.QUEUED).update(
        status=JudgeJob.Status.FAILED, error=message, finished_at=timezone.now()
    )


def _job_lost(job: JudgeJob) -> None:
    """End a locked job whose worker died: partly done when it stored items (they stay),
    else failed, with the reason."""
    reason = jobs.lost_reason(settings.JUDGE_JOB_STALE_AFTER_SECONDS)
    reason = f"{reason[:-1]}; it is not run again. {job.done} of {job.total} items were stored."
    job.status = JudgeJob.Status.PARTIAL if job.done else JudgeJob.Status.FAILED
    job.error = reason
    job.finished_at = timezone.now()
    line = f"{timezone.now():%Y-%m-%d %H:%M:%S} Finished: {job.get_status_display()} - {reason}"
    job.log = ((job.log or "") + line + "\n")[-MAX_LOG_CHARS:]
    job.save(update_fields=["status", "error", "finished_at", "log"])


def judge_jobs_fail_stale(*, project: Project | None = None) -> int:
    """End running jobs whose worker stopped reporting for ``JUDGE_JOB_STALE_AFTER_SECONDS``
    with the reason (partly done when they stored items). Returns how many."""
    filters = {"project": project} if project is not None else {}
    return jobs.job_fail_stale(
        JudgeJob,
        after_seconds=settings.JUDGE_JOB_STALE_AFTER_SECONDS,
        on_lost=_job_lost,
        **filters,
    )


def judge_job_execute(*, job_id: int, backend: JudgeBackend | None = None) -> JudgeJob | None:
    """Worker side: run a queued job to its end and record how it ended. Safe to repeat:
    a job that is not queued is left alone (returns None), and the redelivered message of
    an attempt whose worker died fails the job with the reason. ``backend`` replaces the
    judge's own (for callers that already hold one)."""
    stale_after = settings.JUDGE_JOB_STALE_AFTER_SECONDS
    claimed = jobs.job_claim(JudgeJob, job_id, stale_after=stale_after, on_lost=_job_lost)
    if claimed is None:
        return None
    job = JudgeJob.objects.select_related(
        "judge__constitution", "judge__model_version", "project"
    ).get(pk=claimed.pk)
    ctx: JobContext | None = None
    reason = ""
    try:
        if not _usable_in(job.judge, job.project):
            # Unshared while the job waited: the owner's endpoint and key are no longer lent.
            raise ServiceError(
                "The judge's workspace stopped sharing it with this project's workspace."
            )
        ctx = JobContext(job, backend=backend)
        with jobs.job_heartbeat(JudgeJob, job.pk, every=max(stale_after / 4, 0.05)):
            KIND_RUNNERS[job.kind](ctx)
    except BudgetExhausted as error:
        reason = str(error)
    except BackendError as error:
        reason = f"The judge's model failed: {error.message}"
    except ServiceError as error:
        reason = error.message
    except Exception as error:
        logger.exception("Judge job %s failed", job_id)
        reason = f"{type(error).__name__}: {error}"
    return _finish(job_id, reason=reason, ctx=ctx, judge=job.judge)


def _finish(job_id: int, *, reason: str, ctx: JobContext | None, judge: Judge) -> JudgeJob:
    key = judge.api_key
    if key:
        reason = reason.replace(key, "***")
    with transaction.atomic():
        job = JudgeJob.objects.select_for_update().get(pk=job_id)
        item_error = ""
        if job.failed:
            item_error = f"{job.failed} of {job.total} items failed" + (
                f" (last: {ctx.last_item_error})" if ctx and ctx.last_item_error else ""
            )
        if job.cancel_requested:
            status = JudgeJob.Status.CANCELLED
        elif not reason and not job.failed and job.done >= job.total:
            status = JudgeJob.Status.SUCCEEDED
        elif job.done > 0:
            status = JudgeJob.Status.PARTIAL
        else:
            status = JudgeJob.Status.FAILED
        if not reason and status in (JudgeJob.Status.PARTIAL, JudgeJob.Status.FAILED):
            reason = item_error or f"Stopped after {job.done} of {job.total} items."
        elif reason and item_error:
            reason = f"{reason} {item_error}."
        job.status = status
        job.error = reason
        job.finished_at = timezone.now()
        line = f"{timezone.now():%Y-%m-%d %H:%M:%S} Finished: {status.label}" + (
            f" - {reason}" if reason else ""
        )
        job.log = ((job.log or "") + line + "\n")[-MAX_LOG_CHARS:]
        job.save(update_fields=["status", "error", "finished_at", "log"])
    return job


def judge_job_cancel(*, job: JudgeJob) -> JudgeJob:
    """A queued job is cancelled at once; a running one stops before its next item (what
    it finished stays stored). Conflict for a job that has ended."""
    with transaction.atomic():
        try:
            job = jobs.job_cancel_request(JudgeJob, job.pk)
        except jobs.JobNotActive:
            ended = JudgeJob.objects.get(pk=job.pk)
            raise Conflict(
                f"This job has already ended ({ended.get_status_display().lower()})."
            ) from None
        if job.status == JudgeJob.Status.CANCELLED:  # it was queued: ended now, as asked
            job.cancel_requested = True
            job.save(update_fields=["cancel_requested"])
    return job
