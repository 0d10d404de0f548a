"""The one job lifecycle (DESIGN.md "One job lifecycle"): an abstract model and the plain
functions every kind of background job runs on.

A job is a row. The request creates it queued and sends its message on commit
(``config.celery.enqueue_after_commit``); the worker claims it once under a row lock
(``job_claim``), keeps ``heartbeat_at`` fresh while it works (``job_heartbeat``,
``job_progress``), looks for a cancel between batches (``job_cancel_requested``) and ends
it (``job_finish``). A job whose worker stopped reporting is never left running: a sweep
(``job_fail_stale``: every ``JOB_SWEEP_INTERVAL_SECONDS`` by Celery beat through each app's
``sweep_stale_*_task``, and on page reads) or the redelivered message of its dead attempt
fails it with the reason or, for a kind that resumes safely (``resumable``), takes it up
again. While a job
waits or works, ``job_outlook`` says where it stands: its place in line (``queue_position``)
and the time it still needs (``eta``), in words for the pages.

The functions work on any model with these fields, whether or not it inherits ``Job``
(training runs keep their own names for progress: ``step``/``total_steps``). They import
none of the apps.
"""

import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from django.db import connection, models, transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce, Concat
from django.utils import timezone

from config.celery import QueueUnavailable

logger = logging.getLogger(__name__)


class Job(models.Model):
    """A background job's row: status, progress, log, heartbeat, attempts and cancel."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    # A kind is resumable when running it again after a crash is safe and writes nothing
    # twice; then a lost attempt is taken up again (at most ``max_attempts`` in all).
    resumable = False
    max_attempts = 3

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    log = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 0

    @property
    def is_active(self) -> bool:
        return self.status in {self.Status.QUEUED, self.Status.RUNNING}


ACTIVE = {Job.Status.QUEUED, Job.Status.RUNNING}


class JobNotActive(Exception):
    """The job has already ended, so it cannot be cancelled; the message says how."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class JobCancelled(Exception):
    """Raised by the worker's code when it sees a cancel request between batches."""


def lost_reason(after_seconds: int) -> str:
    return f"The worker stopped reporting (no heartbeat for {after_seconds} s)."


def _line(message: str) -> str:
    return f"{timezone.now():%Y-%m-%d %H:%M:%S} {message}\n"


def job_log(model, job_id: int, message: str) -> None:
    """Append a timestamped line to the job's log (which also counts as a heartbeat)."""
    model.objects.filter(pk=job_id).update(
        log=Concat(F("log"), Value(_line(message))), heartbeat_at=timezone.now()
    )


def _last_sign(job):
    # A row from before heartbeats were kept (or a worker that died before its first
    # beat) is judged by when it started, or was created.
    return job.heartbeat_at or job.started_at or job.created_at


def _is_stale(job, after_seconds: int) -> bool:
    return _last_sign(job) < timezone.now() - timedelta(seconds=after_seconds)


def _may_resume(model, job) -> bool:
    return getattr(model, "resumable", False) and job.attempts < getattr(model, "max_attempts", 1)


def _fail_lost(job, after_seconds: int, on_lost: Callable | None) -> None:
    """Fail a locked job whose worker died: ``on_lost(job)`` where the kind words it
    itself (training names its checkpoint), else the shared reason."""
    if on_lost is not None:
        on_lost(job)
        return
    message = lost_reason(after_seconds)
    if job.attempts > 1:
        message = f"{message[:-1]} on attempt {job.attempts}; it is not retried again."
    job.status = Job.Status.FAILED
    job.error = message
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "error", "finished_at"])
    if hasattr(job, "log"):
        job_log(type(job), job.pk, f"failed: {message}")


def job_claim(
    model, job_id: int, *, stale_after: int, on_lost: Callable | None = None
) -> "Job | None":
    """Take a queued job for this worker under a row lock: running, started, one attempt
    more. Returns None when there is nothing to do (unknown, cancelled, ended, or held by a
    worker that still reports), so a redelivered message does nothing twice.

    A message for a job that is RUNNING with no heartbeat for ``stale_after`` seconds is
    the redelivery of a dead attempt: a resumable kind is claimed again, any other is
    failed with the reason (``on_lost(job)`` writes a kind's own reason)."""
    with transaction.atomic():
        job = model.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            return None
        resumed = False
        if job.status == Job.Status.RUNNING:
            if not _is_stale(job, stale_after):
                return None  # another worker holds it and still reports
            if not _may_resume(model, job):
                _fail_lost(job, stale_after, on_lost)
                return None
            resumed = True
        elif job.status != Job.Status.QUEUED:
            return None  # cancelled while queued, or already ended
        job.status = Job.Status.RUNNING
        job.started_at = job.started_at or timezone.now()
        job.heartbeat_at = timezone.now()
        job.attempts = F("attempts") + 1
        job.save(update_fields=["status", "started_at", "heartbeat_at", "attempts"])
        if resumed:
            reason = lost_reason(stale_after)
            job_log(model, job.pk, f"the attempt before this one was lost: {reason} Resuming.")
        job.refresh_from_db()
        return job


def job_fail_stale(
    model,
    *,
    after_seconds: int,
    resume: Callable | None = None,
    on_lost: Callable | None = None,
    **filters,
) -> int:
    """End RUNNING jobs (of ``filters``) with no heartbeat for ``after_seconds``: failed
    with the reason, or, for a resumable kind given ``resume(job)`` (which queues its
    message on commit) and attempts left, queued again to resume. Returns how many."""
    cutoff = timezone.now() - timedelta(seconds=after_seconds)
    last_sign = Coalesce("heartbeat_at", "started_at", "created_at")
    stale = (
        model.objects.filter(status=Job.Status.RUNNING, **filters)
        .alias(last_sign=last_sign)
        .filter(last_sign__lt=cutoff)
    )
    ended = 0
    for job_id in stale.values_list("pk", flat=True):
        try:
            ended += _end_stale(model, job_id, after_seconds, resume, on_lost)
        except QueueUnavailable:
            # The resume's message was refused on commit: enqueue_after_commit's on_failure
            # has failed that job with the reason. The other stale jobs still get their turn.
            ended += 1
    return ended


def _end_stale(model, job_id: int, after_seconds: int, resume, on_lost) -> int:
    with transaction.atomic():
        job = model.objects.select_for_update().get(pk=job_id)
        if job.status != Job.Status.RUNNING or not _is_stale(job, after_seconds):
            return 0
        if resume is not None and _may_resume(model, job):
            job.status = Job.Status.QUEUED
            job.save(update_fields=["status"])
            job_log(model, job.pk, f"{lost_reason(after_seconds)} Queued again to resume.")
            resume(job)
        else:
            _fail_lost(job, after_seconds, on_lost)
        return 1


def run_stale_sweeps(sweeps) -> dict[str, int]:
    """Run each ``(kind, sweep)`` of an app's periodic sweep (its ``*_fail_stale``) and say
    how many jobs each ended or queued again. One kind's error is logged and does not keep
    the others from their sweep (its count is then -1)."""
    counts = {}
    for kind, sweep in sweeps:
        try:
            counts[kind] = sweep()
        except Exception:
            logger.exception("The stale sweep of %s failed", kind)
            counts[kind] = -1
    return counts


@contextlib.contextmanager
def job_heartbeat(model, job_id: int, *, every: float):
    """Keep ``heartbeat_at`` fresh from a side thread every ``every`` seconds while the
    worker is busy in a long phase that reports no progress (loading, a long batch)."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(every):
                model.objects.filter(pk=job_id).update(heartbeat_at=timezone.now())
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name=f"heartbeat-{model.__name__}-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def job_progress(model, job_id: int, *, done: int | None = None, add: int = 0, total=None) -> None:
    """Record progress (``done`` outright, or ``add`` to it; ``total`` if known), which is
    also a heartbeat."""
    fields = {"heartbeat_at": timezone.now()}
    if done is not None:
        fields["done"] = done
    elif add:
        fields["done"] = F("done") + add
    if total is not None:
        fields["total"] = total
    model.objects.filter(pk=job_id).update(**fields)


def job_cancel_requested(model, job_id: int) -> bool:
    return model.objects.filter(pk=job_id, cancel_requested=True).exists()


def job_cancel_request(model, job_id: int):
    """Cancel a job: a queued one ends cancelled now; a running one is asked to stop and
    its worker ends it at its next check. JobNotActive for a job that has already ended."""
    with transaction.atomic():
        job = model.objects.select_for_update().get(pk=job_id)
        if job.status == Job.Status.QUEUED:
            job.status = Job.Status.CANCELLED
            job.finished_at = timezone.now()
            job.save(update_fields=["status", "finished_at"])
        elif job.status == Job.Status.RUNNING:
            job.cancel_requested = True
            job.save(update_fields=["cancel_requested"])
        else:
            raise JobNotActive(
                f"The job has already {job.status}; only a queued or running job can be cancelled."
            )
    return job


def job_finish(model, job_id: int, status: str, error: str = "") -> None:
    """End the job with ``status`` (and the reason, for a failure)."""
    model.objects.filter(pk=job_id).update(status=status, error=error, finished_at=timezone.now())


# --- Where a job stands: place in line and time left ----------------------------------------

# How many of the latest succeeded jobs of a kind give its typical duration.
RECENT_JOBS = 20


def queue_position(job, **same_queue) -> int | None:
    """The job's place in line, 1 for the next to start: its rank by ``created_at`` among
    the QUEUED jobs of its model (narrowed by ``same_queue`` filters, e.g. the judges that
    share a Celery queue). None unless it is queued."""
    if job.status != Job.Status.QUEUED:
        return None
    earlier = models.Q(created_at__lt=job.created_at) | models.Q(
        created_at=job.created_at, pk__lt=job.pk
    )
    model = type(job)
    return model.objects.filter(earlier, status=Job.Status.QUEUED, **same_queue).count() + 1


def typical_duration(model, **same_queue) -> float | None:
    """Mean seconds from start to finish of the latest ``RECENT_JOBS`` succeeded jobs of
    ``model`` (failed and cancelled ones stop early and would say too little); None when
    none has succeeded yet."""
    spans = (
        model.objects.filter(
            status=Job.Status.SUCCEEDED,
            started_at__isnull=False,
            finished_at__isnull=False,
            **same_queue,
        )
        .order_by("-finished_at")
        .values_list("started_at", "finished_at")[:RECENT_JOBS]
    )
    seconds = [max(0.0, (end - start).total_seconds()) for start, end in spans]
    return sum(seconds) / len(seconds) if seconds else None


def _running_eta(job, done_field: str, total_field: str) -> float | None:
    done, total = getattr(job, done_field), getattr(job, total_field)
    if not done or not total or job.started_at is None:
        return None
    elapsed = (timezone.now() - job.started_at).total_seconds()
    return max(0.0, elapsed * (total - done) / done)


def eta(job, *, done_field: str = "done", total_field: str = "total", **same_queue):
    """Seconds until the job ends, or None where there is nothing honest to say.

    A running job: at the pace so far (elapsed time over items done); None before its
    first item. A queued job: the jobs ahead of it (those running, at their own pace, and
    those queued before it) and itself, each taking the typical duration of its kind
    (``typical_duration``); None without a finished job to learn from. The queued estimate
    assumes the queue runs one job at a time (the gpu worker does); with more workers the
    wait is shorter. ``done_field``/``total_field`` name a kind's own progress fields
    (training: ``step``/``total_steps``)."""
    if job.status == Job.Status.RUNNING:
        return _running_eta(job, done_field, total_field)
    position = queue_position(job, **same_queue)
    if position is None:
        return None
    typical = typical_duration(type(job), **same_queue)
    if typical is None:
        return None
    running = type(job).objects.filter(status=Job.Status.RUNNING, **same_queue)
    running_left = 0.0
    for other in running:
        left = _running_eta(other, done_field, total_field)
        running_left += typical if left is None else left
    return running_left + position * typical


def _ordinal(number: int) -> str:
    suffix = (
        "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    )
    return f"{number}{suffix}"


def duration_text(seconds: float) -> str:
    """A rough duration for people: "under a minute", "about 4 min", "about 2 h 10 min"."""
    if seconds < 45:
        return "under a minute"
    minutes = max(1, round(seconds / 60))
    if minutes < 90:
        return f"about {minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"about {hours} h {minutes} min" if minutes else f"about {hours} h"


def outlook_text(*, status: str, position: int | None, eta_seconds, done: int, total: int) -> str:
    """Where an active job stands, in words: "queued — 3rd in line, about 4 min" or
    "running 8/35 — about 2 min left"; says "unknown" where there is no estimate, and
    "" for a job that has ended."""
    if status == Job.Status.QUEUED:
        place = "next in line" if position == 1 else f"{_ordinal(position or 1)} in line"
        when = duration_text(eta_seconds) if eta_seconds is not None else "time unknown"
        return f"queued — {place}, {when}"
    if status == Job.Status.RUNNING:
        left = (
            f"{duration_text(eta_seconds)} left" if eta_seconds is not None else "time left unknown"
        )
        return f"running {done}/{total or '?'} — {left}"
    return ""


def job_outlook(job, *, done_field: str = "done", total_field: str = "total", **same_queue) -> dict:
    """``queue_position``, ``eta_seconds`` (whole seconds or None) and ``text`` of a job,
    for its page and its API (empty text and None for one that has ended)."""
    position = queue_position(job, **same_queue)
    seconds = eta(job, done_field=done_field, total_field=total_field, **same_queue)
    return {
        "queue_position": position,
        "eta_seconds": None if seconds is None else round(seconds),
        "text": outlook_text(
            status=job.status,
            position=position,
            eta_seconds=seconds,
            done=getattr(job, done_field),
            total=getattr(job, total_field),
        ),
    }


def outlook_fields(outlook: dict) -> dict:
    """A ``job_outlook`` as a job's API payload shows it."""
    return {
        "queue_position": outlook["queue_position"],
        "eta_seconds": outlook["eta_seconds"],
        "outlook": outlook["text"],
    }
