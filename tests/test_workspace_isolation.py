"""No project reaches into another workspace: every route of the permission tables that
names something of a project (a run, a job, a judge job, a judge, a model version, a task)
is tried by an admin of a project in another workspace, through their own project's URL
with this workspace's ids: the confused deputy the issue found on promotions, judges and
constitutions. It is refused, changes nothing, and shows nothing of it.

The rows come from the three per-app tables, so a new route with an id is covered as soon
as it has its row (tests/test_permissions.py fails when it has none).
"""

import re

import pytest

from annotation.models import Role
from tests.annotation import test_permissions as annotation_table
from tests.factories import make_member, make_version
from tests.models_registry import test_permissions as registry_table
from tests.permissions import endpoint_id, leaks_the_judge_key, path_of, send, stored, world
from tests.training import test_permissions as training_table

# What a placeholder names in the world; each belongs to the world's project or workspace.
# {constitution} is left out: the world's is the built-in one every workspace reads.
OWNED = {"run", "job", "judge_job", "judge", "target", "task", "assignment"}
ROWS = [
    endpoint
    for table in (annotation_table, registry_table, training_table)
    for endpoint in table.ENDPOINTS
    if "{slug}" in endpoint.path and OWNED & set(re.findall(r"{(\w+)}", endpoint.path))
]
# What the world's ids are called in what an answer could show.
WORLD_NAMES = ("remote-judge", "judge.example")


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_every_kind_of_owned_id_is_tried():
    tried = {name for row in ROWS for name in re.findall(r"{(\w+)}", row.path)}
    assert tried | {"task", "assignment"} >= OWNED
    assert len(ROWS) >= 20


@pytest.mark.parametrize("endpoint", ROWS, ids=endpoint_id)
def test_an_admin_of_another_workspace_cannot_reach_in_through_their_own_project(
    login, project, other_project, endpoint
):
    assert project.workspace_id != other_project.workspace_id
    holder = make_member(project, Role.LABELER, "holder")
    here = world(project, holder)
    intruder = make_member(other_project, Role.ADMIN, "intruder")
    # Their own project's URL, this workspace's ids (a running run, a queued judge job,
    # the candidate: what a missing check would change).
    through_theirs = {**here, "slug": other_project.slug}
    before = stored()

    path, answer = send(login(intruder), endpoint, through_theirs, allowed=False)

    assert path == path_of(endpoint, through_theirs, allowed=False)
    assert stored() == before
    assert not leaks_the_judge_key(answer)
    if endpoint.method == "get":
        assert answer.status_code == 404, answer.content[:300]
    elif endpoint.api:
        # Refused as unknown (404), as bad input (400), or forbidden (403).
        assert answer.status_code in {400, 403, 404}, answer.content[:300]
    else:
        # A page may also report the refusal after a redirect within the caller's project.
        assert answer.status_code in {302, 400, 403, 404}, answer.content[:300]
        if answer.status_code == 302:
            assert answer["Location"].startswith(f"/p/{other_project.slug}/")
    body = answer.content.decode(errors="replace") if not answer.streaming else ""
    assert not [name for name in WORLD_NAMES if name in body]


def _put_endpoint(client, slug, version):
    return client.put(
        f"/api/projects/{slug}/model-versions/{version.pk}/endpoint/",
        '{"url": "https://sneaky.example/v1", "served_model_name": "sneaky"}',
        content_type="application/json",
    )


def test_only_a_superuser_points_the_operators_base_model_at_a_server(login, project):
    """The base model serves every workspace: a project admin who could point it at their
    own server would read every workspace's prompts."""
    base = make_version("operator-base")
    admin = make_member(project, Role.ADMIN, "adm")

    refused = _put_endpoint(login(admin), project.slug, base)

    assert refused.status_code == 403
    assert "only its owner" in refused.json()["detail"]
    base.refresh_from_db()
    assert base.serving_url == ""


def test_a_version_shared_with_another_workspace_is_seen_there_and_not_changed_there(
    login, project, other_project
):
    owned = make_version("owned", workspace=project.workspace, state="candidate")
    owner_admin = make_member(project, Role.ADMIN, "owner")
    other_admin = make_member(other_project, Role.ADMIN, "other")
    api = f"/api/projects/{other_project.slug}/model-versions/{owned.pk}/"
    assert login(other_admin).get(f"/p/{other_project.slug}/models/{owned.pk}/").status_code == 404

    shared = login(owner_admin).post(
        f"/api/projects/{project.slug}/model-versions/{owned.pk}/share/",
        {"workspace": other_project.workspace.slug},
        content_type="application/json",
    )

    assert shared.status_code == 200
    assert shared.json()["shared_with"] == [other_project.workspace.slug]
    client = login(other_admin)
    assert client.get(f"/p/{other_project.slug}/models/{owned.pk}/").status_code == 200
    # Seen and usable there, but its endpoint and sharing are the owner's to change.
    assert _put_endpoint(client, other_project.slug, owned).status_code == 403
    again = client.post(f"{api}share/", {"workspace": "anyone"}, content_type="application/json")
    assert again.status_code == 403
    owned.refresh_from_db()
    assert owned.serving_url == ""

    stopped = login(owner_admin).post(
        f"/api/projects/{project.slug}/model-versions/{owned.pk}/share/",
        {"workspace": other_project.workspace.slug, "share": False},
        content_type="application/json",
    )

    assert stopped.status_code == 200
    assert login(other_admin).get(f"/p/{other_project.slug}/models/{owned.pk}/").status_code == 404


def test_the_unscoped_version_list_shows_a_member_only_their_workspaces(
    login, project, other_project
):
    make_version("mine", workspace=project.workspace)
    make_version("theirs", workspace=other_project.workspace)
    make_version("operators")
    member = make_member(project, Role.LABELER, "member")

    names = {row["name"] for row in login(member).get("/api/model-versions/").json()}

    assert names == {"mine", "operators"}
    theirs = other_project.workspace.model_versions.get()
    assert login(member).get(f"/api/model-versions/{theirs.pk}/").status_code == 404
