"""Who reaches which page and API endpoint: every route in config/urls.py, every kind of caller.

"Allowed" is proven with safe requests: GETs, and POSTs with an empty body or aimed at a run
that has already finished, which must be refused as bad input (400; the cancel page redirects
with a message), never 403. Denied POSTs carry well-formed input and cancel a running run, so
a missing check would change stored data; every request is checked to change nothing.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotation.candidates import urls as urls_candidates
from annotation.candidates.models import GenerationJob
from annotation.datasets import urls as urls_datasets
from annotation.labeling import urls as urls_labeling
from annotation.labeling.services import assignment_next
from annotation.leaderboard import urls as urls_leaderboard
from annotation.models import Assignment, Judgment, Project, Prompt, PromptImport, Role, Task
from annotation.projects import urls as urls_projects
from annotation.prompts import urls as urls_prompts
from annotation.review import urls as urls_quality
from config import urls
from tests.factories import jsonl_bytes, make_member, make_task, make_user, make_version
from training import urls as urls_training
from training.models import DatasetSnapshot, TrainingRun

# What a caller must hold: LOGIN is any signed-in user; the rest are permissions.py capabilities.
LOGIN, LABEL, VIEW_DATA, MANAGE = "login", "label", "view_data", "manage"
GRANTS = {
    "anonymous": set(),
    "outsider": {LOGIN},
    "labeler": {LOGIN, LABEL},
    "researcher": {LOGIN, LABEL, VIEW_DATA},
    "admin": {LOGIN, LABEL, VIEW_DATA, MANAGE},
    "superuser": {LOGIN, LABEL, VIEW_DATA, MANAGE},
}
ROLE_OF = {"labeler": Role.LABELER, "researcher": Role.RESEARCHER, "admin": Role.ADMIN}


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # About 200 users sign in here; the production hasher would take most of a minute.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _no_body(world):
    return None


def _judgment_body(world):
    return {"assignment_id": world["assignment"], "client_id": str(uuid.uuid4()), "choice": "tie"}


def _prompt_file_body(world):
    content = jsonl_bytes([{"prompt": "Why is the sky blue?"}])
    return {"file": SimpleUploadedFile("prompts.jsonl", content)}


def _generation_body(world):
    return {
        "model_version": world["base"],
        "samples_per_prompt": 1,
        "max_new_tokens": 8,
        "temperature": 0.7,
    }


def _training_body(world):
    return {
        "base_version": world["base"],
        "beta": 0.1,
        "learning_rate": 1e-5,
        "epochs": 1,
        "nll_weight": 0,
        "seed": 0,
    }


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str  # formatted with the world: slug, assignment, run
    needs: str
    ok_status: int
    api: bool
    denied_body: Callable[[dict], dict | None] = _no_body  # what a denied caller sends
    htmx: bool = False
    redirect: str = ""  # where an allowed 302 goes, formatted like path; default: path


ENDPOINTS = [
    Endpoint("home", "get", "/", LOGIN, 200, api=False),
    Endpoint("project", "get", "/p/{slug}/", LABEL, 200, api=False),
    Endpoint("label", "get", "/p/{slug}/label/", LABEL, 200, api=False),
    # htmx answers a refused judgment with 400; a plain form post would redirect.
    Endpoint("label", "post", "/p/{slug}/label/", LABEL, 400, False, _judgment_body, htmx=True),
    Endpoint("prompts", "get", "/p/{slug}/prompts/", MANAGE, 200, api=False),
    Endpoint("prompts", "post", "/p/{slug}/prompts/", MANAGE, 400, False, _prompt_file_body),
    Endpoint("tasks", "get", "/p/{slug}/tasks/", MANAGE, 200, api=False),
    Endpoint(
        "tasks",
        "post",
        "/p/{slug}/tasks/",
        MANAGE,
        400,
        False,
        lambda world: {
            "action": "settings",
            "overlap_target": 7,
            "pending_limit": 9,
            "gold_rate": 0.5,
            "skip_flag_threshold": 2,
            "criteria": "kind",
        },
    ),  # fmt: skip
    Endpoint("quality", "get", "/p/{slug}/quality/", VIEW_DATA, 200, api=False),
    Endpoint("review", "get", "/p/{slug}/review/", MANAGE, 200, api=False),
    Endpoint("review", "post", "/p/{slug}/review/", MANAGE, 302, api=False),
    Endpoint("quality_gold", "post", "/p/{slug}/quality/gold/", MANAGE, 400, api=False),
    Endpoint("my_work", "get", "/p/{slug}/me/", LABEL, 200, api=False),
    Endpoint(
        "quality_task_return",
        "post",
        "/p/{slug}/quality/tasks/{task}/return/",
        MANAGE,
        302,
        api=False,
        redirect="/p/{slug}/quality/",
    ),
    Endpoint("export", "get", "/p/{slug}/export/", VIEW_DATA, 200, api=False),
    Endpoint("project_leaderboard", "get", "/p/{slug}/leaderboard/", VIEW_DATA, 200, api=False),
    Endpoint("leaderboard", "get", "/leaderboard/", VIEW_DATA, 200, api=False),
    Endpoint(
        "api_project_leaderboard", "get", "/api/projects/{slug}/leaderboard/", VIEW_DATA, 200, True
    ),
    Endpoint("export_download", "get", "/p/{slug}/export.jsonl", VIEW_DATA, 200, api=False),
    Endpoint("models", "get", "/p/{slug}/models/", MANAGE, 200, api=False),
    Endpoint("models", "post", "/p/{slug}/models/", MANAGE, 400, False, _generation_body),
    Endpoint("generation_jobs", "get", "/p/{slug}/models/jobs/", MANAGE, 200, api=False),
    # Like a run's: a refused cancel is a message on the Models page it redirects to.
    Endpoint(
        "generation_job_cancel",
        "post",
        "/p/{slug}/models/jobs/{job}/cancel/",
        MANAGE,
        302,
        api=False,
        redirect="/p/{slug}/models/",
    ),
    # A preview without a chosen model is refused as bad input.
    Endpoint("generation_preview", "get", "/p/{slug}/models/preview/", MANAGE, 400, api=False),
    Endpoint("training", "get", "/p/{slug}/training/", MANAGE, 200, api=False),
    Endpoint("training", "post", "/p/{slug}/training/", MANAGE, 400, False, _training_body),
    Endpoint("training_run", "get", "/p/{slug}/training/{run}/", MANAGE, 200, api=False),
    # The page reports a refused cancel as a message on the run page it redirects to.
    Endpoint("training_run_cancel", "post", "/p/{slug}/training/{run}/cancel/", MANAGE, 302, False),
    Endpoint("training_run_resume", "post", "/p/{slug}/training/{run}/resume/", MANAGE, 302, False),
    Endpoint("api_projects", "get", "/api/projects/", LOGIN, 200, api=True),
    Endpoint("api_project_stats", "get", "/api/projects/{slug}/stats/", VIEW_DATA, 200, api=True),
    Endpoint(
        "api_prompt_import",
        "post",
        "/api/projects/{slug}/prompts/import/",
        MANAGE,
        400,
        True,
        _prompt_file_body,
    ),
    Endpoint("api_task_next", "get", "/api/projects/{slug}/tasks/next/", LABEL, 200, api=True),
    Endpoint(
        "api_judgments", "post", "/api/projects/{slug}/judgments/", LABEL, 400, True, _judgment_body
    ),
    Endpoint(
        "api_assignment_skip",
        "post",
        "/api/projects/{slug}/assignments/{assignment}/skip/",
        LABEL,
        400,
        True,
        lambda world: {"reason": "Other"},
    ),
    Endpoint("api_export", "get", "/api/projects/{slug}/export/", VIEW_DATA, 200, api=True),
    Endpoint(
        "api_generation_jobs", "get", "/api/projects/{slug}/generation-jobs/", MANAGE, 200, True
    ),
    Endpoint(
        "api_generation_jobs",
        "post",
        "/api/projects/{slug}/generation-jobs/",
        MANAGE,
        400,
        True,
        _generation_body,
    ),
    Endpoint(
        "api_generation_preview",
        "get",
        "/api/projects/{slug}/generation-jobs/preview/",
        MANAGE,
        400,
        True,
    ),
    Endpoint(
        "api_generation_job_cancel",
        "post",
        "/api/projects/{slug}/generation-jobs/{job}/cancel/",
        MANAGE,
        400,
        True,
    ),
    Endpoint("api_training_runs", "get", "/api/projects/{slug}/training-runs/", MANAGE, 200, True),
    Endpoint(
        "api_training_runs",
        "post",
        "/api/projects/{slug}/training-runs/",
        MANAGE,
        400,
        True,
        _training_body,
    ),
    Endpoint(
        "api_training_run", "get", "/api/projects/{slug}/training-runs/{run}/", MANAGE, 200, True
    ),
    Endpoint(
        "api_training_run_cancel",
        "post",
        "/api/projects/{slug}/training-runs/{run}/cancel/",
        MANAGE,
        400,
        True,
    ),
    Endpoint(
        "api_training_run_resume",
        "post",
        "/api/projects/{slug}/training-runs/{run}/resume/",
        MANAGE,
        400,
        True,
    ),
]
PROJECT_ENDPOINTS = [endpoint for endpoint in ENDPOINTS if "{slug}" in endpoint.path]
NOT_IN_TABLE = {"login", "logout", "healthz"}  # open to everyone by design
RELEASE = {"model_version_release", "api_version_release"}  # test_registry_pages.py
# A version's page, its forms and its promotion and retirement API are leaderboard routes
# (they show or store its record against the incumbent), checked in test_registry_pages.py.
VERSION_PAGE = {
    "model_version",
    "model_version_promote",
    "model_version_retire",
    "model_version_endpoint",
    "model_version_endpoint_clear",
    "api_version_promote",
    "api_version_retire",
}


def _endpoint_id(endpoint: Endpoint) -> str:
    return f"{endpoint.method.upper()} {endpoint.name}"


def _world(project, holder) -> dict:
    """A task assigned to `holder`, a base model, and two runs and two generation jobs: one
    running (a cancel would change it) and one finished (a cancel is refused as bad input)."""
    make_task(project)
    assignment = assignment_next(project=project, labeler=holder)
    base = make_version()
    snapshot = DatasetSnapshot.objects.create(
        project=project, format="dpo", content_hash="f" * 64, path="/x", row_count=3
    )
    runs = {
        status: TrainingRun.objects.create(
            project=project, method="dpo", base_version=base, snapshot=snapshot, status=status
        )
        for status in (TrainingRun.Status.RUNNING, TrainingRun.Status.SUCCEEDED)
    }
    jobs = {
        status: GenerationJob.objects.create(project=project, model_version=base, status=status)
        for status in (GenerationJob.Status.RUNNING, GenerationJob.Status.SUCCEEDED)
    }
    return {
        "slug": project.slug,
        "assignment": assignment.pk,
        "task": assignment.task_id,
        "base": base.pk,
        "running_run": runs[TrainingRun.Status.RUNNING].pk,
        "finished_run": runs[TrainingRun.Status.SUCCEEDED].pk,
        "running_job": jobs[GenerationJob.Status.RUNNING].pk,
        "finished_job": jobs[GenerationJob.Status.SUCCEEDED].pk,
    }


def _stored() -> dict:
    return {
        "prompts": Prompt.objects.count(),
        "imports": PromptImport.objects.count(),
        "judgments": Judgment.objects.count(),
        "assignments": sorted(Assignment.objects.values_list("pk", "status")),
        "generation_jobs": sorted(
            GenerationJob.objects.values_list("pk", "status", "cancel_requested")
        ),
        "snapshots": DatasetSnapshot.objects.count(),
        "runs": sorted(TrainingRun.objects.values_list("pk", "status", "cancel_requested")),
        "tasks": Task.objects.count(),
        "project_settings": sorted(
            Project.objects.values_list("slug", "overlap_target", "pending_limit", "gold_rate")
        ),
    }


def _send(client, endpoint: Endpoint, world: dict, *, allowed: bool):
    ended = allowed and endpoint.method == "post"
    run = world["finished_run"] if ended else world["running_run"]
    job = world["finished_job"] if ended else world["running_job"]
    path = endpoint.path.format(run=run, job=job, **world)
    headers = {"HX-Request": "true"} if endpoint.htmx else {}
    if endpoint.method == "get":
        return path, client.get(path, headers=headers)
    body = {} if allowed else endpoint.denied_body(world)
    return path, client.post(path, body or {}, headers=headers)


def _caller(name: str, project):
    if name == "anonymous":
        return None
    if name == "outsider":
        return make_user("outsider")
    if name == "superuser":
        return make_user("root", is_superuser=True)
    return make_member(project, ROLE_OF[name], name)


def test_the_table_covers_every_route_declared_in_config_urls():
    # Chat and arena routes are owner-only (other members get 404): chat/test_chat.py and
    # arena/test_arena.py cover each for every caller. The OpenAI-compatible API authenticates
    # by key, not session: test_openai_api.py covers it. Registry routes have their own
    # table in test_registry_pages.py, and so does a version's release (a candidates route
    # that acts on a version page, with the run stage it needs).
    routes = {
        route.name
        for route in [
            *urls.pages,
            *(route for route in urls_candidates.urlpatterns if route.name not in RELEASE),
            *urls_projects.urlpatterns,
            *urls_labeling.urlpatterns,
            *urls_datasets.urlpatterns,
            *urls_prompts.urlpatterns,
            *urls_quality.urlpatterns,
            *(route for route in urls_leaderboard.urlpatterns if route.name not in VERSION_PAGE),
            *urls_training.urlpatterns,
        ]
    }

    assert routes - NOT_IN_TABLE == {endpoint.name for endpoint in ENDPOINTS}


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=_endpoint_id)
@pytest.mark.parametrize("caller_name", list(GRANTS))
def test_each_caller_reaches_exactly_what_its_role_allows(login, project, caller_name, endpoint):
    caller = _caller(caller_name, project)
    holder = caller or make_member(project, Role.LABELER, "holder")
    world = _world(project, holder)
    allowed = endpoint.needs in GRANTS[caller_name]
    client = login(caller)
    before = _stored()

    path, answer = _send(client, endpoint, world, allowed=allowed)

    if allowed:
        assert answer.status_code == endpoint.ok_status
        if endpoint.name in {"training_run_cancel", "training_run_resume"}:
            assert answer["Location"] == f"/p/{project.slug}/training/{world['finished_run']}/"
        elif endpoint.ok_status == 302:  # the page reports the refusal after a redirect
            assert answer["Location"] == (endpoint.redirect or endpoint.path).format(**world)
    elif caller is None and endpoint.api:
        assert answer.status_code == 401
        assert answer["WWW-Authenticate"] == "Token"
        assert answer.json() == {"detail": "Authentication credentials were not provided."}
    elif caller is None:
        assert answer.status_code == 302
        assert answer["Location"] == f"/login/?next={path}"
    else:
        assert answer.status_code == 403
        if endpoint.api:
            detail = (
                "You are not a member of this project."
                if caller_name == "outsider"
                else f"Your role in this project ({ROLE_OF[caller_name]}) does not allow this."
            )
            assert answer.json() == {"detail": detail}
    assert _stored() == before


@pytest.mark.parametrize("endpoint", PROJECT_ENDPOINTS, ids=_endpoint_id)
def test_a_labeler_of_one_project_is_refused_everywhere_in_another(
    login, project, other_project, labeler, endpoint
):
    # The labeler holds a task in the other project, as after being removed from it.
    world = _world(other_project, labeler)
    before = _stored()

    _, answer = _send(login(labeler), endpoint, world, allowed=False)

    assert answer.status_code == 403
    if endpoint.api:
        assert answer.json() == {"detail": "You are not a member of this project."}
    assert _stored() == before
