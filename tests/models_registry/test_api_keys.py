"""API keys (models_registry/authentication.py, ApiKey): stored as a SHA-256 only, named,
scoped to one workspace of their user, revocable; /v1 answers a key with its workspace's
models only."""

import importlib
from datetime import timedelta

import pytest
from django.apps import apps
from django.db import connection
from django.utils import timezone

from annotation.models import Role
from annotation.projects.services import ensure_membership
from config.errors import NotFound, ServiceError
from models_registry import services
from models_registry.models import ApiKey
from tests.factories import make_member, make_project, make_user, make_version

PAGE = "/account/api-key/"


def _bearer(secret):
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def member(project):
    return make_member(project, Role.LABELER, "keyholder")


def _all_stored_values() -> str:
    """Every value of every table of the test database, as one text."""
    parts = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            parts.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(parts)


# --- stored hashed -------------------------------------------------------------------------


def test_only_the_hash_and_a_short_prefix_are_stored(member, project):
    row, secret = services.api_key_create(user=member, workspace=project.workspace, name="ci")

    assert len(secret) >= 40
    assert row.prefix == secret[:8]
    assert len(row.key_hash) == 64 and secret not in row.key_hash
    assert secret not in _all_stored_values()
    assert secret[8:] not in _all_stored_values()


def test_the_page_shows_a_new_secret_once_and_lists_keys_without_it(client, login, member, project):
    login(member)

    made = client.post(PAGE, {"name": "laptop", "workspace": str(project.workspace.pk)})
    secret = made.context["secret"]
    later = client.get(PAGE)

    assert made.status_code == 200
    assert secret in made.content.decode()
    listing = later.content.decode()
    assert secret not in listing
    assert "laptop" in listing and f"<code>{secret[:8]}…</code>" in listing
    assert project.workspace.name in listing
    assert "never" in listing  # not used yet
    assert later["Cache-Control"].startswith("max-age=0")


# --- using a key ---------------------------------------------------------------------------


def test_a_key_works_on_v1_as_bearer_and_on_the_api_as_token(client, member, project):
    make_version("visible-model")
    _, secret = services.api_key_create(user=member, workspace=project.workspace, name="k")

    models = client.get("/v1/models", headers=_bearer(secret))
    projects = client.get("/api/projects/", headers={"Authorization": f"Token {secret}"})

    assert models.status_code == 200
    assert [m["id"] for m in models.json()["data"]] == ["visible-model"]
    assert projects.status_code == 200
    assert ApiKey.objects.get().last_used_at is not None


def test_last_used_is_written_at_most_once_a_minute(client, member, project):
    row, secret = services.api_key_create(user=member, workspace=project.workspace, name="k")
    recent = timezone.now() - timedelta(seconds=30)
    ApiKey.objects.filter(pk=row.pk).update(last_used_at=recent)

    client.get("/v1/models", headers=_bearer(secret))
    assert ApiKey.objects.get().last_used_at == recent

    stale = timezone.now() - timedelta(minutes=2)
    ApiKey.objects.filter(pk=row.pk).update(last_used_at=stale)
    client.get("/v1/models", headers=_bearer(secret))
    assert ApiKey.objects.get().last_used_at > stale


def test_an_unknown_key_is_a_401(client, db):
    answer = client.get("/v1/models", headers=_bearer("not-a-key"))

    assert answer.status_code == 401
    assert answer.json()["error"]["message"] == "Invalid API key."


# --- revoking ------------------------------------------------------------------------------


def test_a_revoked_key_gets_401_and_stays_listed(client, login, member, project):
    row, secret = services.api_key_create(user=member, workspace=project.workspace, name="old")
    assert client.get("/v1/models", headers=_bearer(secret)).status_code == 200

    login(member)
    revoked = client.post(PAGE, {"action": "revoke", "key_id": str(row.pk)})
    client.logout()
    after = client.get("/v1/models", headers=_bearer(secret))
    api = client.get("/api/projects/", headers={"Authorization": f"Token {secret}"})

    assert revoked.status_code == 302
    assert after.status_code == 401
    assert after.json()["error"]["message"] == "This API key was revoked."
    assert api.status_code == 401
    assert api.json()["detail"] == "This API key was revoked."
    assert ApiKey.objects.get().revoked_at is not None


def test_another_user_cannot_revoke_my_key(client, login, member, project):
    row, secret = services.api_key_create(user=member, workspace=project.workspace, name="mine")
    other = make_member(project, Role.ADMIN, "other-admin")

    answer = login(other).post(PAGE, {"action": "revoke", "key_id": str(row.pk)})
    with pytest.raises(NotFound):
        services.api_key_revoke(user=other, key_id=row.pk)

    assert answer.status_code == 404
    assert ApiKey.objects.get().revoked_at is None
    client.logout()
    assert client.get("/v1/models", headers=_bearer(secret)).status_code == 200


@pytest.mark.parametrize("key_id", ["", "abc", "999999"])
def test_revoking_no_such_key_is_a_404(client, login, member, key_id):
    answer = login(member).post(PAGE, {"action": "revoke", "key_id": key_id})

    assert answer.status_code == 404


# --- scope ---------------------------------------------------------------------------------


def test_a_key_sees_only_its_workspaces_models_even_when_the_user_is_in_both(client, login, db):
    a, b = make_project("ws-a"), make_project("ws-b")
    user = make_member(a, Role.LABELER, "both")
    ensure_membership(project=b, user=user, role=Role.LABELER)
    make_version("shared-base")  # the operator's: every workspace sees it
    make_version("b-only", workspace=b.workspace)
    _, key_a = services.api_key_create(user=user, workspace=a.workspace, name="a")
    _, key_b = services.api_key_create(user=user, workspace=b.workspace, name="b")

    seen_a = {m["id"] for m in client.get("/v1/models", headers=_bearer(key_a)).json()["data"]}
    seen_b = {m["id"] for m in client.get("/v1/models", headers=_bearer(key_b)).json()["data"]}
    detail_a = client.get("/v1/models/b-only", headers=_bearer(key_a))
    chat_a = client.post(
        "/v1/chat/completions",
        {"model": "b-only", "messages": [{"role": "user", "content": "hi"}]},
        content_type="application/json",
        headers=_bearer(key_a),
    )
    session = {m["id"] for m in login(user).get("/v1/models").json()["data"]}

    assert seen_a == {"shared-base"}
    assert seen_b == {"shared-base", "b-only"}
    assert detail_a.status_code == chat_a.status_code == 404
    assert session == {"shared-base", "b-only"}


def test_a_key_reaches_only_its_workspaces_projects_on_the_api(client, db):
    home, away = make_project("home"), make_project("away")
    user = make_member(home, Role.ADMIN, "both")
    ensure_membership(project=away, user=user, role=Role.ADMIN)
    key = services.api_key_create(user=user, workspace=home.workspace, name="home only")[1]

    at_home = client.get("/api/projects/home/stats/", headers=_bearer(key))
    away_answer = client.get("/api/projects/away/stats/", headers=_bearer(key))

    assert at_home.status_code == 200
    assert away_answer.status_code == 403
    assert away_answer.json() == {"detail": "This API key is scoped to another workspace."}
    client.force_login(user)  # the same user's browser session is not limited by the key
    assert client.get("/api/projects/away/stats/").status_code == 200


def test_a_key_does_not_see_a_model_retired_in_its_workspaces_project(client, project, member):
    from models_registry.services import model_version_retire

    make_version("keeper")  # a project keeps one serving policy
    retired = make_version("retired-here")
    model_version_retire(project=project, version=retired, user=None)
    _, secret = services.api_key_create(user=member, workspace=project.workspace, name="k")

    listed = client.get("/v1/models", headers=_bearer(secret)).json()["data"]

    assert {m["id"] for m in listed} == {"keeper"}


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "says"),
    [("", "Give the key a name"), ("x" * 101, "Give the key a name")],
)
def test_a_key_needs_a_name(client, login, member, project, name, says):
    answer = login(member).post(PAGE, {"name": name, "workspace": str(project.workspace.pk)})

    assert answer.status_code == 400
    assert says in answer.context["error"]
    assert not ApiKey.objects.exists()


def test_a_key_needs_a_workspace_the_user_works_in(client, login, member, other_project):
    page = login(member).post(PAGE, {"name": "k", "workspace": str(other_project.workspace.pk)})
    missing = client.post(PAGE, {"name": "k"})
    with pytest.raises(ServiceError, match="workspace you work in"):
        services.api_key_create(user=member, workspace=other_project.workspace, name="k")

    assert page.status_code == missing.status_code == 400
    assert "workspace you work in" in page.context["error"]
    assert not ApiKey.objects.exists()


def test_a_user_in_no_project_cannot_make_a_key(client, login, db):
    loner = make_user("loner")

    answer = login(loner).post(PAGE, {"name": "k", "workspace": "1"})

    assert answer.status_code == 400
    assert "You work in no workspace" in answer.content.decode()
    assert not ApiKey.objects.exists()


# --- who may use the page ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "post"])
def test_the_page_needs_a_login(client, db, method):
    answer = getattr(client, method)(PAGE)

    assert answer.status_code == 302
    assert answer["Location"] == f"/login/?next={PAGE}"
    assert not ApiKey.objects.exists()


def test_v1_without_a_key_is_a_401_with_a_bearer_challenge(client, db):
    answer = client.get("/v1/models")

    assert answer.status_code == 401
    assert answer["WWW-Authenticate"].startswith("Bearer")


# --- the migration from DRF's plaintext tokens ---------------------------------------------


def test_existing_plaintext_tokens_become_hashed_keys_that_keep_working(client, member, project):
    loner = make_user("no-project")
    migration = importlib.import_module("models_registry.migrations.0014_api_keys")
    old_key, loner_key = "a" * 40, "b" * 40
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, user_id integer, "
            "created timestamp)"
        )
        cursor.executemany(
            "INSERT INTO authtoken_token (key, user_id, created) VALUES (%s, %s, %s)",
            [(old_key, member.pk, timezone.now()), (loner_key, loner.pk, timezone.now())],
        )

    class Editor:
        pass

    editor = Editor()
    editor.connection = connection
    migration.tokens_to_api_keys(apps, editor)

    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM authtoken_token")
        (left,) = cursor.fetchone()
        cursor.execute("DROP TABLE authtoken_token")
    key = ApiKey.objects.get()
    assert left == 0
    assert (key.user, key.workspace, key.prefix) == (member, project.workspace, old_key[:8])
    assert old_key not in _all_stored_values()
    assert client.get("/v1/models", headers=_bearer(old_key)).status_code == 200
    assert client.get("/v1/models", headers=_bearer(loner_key)).status_code == 401
