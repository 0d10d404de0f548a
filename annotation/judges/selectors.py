"""Reads for the AI judges pages and API, and the payloads they show. A judge's API key is
never part of any payload: ``has_api_key`` says whether one is set."""

from __future__ import annotations

from django.db.models import Q

from annotation.models import Constitution, Judge, JudgeJob, Judgment, Project, Workspace
from config import jobs
from config.errors import ServiceError


class NotFound(ServiceError):
    status_code = 404


def constitutions_visible(workspace: Workspace):
    """The workspace's own constitutions and the built-in ones (no owner)."""
    return Constitution.objects.filter(Q(workspace=workspace) | Q(workspace__isnull=True))


def constitutions_latest(*, workspace: Workspace) -> list[Constitution]:
    """The latest version of each constitution name the workspace sees. Its own line of a
    name (a new version it saved of a built-in one) hides the built-in line."""
    latest: dict[str, Constitution] = {}
    for constitution in constitutions_visible(workspace).order_by("name", "-version"):
        current = latest.get(constitution.name)
        if current is None or (current.workspace_id is None and constitution.workspace_id):
            latest[constitution.name] = constitution
    return list(latest.values())


def constitution_versions(*, workspace: Workspace, name: str) -> list[Constitution]:
    return list(constitutions_visible(workspace).filter(name=name).order_by("-version"))


def constitution_for(*, workspace: Workspace, constitution_id) -> Constitution:
    """A version the workspace sees; NotFound for another workspace's (never confirmed)."""
    try:
        return constitutions_visible(workspace).get(pk=int(constitution_id))
    except (TypeError, ValueError, Constitution.DoesNotExist):
        raise NotFound("No such constitution version.") from None


def judges_usable(*, workspace: Workspace):
    """The workspace's own judges and those another workspace shared with it."""
    return (
        Judge.objects.filter(Q(workspace=workspace) | Q(shared_with=workspace))
        .distinct()
        .select_related("constitution", "model_version", "workspace")
        .prefetch_related("shared_with")
        .order_by("name", "id")
    )


def judge_for(*, workspace: Workspace, judge_id) -> Judge:
    try:
        return judges_usable(workspace=workspace).get(pk=int(judge_id))
    except (TypeError, ValueError, Judge.DoesNotExist):
        raise ServiceError("Choose a judge.") from None


def judge_owned(*, workspace: Workspace, judge_id) -> Judge:
    """One of the workspace's own judges (to share or change); NotFound otherwise."""
    try:
        return Judge.objects.filter(workspace=workspace).get(pk=int(judge_id))
    except (TypeError, ValueError, Judge.DoesNotExist):
        raise NotFound("No such judge in this workspace.") from None


def judge_jobs_for(*, project: Project, limit: int = 50):
    return (
        JudgeJob.objects.filter(project=project)
        .select_related("judge", "judge__constitution")
        .order_by("-created_at", "-id")[:limit]
    )


def judge_job_for(*, project: Project, job_id) -> JudgeJob:
    try:
        return (
            JudgeJob.objects.select_related("judge", "judge__constitution")
            .filter(project=project)
            .get(pk=int(job_id))
        )
    except (TypeError, ValueError, JudgeJob.DoesNotExist):
        raise NotFound("No such judge job in this project.") from None


def judge_job_outlook(job: JudgeJob) -> dict:
    """Its place in line and time left (config.jobs.job_outlook) among the jobs that share
    its Celery queue: a local judge's on ``gpu``, a remote one's on ``default``."""
    return jobs.job_outlook(job, judge__backend=job.judge.backend)


def with_outlook(job_list) -> list[JudgeJob]:
    """The jobs, each with its ``outlook`` (only active ones cost queries)."""
    job_list = list(job_list)
    for job in job_list:
        job.outlook = judge_job_outlook(job)
    return job_list


def judge_job_judgments(*, job: JudgeJob, limit: int = 20):
    return (
        Judgment.objects.filter(judge_job=job)
        .select_related("constitution")
        .order_by("-created_at", "-id")[:limit]
    )


# --- payloads ------------------------------------------------------------------------------


def constitution_payload(constitution: Constitution) -> dict:
    return {
        "id": constitution.pk,
        "name": constitution.name,
        "version": constitution.version,
        "principles": constitution.principles,
        "note": constitution.note,
        "created_at": constitution.created_at.isoformat(),
    }


def judge_payload(judge: Judge, *, workspace: Workspace) -> dict:
    """What ``workspace`` may see of the judge: a workspace it was shared with sees what it
    is, never where its endpoint is (the owner's) nor with whom it is shared."""
    owned = judge.workspace_id == workspace.pk
    return {
        "id": judge.pk,
        "name": judge.name,
        "workspace": judge.workspace.slug,
        "owned": owned,
        "shared_with": sorted(w.slug for w in judge.shared_with.all()) if owned else [],
        "backend": judge.backend,
        "model_version": judge.model_version.name if judge.model_version else None,
        "model_version_id": judge.model_version_id,
        "endpoint_url": judge.endpoint_url if owned else "",
        "endpoint_model": judge.endpoint_model,
        "has_api_key": bool(judge.api_key),
        "constitution": {
            "id": judge.constitution_id,
            "name": judge.constitution.name,
            "version": judge.constitution.version,
        },
        "chain_of_thought": judge.chain_of_thought,
        "created_at": judge.created_at.isoformat(),
    }


def judge_job_payload(job: JudgeJob) -> dict:
    return {
        "id": job.pk,
        "judge": {"id": job.judge_id, "name": job.judge.name},
        "constitution": {
            "id": job.judge.constitution_id,
            "name": job.judge.constitution.name,
            "version": job.judge.constitution.version,
        },
        "kind": job.kind,
        "options": job.options,
        "status": job.status,
        "total": job.total,
        "done": job.done,
        "failed": job.failed,
        "percent": job.percent,
        **jobs.outlook_fields(judge_job_outlook(job)),
        "max_requests": job.max_requests,
        "requests_made": job.requests_made,
        "cancel_requested": job.cancel_requested,
        "error": job.error,
        "log_tail": job.log.splitlines()[-20:],
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
