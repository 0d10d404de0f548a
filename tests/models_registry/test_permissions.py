"""Who reaches which registry page and API endpoint: every route of models_registry/urls.py
and of the API key page, every kind of caller (the machinery and what "allowed" is proven
with: tests/permissions.py). The OpenAI-compatible /v1 routes authenticate by key, not
session: test_openai_api.py checks each for every kind of caller, and this file names them
so that coverage is checked in one place.

A version's page, its forms and its promotion, retirement and release API are annotation
routes (leaderboard and candidates): tests/annotation/test_permissions.py.
"""

import json

import pytest

from annotation.models import Role
from models_registry import urls as urls_registry
from models_registry import urls_openai
from models_registry.endpoints import serving_endpoint_set
from tests.factories import GOOD_ENDPOINT, endpoint_fields, make_member, make_version
from tests.models_registry.test_openai_api import KEY_AUTH_ROUTES
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
    route_names,
    send,
    share_body,
    sneaky_version_body,
    stored,
    world,
)

NO_PROJECT = "You are not a member of any project."
# {target} is the incumbent for an allowed caller and a candidate for a denied one.
ENDPOINTS = [
    Endpoint("model_lineage", "get", "/p/{slug}/models/lineage/", VIEW_DATA, 200, api=False),
    Endpoint("model_import", "get", "/p/{slug}/models/import/", MANAGE, 200, api=False),
    Endpoint(
        "model_import",
        "post",
        "/p/{slug}/models/import/",
        MANAGE,
        400,
        False,
        sneaky_version_body,
        says="field is required",
    ),
    # A member of any project sees the versions of their workspaces; a user in none, nothing.
    Endpoint(
        "api_versions",
        "get",
        "/api/model-versions/",
        LABEL,
        200,
        True,
        says='"incumbent"',
        refused=NO_PROJECT,
    ),
    Endpoint(
        "api_version",
        "get",
        "/api/model-versions/{target}/",
        LABEL,
        200,
        True,
        says='"incumbent"',
        refused=NO_PROJECT,
    ),
    Endpoint(
        "api_version_import",
        "post",
        "/api/projects/{slug}/model-versions/import/",
        MANAGE,
        400,
        True,
        sneaky_version_body,
        says='{"name":["This field is required."],"source":["This field is required."]}',
    ),
    Endpoint(
        "api_version_endpoint",
        "put",
        "/api/projects/{slug}/model-versions/{target}/endpoint/",
        MANAGE,
        400,
        True,
        sneaky_version_body,
        says='{"url":["This field is required."]',
    ),
    Endpoint(
        "api_version_endpoint",
        "delete",
        "/api/projects/{slug}/model-versions/{target}/endpoint/",
        MANAGE,
        200,
        True,
        sneaky_version_body,
        says='"serving_endpoint":null',
    ),
    Endpoint(
        "api_version_share",
        "post",
        "/api/projects/{slug}/model-versions/{target}/share/",
        MANAGE,
        400,
        True,
        share_body,
        says='{"workspace":["This field is required."]}',
    ),
    # Any signed-in user may hold a key (making one is test_openai_api.py's).
    Endpoint("api_key", "get", "/account/api-key/", LOGIN, 200, api=False),
]
PROJECT_ENDPOINTS = [endpoint for endpoint in ENDPOINTS if "{slug}" in endpoint.path]
COVERED = {endpoint.name for endpoint in ENDPOINTS} | set(KEY_AUTH_ROUTES)


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # Dozens of users sign in here; the production hasher would take most of a minute.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def facts(project, tiny_model_dir):
    """The world of tests/permissions.py, with a model folder a missing check would import."""

    def _facts(in_project, holder):
        return {**world(in_project, holder), "model_dir": str(tiny_model_dir)}

    return _facts


def test_the_tables_cover_every_registry_route():
    assert route_names(urls_registry, urls_openai) == COVERED


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=endpoint_id)
@pytest.mark.parametrize("caller_name", list(GRANTS))
def test_each_caller_reaches_exactly_what_its_role_allows(
    login, project, facts, caller_name, endpoint
):
    user = caller(caller_name, project)
    holder = user or make_member(project, Role.LABELER, "holder")
    here = facts(project, holder)
    client = login(user)
    before = stored()

    path, answer = send(client, endpoint, here, allowed=endpoint.needs in GRANTS[caller_name])

    expected = expected_answer(endpoint, caller_name, path, here)
    assert answer_summary(answer, expected) == expected
    assert stored() == before


@pytest.mark.parametrize("endpoint", PROJECT_ENDPOINTS, ids=endpoint_id)
@pytest.mark.parametrize("role", OTHER_PROJECT_ROLES)
def test_a_member_of_one_project_is_refused_everywhere_in_another(
    login, project, other_project, facts, role, endpoint
):
    member = caller(role, project)
    elsewhere = facts(other_project, member)
    before = stored()

    _, answer = send(login(member), endpoint, elsewhere, allowed=False)

    assert answer.status_code == 403
    if endpoint.api:
        assert answer.json() == {"detail": "You are not a member of this project."}
    assert stored() == before


# --- a version's serving endpoint, set through the API (moved from test_endpoints.py) -----


def _endpoint_api(client, method, version, body):
    path = f"/api/projects/alpha/model-versions/{version.pk}/endpoint/"
    if method == "put":
        return client.put(path, json.dumps(body), content_type="application/json")
    return client.delete(path)


@pytest.mark.parametrize("caller_name", [*GRANTS, "other-admin"])
@pytest.mark.parametrize("method", ["put", "delete"])
def test_only_admins_change_the_endpoint_through_the_api(
    login, project, other_project, caller_name, method
):
    version = make_version("v", workspace=project.workspace)
    serving_endpoint_set(version=version, url="http://old/v1", served_model_name="old")
    if caller_name == "other-admin":
        user = make_member(other_project, Role.ADMIN, "adm2")
    else:
        user = caller(caller_name, project)

    answer = _endpoint_api(login(user), method, version, GOOD_ENDPOINT)

    if caller_name in {"admin", "superuser"}:
        assert answer.status_code == 200
        assert endpoint_fields(version) != ("http://old/v1", "old", "")
    else:
        assert answer.status_code == (401 if caller_name == "anonymous" else 403)
        assert endpoint_fields(version) == ("http://old/v1", "old", "")
