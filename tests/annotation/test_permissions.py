"""Who reaches which annotation page and API endpoint: every route of every annotation
feature, every kind of caller (the machinery and what "allowed" is proven with:
tests/permissions.py).

A version's page, its promote, retire and endpoint forms and the promotion and retirement
API are leaderboard routes (they show or store its record against the incumbent), and its
release is a candidates route (it generates the stage's candidates), so they are rows here
though they act on a registry version. Chat and arena routes are open to their owner only
(other members get 404): their feature files check each for every caller, and this table
names them so that coverage is checked in one place.
"""

import pytest

from annotation.arena import urls as urls_arena
from annotation.candidates import urls as urls_candidates
from annotation.chat import urls as urls_chat
from annotation.datasets import urls as urls_datasets
from annotation.judges import urls as urls_judges
from annotation.labeling import urls as urls_labeling
from annotation.leaderboard import urls as urls_leaderboard
from annotation.models import Role
from annotation.projects import urls as urls_projects
from annotation.prompts import urls as urls_prompts
from annotation.review import urls as urls_review
from models_registry.endpoints import serving_endpoint_set
from tests.annotation.arena.test_arena import ARENA_ROUTES_FOR_EVERY_CALLER
from tests.annotation.chat.test_chat import CHAT_ROUTES_FOR_EVERY_CALLER
from tests.annotation.datasets.test_data_api import DATA_API_ROUTES_FOR_EVERY_CALLER
from tests.annotation.datasets.test_data_pages import DATA_PAGE_ROUTES_FOR_EVERY_CALLER
from tests.factories import GOOD_ENDPOINT, endpoint_fields, make_member, make_user, make_version
from tests.permissions import (
    GRANTS,
    LABEL,
    LOGIN,
    MANAGE,
    OTHER_PROJECT_ROLES,
    VIEW_DATA,
    Endpoint,
    answer_summary,
    caller,
    endpoint_id,
    expected_answer,
    generation_body,
    judgment_body,
    leaks_the_judge_key,
    prompt_file_body,
    route_names,
    send,
    share_body,
    sneaky_version_body,
    stored,
    world,
)

ENDPOINTS = [
    # --- projects -----------------------------------------------------------------------
    Endpoint("home", "get", "/", LOGIN, 200, api=False),
    Endpoint("project", "get", "/p/{slug}/", LABEL, 200, api=False),
    Endpoint("api_projects", "get", "/api/projects/", LOGIN, 200, api=True),
    Endpoint("api_project_stats", "get", "/api/projects/{slug}/stats/", VIEW_DATA, 200, api=True),
    # Creating a project: the wizard is for a workspace's admins (the project's here); an
    # empty post is refused at step 1. The API answers bad input before it looks at the
    # workspace, so any signed-in caller's empty body is a 400 (a real one by a member who
    # administers no workspace is a 403: tests/annotation/projects/test_project_admin.py).
    Endpoint("project_create", "get", "/projects/new/", MANAGE, 200, api=False),
    Endpoint(
        "project_create",
        "post",
        "/projects/new/",
        MANAGE,
        400,
        False,
        lambda world: {
            "step": 3,
            "name": "Sneaky",
            "slug": "sneaky-project",
            "workspace": "alpha",
            "criterion_1": "helpful",
        },
    ),
    Endpoint(
        "api_projects",
        "post",
        "/api/projects/",
        LOGIN,
        400,
        True,
        lambda world: {"name": "Sneaky", "slug": "sneaky-project", "workspace": "alpha"},
    ),
    # Members: an allowed caller sends nothing (refused); a denied one makes the task's
    # holder (themselves, or a labeler) an admin. Removing one: test_project_admin.py.
    Endpoint("members", "get", "/p/{slug}/members/", MANAGE, 200, api=False),
    Endpoint(
        "members",
        "post",
        "/p/{slug}/members/",
        MANAGE,
        400,
        False,
        lambda world: {"action": "role", "member": world["holder"], "role": "admin"},
    ),
    Endpoint("api_members", "get", "/api/projects/{slug}/members/", MANAGE, 200, api=True),
    Endpoint(
        "api_members",
        "post",
        "/api/projects/{slug}/members/",
        MANAGE,
        400,
        True,
        lambda world: {"user": make_user("invitee").username, "role": "admin"},
    ),
    Endpoint(
        "api_member",
        "patch",
        "/api/projects/{slug}/members/{holder}/",
        MANAGE,
        400,
        True,
        lambda world: {"role": "admin"},
    ),
    Endpoint("guidelines", "get", "/p/{slug}/guidelines/", LABEL, 200, api=False),
    # An allowed caller posts no text (refused, nothing stored); a denied one real text.
    Endpoint(
        "guidelines",
        "post",
        "/p/{slug}/guidelines/",
        MANAGE,
        400,
        False,
        lambda world: {"action": "publish", "text": "Prefer the honest reply."},
    ),
    Endpoint("api_guidelines", "get", "/api/projects/{slug}/guidelines/", LABEL, 200, api=True),
    Endpoint(
        "api_guidelines",
        "post",
        "/api/projects/{slug}/guidelines/",
        MANAGE,
        400,
        True,
        lambda world: {"text": "Prefer the honest reply."},
    ),
    # --- labeling -----------------------------------------------------------------------
    Endpoint("label", "get", "/p/{slug}/label/", LABEL, 200, api=False),
    # htmx answers a refused judgment with 400; a plain form post would redirect.
    Endpoint("label", "post", "/p/{slug}/label/", LABEL, 400, False, judgment_body, htmx=True),
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
    Endpoint("api_task_next", "get", "/api/projects/{slug}/tasks/next/", LABEL, 200, api=True),
    Endpoint(
        "api_judgments", "post", "/api/projects/{slug}/judgments/", LABEL, 400, True, judgment_body
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
    # Going back to a judgment: the allowed caller has no judgment 999999 (404; changing
    # one's own is tests/annotation/labeling/test_judgment_change.py); a denied one a change.
    Endpoint("label_recent", "get", "/p/{slug}/label/recent/", LABEL, 200, api=False),
    Endpoint("label_change", "get", "/p/{slug}/label/judgments/999999/", LABEL, 404, api=False),
    Endpoint(
        "label_change",
        "post",
        "/p/{slug}/label/judgments/999999/",
        LABEL,
        404,
        False,
        lambda world: {"choice": "tie", "client_id": "5d1f3c1e-0000-4000-8000-000000000001"},
    ),
    Endpoint(
        "api_judgment_change",
        "post",
        "/api/projects/{slug}/judgments/999999/change/",
        LABEL,
        400,
        True,
        lambda world: {"choice": "tie", "client_id": "5d1f3c1e-0000-4000-8000-000000000002"},
    ),
    # --- prompts ------------------------------------------------------------------------
    Endpoint("prompts", "get", "/p/{slug}/prompts/", MANAGE, 200, api=False),
    Endpoint("prompts", "post", "/p/{slug}/prompts/", MANAGE, 400, False, prompt_file_body),
    Endpoint(
        "api_prompt_import",
        "post",
        "/api/projects/{slug}/prompts/import/",
        MANAGE,
        400,
        True,
        prompt_file_body,
    ),
    # --- candidates ---------------------------------------------------------------------
    Endpoint("models", "get", "/p/{slug}/models/", MANAGE, 200, api=False),
    Endpoint("models", "post", "/p/{slug}/models/", MANAGE, 400, False, generation_body),
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
        generation_body,
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
    # Releasing the incumbent is refused: it is no intermediate stage of a run.
    Endpoint(
        "model_version_release",
        "post",
        "/p/{slug}/models/{target}/release/",
        MANAGE,
        400,
        False,
        sneaky_version_body,
        says="incumbent is not an intermediate stage of a run",
    ),
    Endpoint(
        "api_version_release",
        "post",
        "/api/projects/{slug}/model-versions/{target}/release/",
        MANAGE,
        400,
        True,
        sneaky_version_body,
        says='{"detail":"incumbent is not an intermediate stage of a run',
    ),
    # --- review -------------------------------------------------------------------------
    Endpoint("quality", "get", "/p/{slug}/quality/", VIEW_DATA, 200, api=False),
    Endpoint("quality_gold", "post", "/p/{slug}/quality/gold/", MANAGE, 400, api=False),
    Endpoint("quality_gold_task", "get", "/p/{slug}/quality/gold/{task}/", MANAGE, 200, False),
    # An allowed caller posts no choice (refused, nothing stored).
    Endpoint("quality_gold_task", "post", "/p/{slug}/quality/gold/{task}/", MANAGE, 400, False),
    Endpoint(
        "quality_task_return",
        "post",
        "/p/{slug}/quality/tasks/{task}/return/",
        MANAGE,
        302,
        api=False,
        redirect="/p/{slug}/quality/",
    ),
    Endpoint("review", "get", "/p/{slug}/review/", MANAGE, 200, api=False),
    Endpoint("review", "post", "/p/{slug}/review/", MANAGE, 302, api=False),
    Endpoint("my_work", "get", "/p/{slug}/me/", LABEL, 200, api=False),
    # --- datasets -----------------------------------------------------------------------
    Endpoint("export", "get", "/p/{slug}/export/", VIEW_DATA, 200, api=False),
    Endpoint("export_download", "get", "/p/{slug}/export.jsonl", VIEW_DATA, 200, api=False),
    Endpoint("api_export", "get", "/api/projects/{slug}/export/", VIEW_DATA, 200, api=True),
    # The data browser. An allowed caller's empty delete is refused (no reason) and a
    # restore of a row that is not deleted too; a denied caller gives a reason. The detail
    # of a judgment that is not there is 404 to those allowed (a real one, for each caller:
    # tests/annotation/datasets/test_data_browser.py).
    Endpoint("data_browser", "get", "/p/{slug}/data/browse/", VIEW_DATA, 200, api=False),
    Endpoint("data_judgment", "get", "/p/{slug}/data/judgments/0/", VIEW_DATA, 404, api=False),
    *(
        Endpoint(
            f"{prefix}data_{thing}_{action}",
            "post",
            f"{root}/data/{thing}s/{{{thing}}}/{action}/",
            MANAGE,
            400,
            prefix == "api_",
            lambda world: {"reason": "sneaky"},
        )
        for prefix, root in (("", "/p/{slug}"), ("api_", "/api/projects/{slug}"))
        for thing in ("prompt", "response")
        for action in ("delete", "restore")
    ),
    Endpoint(
        "api_data_judgments", "get", "/api/projects/{slug}/data/judgments/", VIEW_DATA, 200, True
    ),
    # --- leaderboard, and a version's record against the incumbent ----------------------
    Endpoint("leaderboard", "get", "/leaderboard/", VIEW_DATA, 200, api=False),
    Endpoint("project_leaderboard", "get", "/p/{slug}/leaderboard/", VIEW_DATA, 200, api=False),
    Endpoint(
        "api_project_leaderboard", "get", "/api/projects/{slug}/leaderboard/", VIEW_DATA, 200, True
    ),
    Endpoint("model_version", "get", "/p/{slug}/models/{target}/", VIEW_DATA, 200, api=False),
    # The confirmation step of the incumbent says it cannot be promoted again.
    Endpoint(
        "model_version_promote_confirm",
        "get",
        "/p/{slug}/models/{target}/promote/confirm/",
        MANAGE,
        200,
        api=False,
        says="incumbent is already the incumbent.",
    ),
    # A promotion without confirm=1 (an allowed caller's empty post) is refused; a denied
    # caller confirms, so a missing check would promote. Retiring the last serving policy
    # is refused.
    Endpoint(
        "model_version_promote",
        "post",
        "/p/{slug}/models/{target}/promote/",
        MANAGE,
        400,
        False,
        lambda world: {**sneaky_version_body(world), "confirm": "1"},
        says="Nothing changed: a promotion from this page needs confirming.",
    ),
    Endpoint(
        "model_version_retire",
        "post",
        "/p/{slug}/models/{target}/retire/",
        MANAGE,
        400,
        False,
        sneaky_version_body,
        says="incumbent is the last serving policy",
    ),
    Endpoint(
        "api_version_promote",
        "post",
        "/api/projects/{slug}/model-versions/{target}/promote/",
        MANAGE,
        400,
        True,
        sneaky_version_body,
        says='{"detail":"incumbent is already the incumbent."}',
    ),
    Endpoint(
        "api_version_retire",
        "post",
        "/api/projects/{slug}/model-versions/{target}/retire/",
        MANAGE,
        400,
        True,
        sneaky_version_body,
        says='{"detail":"incumbent is the last serving policy',
    ),
    Endpoint(
        "model_version_endpoint",
        "post",
        "/p/{slug}/models/{target}/endpoint/",
        MANAGE,
        400,
        False,
        sneaky_version_body,
        says="This field is required.",
    ),
    Endpoint(
        "model_version_endpoint_clear",
        "post",
        "/p/{slug}/models/{target}/endpoint/clear/",
        MANAGE,
        302,
        False,
        sneaky_version_body,
        redirect="/p/{slug}/models/{target}/",
    ),
    Endpoint(
        "model_version_share",
        "post",
        "/p/{slug}/models/{target}/share/",
        MANAGE,
        400,
        False,
        share_body,
        says="No such workspace",
    ),
    # --- judges (writes with empty bodies are refused as bad input) ----------------------
    Endpoint("ai_judges", "get", "/p/{slug}/judges/", VIEW_DATA, 200, api=False),
    # The jobs table polls itself while a job is going.
    Endpoint(
        "ai_judges",
        "get",
        "/p/{slug}/judges/",
        VIEW_DATA,
        200,
        False,
        htmx=True,
        hx_target="judge-jobs-table",
    ),
    Endpoint("ai_judge_create", "post", "/p/{slug}/judges/new/", MANAGE, 400, api=False),
    Endpoint(
        "ai_constitution_create", "post", "/p/{slug}/judges/constitutions/", MANAGE, 400, False
    ),
    # The default exists already (the world's): ensuring it again changes nothing.
    Endpoint(
        "ai_constitution_default",
        "post",
        "/p/{slug}/judges/constitutions/default/",
        MANAGE,
        302,
        False,
        redirect="/p/{slug}/judges/constitutions/{constitution}/",
    ),
    Endpoint(
        "ai_constitution",
        "get",
        "/p/{slug}/judges/constitutions/{constitution}/",
        VIEW_DATA,
        200,
        False,
    ),
    Endpoint(
        "ai_constitution",
        "post",
        "/p/{slug}/judges/constitutions/{constitution}/",
        MANAGE,
        400,
        False,
    ),
    Endpoint("ai_judge_job_start", "post", "/p/{slug}/judges/jobs/", MANAGE, 400, api=False),
    Endpoint("ai_judge_job", "get", "/p/{slug}/judges/jobs/{judge_job}/", VIEW_DATA, 200, False),
    # Cancelling an ended job is a conflict with its state (a queued one would cancel).
    Endpoint(
        "ai_judge_job_cancel",
        "post",
        "/p/{slug}/judges/jobs/{judge_job}/cancel/",
        MANAGE,
        409,
        False,
    ),
    Endpoint("api_judges", "get", "/api/projects/{slug}/judges/", VIEW_DATA, 200, api=True),
    # Sharing names a workspace; an empty body names none (400). A denied caller names one.
    Endpoint(
        "ai_judge_share", "post", "/p/{slug}/judges/{judge}/share/", MANAGE, 400, False, share_body
    ),
    Endpoint(
        "api_judge_share",
        "post",
        "/api/projects/{slug}/judges/{judge}/share/",
        MANAGE,
        400,
        True,
        share_body,
    ),
    Endpoint("api_judges", "post", "/api/projects/{slug}/judges/", MANAGE, 400, api=True),
    Endpoint(
        "api_constitutions", "get", "/api/projects/{slug}/constitutions/", VIEW_DATA, 200, True
    ),
    Endpoint("api_constitutions", "post", "/api/projects/{slug}/constitutions/", MANAGE, 400, True),
    Endpoint(
        "api_constitution",
        "get",
        "/api/projects/{slug}/constitutions/{constitution}/",
        VIEW_DATA,
        200,
        True,
    ),
    Endpoint(
        "api_constitution",
        "post",
        "/api/projects/{slug}/constitutions/{constitution}/",
        MANAGE,
        400,
        True,
    ),
    Endpoint("api_judge_jobs", "get", "/api/projects/{slug}/judge-jobs/", VIEW_DATA, 200, True),
    Endpoint("api_judge_jobs", "post", "/api/projects/{slug}/judge-jobs/", MANAGE, 400, True),
    Endpoint(
        "api_judge_job", "get", "/api/projects/{slug}/judge-jobs/{judge_job}/", VIEW_DATA, 200, True
    ),
    Endpoint(
        "api_judge_job_cancel",
        "post",
        "/api/projects/{slug}/judge-jobs/{judge_job}/cancel/",
        MANAGE,
        409,
        True,
    ),
    Endpoint("judges_agreement", "get", "/p/{slug}/judges/agreement/", VIEW_DATA, 200, False),
    Endpoint(
        "api_judges_agreement",
        "get",
        "/api/projects/{slug}/judges/agreement/",
        VIEW_DATA,
        200,
        True,
    ),
    # An empty form names no mode: refused as bad input.
    Endpoint(
        "review_ai_fill",
        "post",
        "/p/{slug}/review/ai/",
        MANAGE,
        400,
        False,
        lambda world: {"mode": "all"},
    ),
    Endpoint(
        "api_review_ai_fill",
        "post",
        "/api/projects/{slug}/review/ai/",
        MANAGE,
        400,
        True,
        lambda world: {"mode": "all"},
    ),
    # An empty form names no import: refused as bad input (an import's own callers:
    # tests/annotation/test_imported_judgments.py).
    Endpoint(
        "review_import_fill",
        "post",
        "/p/{slug}/review/import/",
        MANAGE,
        400,
        False,
        lambda world: {"source_import": 1, "share": 1},
    ),
    Endpoint(
        "api_review_import_fill",
        "post",
        "/api/projects/{slug}/review/import/",
        MANAGE,
        400,
        True,
        lambda world: {"source_import": 1, "share": 1},
    ),
]
PROJECT_ENDPOINTS = [endpoint for endpoint in ENDPOINTS if "{slug}" in endpoint.path]
# Every annotation route this file and the chat, arena and data engine files check for
# every caller.
COVERED = (
    {e.name for e in ENDPOINTS}
    | CHAT_ROUTES_FOR_EVERY_CALLER
    | ARENA_ROUTES_FOR_EVERY_CALLER
    | DATA_PAGE_ROUTES_FOR_EVERY_CALLER
    | DATA_API_ROUTES_FOR_EVERY_CALLER
)


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # Hundreds of users sign in here; the production hasher would take most of a minute.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_the_tables_cover_every_annotation_route():
    routes = route_names(
        urls_projects,
        urls_labeling,
        urls_prompts,
        urls_candidates,
        urls_review,
        urls_datasets,
        urls_leaderboard,
        urls_judges,
        urls_chat,
        urls_arena,
    )

    assert route_names(urls_chat) == CHAT_ROUTES_FOR_EVERY_CALLER
    assert route_names(urls_arena) == ARENA_ROUTES_FOR_EVERY_CALLER
    assert routes == COVERED


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=endpoint_id)
@pytest.mark.parametrize("caller_name", list(GRANTS))
def test_each_caller_reaches_exactly_what_its_role_allows(login, project, caller_name, endpoint):
    user = caller(caller_name, project)
    holder = user or make_member(project, Role.LABELER, "holder")
    facts = world(project, holder)
    client = login(user)
    before = stored()

    path, answer = send(client, endpoint, facts, allowed=endpoint.needs in GRANTS[caller_name])

    expected = expected_answer(endpoint, caller_name, path, facts)
    assert answer_summary(answer, expected) == expected
    assert not leaks_the_judge_key(answer)
    assert stored() == before


@pytest.mark.parametrize("endpoint", PROJECT_ENDPOINTS, ids=endpoint_id)
@pytest.mark.parametrize("role", OTHER_PROJECT_ROLES)
def test_a_member_of_one_project_is_refused_everywhere_in_another(
    login, project, other_project, role, endpoint
):
    # The member holds a task in the other project, as after being removed from it.
    member = caller(role, project)
    facts = world(other_project, member)
    before = stored()

    _, answer = send(login(member), endpoint, facts, allowed=False)

    assert answer.status_code == 403
    if endpoint.api:
        assert answer.json() == {"detail": "You are not a member of this project."}
    assert stored() == before


# --- a version's serving endpoint, set from its page (moved from test_endpoints.py) --------


@pytest.mark.parametrize("caller_name", [*GRANTS, "other-admin"])
@pytest.mark.parametrize("action", ["endpoint/", "endpoint/clear/"])
def test_only_admins_change_the_endpoint_from_the_page(
    login, project, other_project, caller_name, action
):
    version = make_version("v", workspace=project.workspace)
    serving_endpoint_set(version=version, url="http://old/v1", served_model_name="old")
    if caller_name == "other-admin":
        user = make_member(other_project, Role.ADMIN, "adm2")
    else:
        user = caller(caller_name, project)

    answer = login(user).post(f"/p/alpha/models/{version.pk}/{action}", GOOD_ENDPOINT)

    if caller_name in {"admin", "superuser"}:
        assert answer.status_code == 302
        assert answer["Location"] == f"/p/alpha/models/{version.pk}/"
        assert endpoint_fields(version) != ("http://old/v1", "old", "")
    else:
        assert answer.status_code == (302 if caller_name == "anonymous" else 403)
        if caller_name == "anonymous":
            assert answer["Location"].startswith("/login/")
        assert endpoint_fields(version) == ("http://old/v1", "old", "")
