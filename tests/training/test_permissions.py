"""Who reaches which training page and API endpoint: every route of training/urls.py,
every kind of caller (the machinery and what "allowed" is proven with: tests/permissions.py).
"""

import pytest

from annotation.models import Role
from tests.factories import make_member
from tests.permissions import (
    GRANTS,
    MANAGE,
    OTHER_PROJECT_ROLES,
    Endpoint,
    answer_summary,
    caller,
    endpoint_id,
    expected_answer,
    route_names,
    send,
    stored,
    training_body,
    world,
)
from training import urls as urls_training

ENDPOINTS = [
    Endpoint("training", "get", "/p/{slug}/training/", MANAGE, 200, api=False),
    # The runs list polls itself while a run is active.
    Endpoint(
        "training",
        "get",
        "/p/{slug}/training/",
        MANAGE,
        200,
        False,
        htmx=True,
        hx_target="run-list",
    ),
    Endpoint("training", "post", "/p/{slug}/training/", MANAGE, 400, False, training_body),
    Endpoint("training_run", "get", "/p/{slug}/training/{run}/", MANAGE, 200, api=False),
    # The page reports a refused cancel or resume as a message on the run page it
    # redirects to.
    Endpoint(
        "training_run_cancel",
        "post",
        "/p/{slug}/training/{run}/cancel/",
        MANAGE,
        302,
        False,
        redirect="/p/{slug}/training/{run}/",
    ),
    Endpoint(
        "training_run_resume",
        "post",
        "/p/{slug}/training/{run}/resume/",
        MANAGE,
        302,
        False,
        redirect="/p/{slug}/training/{run}/",
    ),
    Endpoint("api_training_runs", "get", "/api/projects/{slug}/training-runs/", MANAGE, 200, True),
    Endpoint(
        "api_training_runs",
        "post",
        "/api/projects/{slug}/training-runs/",
        MANAGE,
        400,
        True,
        training_body,
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
COVERED = {endpoint.name for endpoint in ENDPOINTS}


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # Dozens of users sign in here; the production hasher would take most of a minute.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_the_table_covers_every_training_route():
    assert route_names(urls_training) == COVERED


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
    assert stored() == before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=endpoint_id)
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
