"""The machinery of the per-app permission tables (tests/<app>/test_permissions.py): who
the callers are and what each may do, the world a table's requests act on, how a request
is sent, what its answer must be, a snapshot of everything a request could change, and the
walk over the URL resolver that tests/test_permissions.py checks the tables against.

"Allowed" is proven with safe requests: GETs, and POSTs with an empty body or aimed at a
run or job that has already finished (or a version the action is refused for), which must
be refused as bad input (400; a page redirects with a message), never 403. Denied writes
carry well-formed input and aim at a running run or job (or a version the action would
change), so a missing check would change stored data; every request is checked to change
nothing.
"""

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLResolver, get_resolver

from annotation.candidates.models import GenerationJob
from annotation.judges import jobs as judge_jobs
from annotation.judges import services as judge_services
from annotation.labeling.services import assignment_next
from annotation.models import (
    Assignment,
    Constitution,
    Guidelines,
    Judge,
    JudgeJob,
    Judgment,
    Membership,
    Project,
    Prompt,
    PromptImport,
    Response,
    Role,
    Task,
    Workspace,
)
from models_registry.models import ModelVersion, ProjectModelState, StateChange
from tests.factories import jsonl_bytes, make_member, make_task, make_user, make_version
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
# Members of one project, each refused everywhere in another.
OTHER_PROJECT_ROLES = ["labeler", "admin"]
# The judge's endpoint key: no answer to anyone may carry it.
JUDGE_KEY = "sk-table-secret-key-1234567890"
# What a missing check on a version's serving endpoint would store.
SNEAKY_ENDPOINT = {"url": "http://sneaky:1/v1", "served_model_name": "sneaky"}


def caller(name: str, project):
    """The user called `name` in GRANTS (None for anonymous), a member of `project`."""
    if name == "anonymous":
        return None
    if name == "outsider":
        return make_user("outsider")
    if name == "superuser":
        return make_user("root", is_superuser=True)
    return make_member(project, ROLE_OF[name], name)


# --- request bodies a denied caller sends (well-formed: a missing check would act) ---------


def no_body(world):
    return None


def judgment_body(world):
    return {"assignment_id": world["assignment"], "client_id": str(uuid.uuid4()), "choice": "tie"}


def prompt_file_body(world):
    content = jsonl_bytes([{"prompt": "Why is the sky blue?"}])
    return {"file": SimpleUploadedFile("prompts.jsonl", content)}


def generation_body(world):
    return {
        "model_version": world["base"],
        "samples_per_prompt": 1,
        "max_new_tokens": 8,
        "temperature": 0.7,
    }


def training_body(world):
    return {
        "base_version": world["base"],
        "beta": 0.1,
        "learning_rate": 1e-5,
        "epochs": 1,
        "nll_weight": 0,
        "seed": 0,
    }


def share_body(world):
    """Share with the workspace ``sneaky`` (made in the world): a missing check would."""
    return {"workspace": "sneaky"}


def sneaky_version_body(world):
    """An import, a promotion, a retirement or an endpoint a missing check would store."""
    return {"name": "sneaky", "source": world.get("model_dir", "/x"), **SNEAKY_ENDPOINT}


@dataclass(frozen=True)
class Endpoint:
    """One row of a permission table. In `path` (and `redirect`), {run}, {job}, {judge_job}
    and {target} are a finished run or job and the incumbent for an allowed write (so it is
    refused), and a running or queued one and a candidate for a denied one (so a missing
    check would change it); the rest comes from the world."""

    name: str  # the route's URL name
    method: str
    path: str
    needs: str
    ok_status: int
    api: bool
    denied_body: Callable[[dict], dict | None] = no_body  # what a denied caller sends
    htmx: bool = False
    hx_target: str = ""  # an htmx poll of one part of the page
    redirect: str = ""  # where an allowed 302 goes, formatted like path; default: path
    says: str = ""  # what the allowed answer's body holds
    refused: str = ""  # the detail a refused member of no project gets, if not the usual


def endpoint_id(endpoint: Endpoint) -> str:
    return f"{endpoint.method.upper()} {endpoint.name}"


def world(project, holder) -> dict:
    """A task assigned to `holder`; the incumbent (the only serving policy, the base of
    runs and jobs) and a candidate trained from it; two runs, two generation jobs and two
    judge jobs: one going (a cancel would change it) and one ended (a cancel is refused as
    bad input); the default constitution and a judge holding JUDGE_KEY."""
    make_task(project)
    assignment = assignment_next(project=project, labeler=holder)
    # Both owned by the project's workspace, as if imported and trained there: another
    # workspace's project may not see them.
    incumbent = make_version("incumbent", workspace=project.workspace)
    candidate = make_version(
        "candidate",
        state=ModelVersion.State.CANDIDATE,
        method="dpo",
        parent=incumbent,
        workspace=project.workspace,
    )
    snapshot = DatasetSnapshot.objects.create(
        project=project, format="dpo", content_hash="f" * 64, path="/x", row_count=3
    )
    runs = {
        status: TrainingRun.objects.create(
            project=project, method="dpo", base_version=incumbent, snapshot=snapshot, status=status
        )
        for status in (TrainingRun.Status.RUNNING, TrainingRun.Status.SUCCEEDED)
    }
    jobs = {
        status: GenerationJob.objects.create(
            project=project, model_version=incumbent, status=status
        )
        for status in (GenerationJob.Status.RUNNING, GenerationJob.Status.SUCCEEDED)
    }
    Workspace.objects.get_or_create(slug="sneaky", defaults={"name": "Sneaky"})
    constitution = judge_services.ensure_default_constitution()
    judge = judge_services.judge_create(
        workspace=project.workspace,
        name="remote-judge",
        backend="remote",
        endpoint_url="https://judge.example/v1",
        endpoint_model="judge-model",
        api_key=JUDGE_KEY,
        constitution=constitution,
    )
    queued, ended = (
        judge_jobs.judge_job_start(project=project, judge=judge, kind="pairwise", max_requests=10)
        for _ in range(2)
    )
    JudgeJob.objects.filter(pk=ended.pk).update(status=JudgeJob.Status.SUCCEEDED)
    return {
        "slug": project.slug,
        "assignment": assignment.pk,
        "task": assignment.task_id,
        "base": incumbent.pk,
        "incumbent": incumbent.pk,
        "candidate": candidate.pk,
        "running_run": runs[TrainingRun.Status.RUNNING].pk,
        "finished_run": runs[TrainingRun.Status.SUCCEEDED].pk,
        "running_job": jobs[GenerationJob.Status.RUNNING].pk,
        "finished_job": jobs[GenerationJob.Status.SUCCEEDED].pk,
        "queued_judge_job": queued.pk,
        "ended_judge_job": ended.pk,
        "constitution": constitution.pk,
        "judge": judge.pk,
        "holder": holder.pk,  # the members routes' user id
        # The held task's prompt and first response (the data browser's delete routes).
        "prompt": assignment.task.prompt_id,
        "response": assignment.task.links.order_by("position").first().response_id,
    }


def stored() -> dict:
    """Everything a request of the tables could change."""
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
        "versions": sorted(
            ModelVersion.objects.values_list(
                "name", "state", "promoted_at", "serving_url", "intermediate"
            )
        ),
        "state_changes": StateChange.objects.count(),
        "constitutions": Constitution.objects.count(),
        "judges": Judge.objects.count(),
        "judge_jobs": sorted(JudgeJob.objects.values_list("pk", "status")),
        "judge_shares": sorted(Judge.shared_with.through.objects.values_list("pk", flat=True)),
        "version_shares": sorted(
            ModelVersion.shared_with.through.objects.values_list("pk", flat=True)
        ),
        "project_states": sorted(
            ProjectModelState.objects.values_list("project_id", "version_id", "state")
        ),
        "memberships": sorted(Membership.objects.values_list("project_id", "user_id", "role")),
        "guidelines": Guidelines.objects.count(),
        "deleted_prompts": sorted(
            Prompt.objects.filter(deleted_at__isnull=False).values_list("pk", flat=True)
        ),
        "deleted_responses": sorted(
            Response.objects.filter(deleted_at__isnull=False).values_list("pk", flat=True)
        ),
    }


def path_of(endpoint: Endpoint, world: dict, *, allowed: bool, template: str = "") -> str:
    ended = allowed and endpoint.method != "get"
    return (template or endpoint.path).format(
        run=world["finished_run" if ended else "running_run"],
        job=world["finished_job" if ended else "running_job"],
        judge_job=world["ended_judge_job" if ended else "queued_judge_job"],
        target=world["incumbent" if allowed else "candidate"],
        **world,
    )


def send(client, endpoint: Endpoint, world: dict, *, allowed: bool):
    """The request of `endpoint`: a safe one if `allowed`, else one a missing check would
    carry out. Pages post forms; PUT and DELETE carry JSON. Answers (path, response)."""
    path = path_of(endpoint, world, allowed=allowed)
    headers = {"HX-Request": "true"} if endpoint.htmx else {}
    if endpoint.hx_target:
        headers["HX-Target"] = endpoint.hx_target
    if endpoint.method == "get":
        return path, client.get(path, headers=headers)
    body = ({} if allowed else endpoint.denied_body(world)) or {}
    if endpoint.method == "post":
        return path, client.post(path, body, headers=headers)
    send_json = getattr(client, endpoint.method)
    return path, send_json(path, json.dumps(body), content_type="application/json")


def expected_answer(endpoint: Endpoint, caller_name: str, path: str, world: dict) -> dict:
    """What the answer to `caller_name` must be: the allowed status (with where a redirect
    goes and what the body says), or the refusal its kind of caller gets."""
    if endpoint.needs in GRANTS[caller_name]:
        expected = {"status": endpoint.ok_status}
        if endpoint.ok_status == 302:  # the page reports the refusal after a redirect
            template = endpoint.redirect or endpoint.path
            expected["location"] = path_of(endpoint, world, allowed=True, template=template)
        if endpoint.says:
            expected["says"] = endpoint.says
        return expected
    if caller_name == "anonymous" and endpoint.api:
        return {
            "status": 401,
            "www_authenticate": "Token",
            "json": {"detail": "Authentication credentials were not provided."},
        }
    if caller_name == "anonymous":
        return {"status": 302, "location": f"/login/?next={path}"}
    if not endpoint.api:
        return {"status": 403}
    detail = (
        endpoint.refused or "You are not a member of this project."
        if caller_name == "outsider"
        else f"Your role in this project ({ROLE_OF[caller_name]}) does not allow this."
    )
    return {"status": 403, "json": {"detail": detail}}


def answer_summary(answer, expected: dict) -> dict:
    """The parts of `answer` that `expected` names, read the same way, to compare whole."""
    summary = {"status": answer.status_code}
    if "location" in expected:
        summary["location"] = answer.get("Location")
    if "www_authenticate" in expected:
        summary["www_authenticate"] = answer.get("WWW-Authenticate")
    if "json" in expected:
        summary["json"] = answer.json()
    if "says" in expected:
        content = answer.content.decode()
        summary["says"] = expected["says"] if expected["says"] in content else content[:2000]
    return summary


def leaks_the_judge_key(answer) -> bool:
    if answer.streaming:  # a download
        return JUDGE_KEY.encode() in b"".join(answer.streaming_content)
    return JUDGE_KEY.encode() in answer.content


# --- which routes exist -------------------------------------------------------------------


def route_names(*url_modules) -> set[str]:
    return {route.name for module in url_modules for route in module.urlpatterns}


def every_named_route(resolver=None, prefix: str = "") -> list[tuple[str, str]]:
    """(name, path pattern) of every named route Django serves, through every include,
    except the Django admin's."""
    resolver = resolver or get_resolver()
    routes = []
    for entry in resolver.url_patterns:
        pattern = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            if pattern.startswith("admin/"):
                continue
            routes.extend(every_named_route(entry, pattern))
        elif entry.name:
            routes.append((entry.name, pattern))
    return routes
