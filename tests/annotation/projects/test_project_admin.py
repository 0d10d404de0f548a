"""Running a project without /admin/: creating a project (wizard, service, API), its
members (page, service, API), what a workspace's admins see, and the grouped navigation."""

import json

import pytest

from annotation.leaderboard.selectors import projects_with_data_access
from annotation.models import Guidelines, Membership, Project, Role, Workspace
from annotation.projects import services
from annotation.projects.permissions import project_role, projects_visible_to
from config.errors import Conflict, NotFound, ServiceError
from tests.factories import make_member, make_project, make_user


def _stored():
    return (
        sorted(Project.objects.values_list("slug", flat=True)),
        sorted(Workspace.objects.values_list("slug", flat=True)),
        sorted(Membership.objects.values_list("project__slug", "user__username", "role")),
        Guidelines.objects.count(),
    )


# --- creating a project: the service ------------------------------------------------------


def test_an_admin_creates_a_project_in_their_workspace(project, admin_member):
    created = services.project_create(
        user=admin_member,
        name="Poems",
        workspace_slug=project.workspace.slug,
        criteria=["Rhyme", "metre"],
        guidelines="# Be kind\r\nto poets",
    )

    assert (created.slug, created.workspace_id) == ("poems", project.workspace_id)
    assert created.criteria == ["rhyme", "metre"]
    assert project_role(user=admin_member, project=created) == Role.ADMIN
    assert Membership.objects.get(project=created).user == admin_member
    guidelines = Guidelines.objects.get(project=created)
    assert (guidelines.version, guidelines.text, guidelines.created_by) == (
        1,
        "# Be kind\nto poets",
        admin_member,
    )


def test_a_superuser_creates_a_project_in_a_new_workspace(db):
    root = make_user("root", is_superuser=True)

    created = services.project_create(
        user=root, name="Fresh", slug="fresh-1", new_workspace="Lab Two"
    )

    assert created.workspace.name == "Lab Two"
    assert created.workspace.slug == "lab-two"
    assert created.criteria == ["helpful", "harmless", "honest"]
    assert not Guidelines.objects.filter(project=created).exists()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": ""}, "Give the project a name"),
        ({"name": "x" * 201}, "Give the project a name"),
        ({"slug": "no spaces"}, "The slug is letters"),
        ({"slug": "alpha"}, "exists already"),
        ({"criteria": []}, "Give 1 to 8 criteria"),
        ({"criteria": ["a", "a"]}, "must differ"),
        ({"criteria": "helpful"}, "Give 1 to 8 criteria"),
        ({"guidelines": "a\x00b"}, "NUL"),
        ({"workspace_slug": ""}, "Choose the workspace"),
        ({"workspace_slug": "nowhere"}, "only in a workspace where you are an admin"),
        ({"workspace_slug": None, "new_workspace": "Mine"}, "Only a superuser"),
    ],
)
def test_bad_input_creates_nothing(project, admin_member, fields, message):
    before = _stored()
    arguments = {"user": admin_member, "name": "Poems", "workspace_slug": project.workspace.slug}

    with pytest.raises(Exception, match=message):
        services.project_create(**{**arguments, **fields})

    assert _stored() == before


def test_a_labeler_may_not_create_a_project_in_their_workspace(project, labeler):
    with pytest.raises(Exception, match="only in a workspace where you are an admin"):
        services.project_create(user=labeler, name="X", workspace_slug=project.workspace.slug)
    assert not Project.objects.filter(slug="x").exists()


# --- creating a project: the wizard --------------------------------------------------------


def _wizard(project, **extra):
    fields = {
        "name": "Poems",
        "slug": "",
        "workspace": project.workspace.slug,
        "task_kinds": ["comparison", "rating"],
        "criterion_1": "rhyme",
        "criterion_2": "",
        "guidelines": "Read twice.",
    }
    return {**fields, **extra}


def test_the_wizard_walks_three_steps_and_creates_the_project(login, project, admin_member):
    client = login(admin_member)

    first = client.get("/projects/new/")
    second = client.post("/projects/new/", {**_wizard(project), "step": 1})
    third = client.post("/projects/new/", {**_wizard(project), "step": 2})
    done = client.post("/projects/new/", {**_wizard(project), "step": 3})

    assert first.status_code == 200 and first.context["step"] == 1
    assert second.status_code == 200 and second.context["step"] == 2
    assert third.status_code == 200 and third.context["step"] == 3
    assert done.status_code == 302 and done["Location"] == "/p/poems/members/"
    created = Project.objects.get(slug="poems")
    assert created.criteria == ["rhyme"]
    assert created.task_kinds == ["comparison", "rating"]
    assert Guidelines.objects.get(project=created).text == "Read twice."
    assert project_role(user=admin_member, project=created) == Role.ADMIN


def test_the_wizard_goes_back_keeping_the_answers(login, project, admin_member):
    answer = login(admin_member).post(
        "/projects/new/", {**_wizard(project, name="Kept"), "step": 2, "back": "1"}
    )

    assert answer.status_code == 200 and answer.context["step"] == 1
    assert 'value="Kept"' in answer.content.decode()
    assert not Project.objects.filter(name="Kept").exists()


@pytest.mark.parametrize(
    ("extra", "step", "says"),
    [
        ({"name": ""}, 1, "This field is required"),
        ({"workspace": "nowhere"}, 1, "Select a valid choice"),
        ({"slug": "alpha"}, 3, "exists already"),
        ({"criterion_1": ""}, 2, "Give at least one criterion"),
        ({"task_kinds": []}, 2, "Choose at least one kind of task"),
        ({"task_kinds": ["poem"]}, 2, "Select a valid choice"),
        ({"criterion_1": "two words"}, 3, "Criteria are short words"),
    ],
)
def test_the_wizard_refuses_bad_input_at_its_step(login, project, admin_member, extra, step, says):
    before = _stored()

    answer = login(admin_member).post("/projects/new/", {**_wizard(project, **extra), "step": 3})

    assert answer.status_code in (400, 409)
    assert answer.context["step"] == step
    assert says in answer.content.decode()
    assert _stored() == before


def test_the_home_page_offers_new_project_to_admins_only(login, project, admin_member, labeler):
    assert 'href="/projects/new/"' in login(admin_member).get("/").content.decode()
    assert 'href="/projects/new/"' not in login(labeler).get("/").content.decode()


def test_the_wizard_is_refused_to_a_labeler(login, project, labeler):
    assert login(labeler).get("/projects/new/").status_code == 403
    answer = login(labeler).post("/projects/new/", {**_wizard(project), "step": 3})
    assert answer.status_code == 403
    assert not Project.objects.filter(slug="poems").exists()


# --- creating a project: the API ---------------------------------------------------------


def test_the_api_creates_a_project(login, project, admin_member):
    body = {"name": "Poems", "workspace": project.workspace.slug, "criteria": ["rhyme"]}

    answer = login(admin_member).post("/api/projects/", body, content_type="application/json")

    assert answer.status_code == 201
    assert answer.json() == {
        "slug": "poems",
        "workspace": project.workspace.slug,
        "name": "Poems",
        "description": "",
    }
    assert project_role(user=admin_member, project=Project.objects.get(slug="poems")) == "admin"


NO_KINDS = "Choose at least one kind of task."


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({}, 400, "Give the project a name of 1 to 200 characters."),
        (["a list"], 400, None),
        ({"name": "P", "workspace": "alpha", "criteria": "x"}, 400, "Give 1 to 8 criteria."),
        ({"name": "P", "workspace": "alpha", "task_kinds": []}, 400, NO_KINDS),
        ({"name": "P", "workspace": "alpha", "task_kinds": "rating"}, 400, NO_KINDS),
        (
            {"name": "P", "workspace": "alpha", "task_kinds": ["poem"]},
            400,
            "Unknown kind of task 'poem': one of demonstration, comparison, ranking, rating, "
            "chat, arena.",
        ),
        ({"name": "P", "slug": "alpha", "workspace": "alpha"}, 409, None),
        ({"name": "P", "workspace": "beta"}, 403, None),
    ],
)
def test_the_api_refuses_bad_input_storing_nothing(
    login, project, other_project, admin_member, body, status, detail
):
    before = _stored()

    answer = login(admin_member).post(
        "/api/projects/", json.dumps(body), content_type="application/json"
    )

    assert answer.status_code == status
    if detail:
        assert answer.json() == {"detail": detail}
    assert _stored() == before


# --- members: the services ----------------------------------------------------------------


def test_member_add_finds_users_by_username_or_email(project):
    make_user("ann", email="Ann@Example.org")
    make_user("bob")

    by_email = services.member_add(project=project, identifier="ann@example.org", role="labeler")
    by_name = services.member_add(project=project, identifier=" bob ", role="researcher")

    assert (by_email.user.username, by_email.role) == ("ann", "labeler")
    assert (by_name.user.username, by_name.role) == ("bob", "researcher")
    assert by_email.added_at is not None


@pytest.mark.parametrize(
    ("identifier", "role", "error", "message"),
    [
        ("nobody", "labeler", ServiceError, "No user has the username or e-mail 'nobody'"),
        ("", "labeler", ServiceError, "Give the username or e-mail"),
        ("lab", "labeler", Conflict, "lab is already a member \\(labeler\\)"),
        ("bob", "boss", ServiceError, "The role is one of"),
    ],
)
def test_member_add_refuses(project, labeler, identifier, role, error, message):
    make_user("bob")
    before = _stored()

    with pytest.raises(error, match=message):
        services.member_add(project=project, identifier=identifier, role=role)

    assert _stored() == before


def test_the_last_admin_is_neither_demoted_nor_removed(project, admin_member, labeler):
    before = _stored()

    with pytest.raises(Conflict, match="adm is the project's only admin"):
        services.member_set_role(project=project, user_id=admin_member.pk, role="labeler")
    with pytest.raises(Conflict, match="only admin"):
        services.member_remove(project=project, user_id=admin_member.pk)

    assert _stored() == before
    services.member_set_role(project=project, user_id=labeler.pk, role="admin")
    services.member_remove(project=project, user_id=admin_member.pk)
    assert list(Membership.objects.filter(project=project).values_list("role", flat=True)) == [
        "admin"
    ]


def test_changing_an_unknown_member_is_not_found(project, outsider):
    with pytest.raises(NotFound):
        services.member_set_role(project=project, user_id=outsider.pk, role="admin")
    with pytest.raises(NotFound):
        services.member_remove(project=project, user_id=outsider.pk)


# --- members: the page --------------------------------------------------------------------


def test_the_members_page_lists_adds_changes_and_removes(login, project, admin_member, labeler):
    make_user("newbie", email="new@example.org")
    client = login(admin_member)

    page = client.get("/p/alpha/members/").content.decode()
    added = client.post(
        "/p/alpha/members/", {"action": "add", "user": "new@example.org", "role": "researcher"}
    )
    newbie = Membership.objects.get(project=project, user__username="newbie")
    changed = client.post(
        "/p/alpha/members/", {"action": "role", "member": newbie.user_id, "role": "admin"}
    )
    removed = client.post("/p/alpha/members/", {"action": "remove", "member": labeler.pk})

    assert 'data-member="adm"' in page and 'data-member="lab"' in page
    assert [a.status_code for a in (added, changed, removed)] == [302, 302, 302]
    roles = Membership.objects.filter(project=project).values_list("user__username", "role")
    assert sorted(roles) == [("adm", "admin"), ("newbie", "admin")]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({}, 400, "Choose what to do"),
        ({"action": "add", "user": "ghost", "role": "labeler"}, 400, "No user has the username"),
        ({"action": "add", "user": "lab", "role": "labeler"}, 409, "already a member"),
        ({"action": "role", "member": "x", "role": "admin"}, 400, "Choose a member"),
        ({"action": "role", "member": "ADMIN", "role": "labeler"}, 409, "only admin"),
        ({"action": "remove", "member": "ADMIN"}, 409, "only admin"),
        ({"action": "remove", "member": 999999}, 404, "not a member"),
    ],
)
def test_the_members_page_refuses_bad_input(
    login, project, admin_member, labeler, body, status, says
):
    body = {k: admin_member.pk if v == "ADMIN" else v for k, v in body.items()}
    before = _stored()

    answer = login(admin_member).post("/p/alpha/members/", body)

    assert answer.status_code == status
    assert says in answer.content.decode()
    assert _stored() == before


# --- members: the API ---------------------------------------------------------------------


def test_the_members_api(login, project, admin_member):
    make_user("ann")
    client = login(admin_member)

    added = client.post("/api/projects/alpha/members/", {"user": "ann", "role": "labeler"})
    ann = added.json()["user_id"]
    changed = client.patch(
        f"/api/projects/alpha/members/{ann}/",
        {"role": "researcher"},
        content_type="application/json",
    )
    listed = client.get("/api/projects/alpha/members/")
    removed = client.delete(f"/api/projects/alpha/members/{ann}/")

    assert added.status_code == 201 and added.json()["role"] == "labeler"
    assert changed.status_code == 200 and changed.json()["role"] == "researcher"
    assert [(m["username"], m["role"]) for m in listed.json()] == [
        ("adm", "admin"),
        ("ann", "researcher"),
    ]
    assert removed.status_code == 204
    assert not Membership.objects.filter(project=project, user_id=ann).exists()


@pytest.mark.parametrize(
    ("method", "target", "body", "status", "detail"),
    [
        ("post", "", {"user": "ghost", "role": "labeler"}, 400, None),
        ("post", "", {"user": "adm", "role": "admin"}, 409, None),
        ("post", "", ["x"], 400, None),
        ("patch", "ADMIN", {"role": "labeler"}, 409, None),
        ("patch", "ADMIN", {"role": "king"}, 400, "The role is one of labeler, researcher, admin."),
        ("patch", "999999", {"role": "labeler"}, 404, "This user is not a member of the project."),
        ("delete", "ADMIN", None, 409, None),
    ],
)
def test_the_members_api_refuses_bad_input(
    login, project, admin_member, method, target, body, status, detail
):
    target = str(admin_member.pk) if target == "ADMIN" else target
    path = f"/api/projects/alpha/members/{target + '/' if target else ''}"
    before = _stored()

    send = getattr(login(admin_member), method)
    answer = send(path, json.dumps(body), content_type="application/json")

    assert answer.status_code == status
    if detail:
        assert answer.json() == {"detail": detail}
    assert _stored() == before


@pytest.mark.parametrize(
    "caller_name",
    ["anonymous", "outsider", "labeler", "researcher", "admin", "superuser", "other-admin"],
)
def test_only_admins_remove_members_through_the_api(
    login, project, other_project, caller_name, client
):
    kept = make_member(project, Role.LABELER, "kept")
    make_member(project, Role.ADMIN, "boss")
    users = {
        "anonymous": None,
        "outsider": lambda: make_user("outsider"),
        "labeler": lambda: make_member(project, Role.LABELER, "lab"),
        "researcher": lambda: make_member(project, Role.RESEARCHER, "res"),
        "admin": lambda: make_member(project, Role.ADMIN, "adm"),
        "superuser": lambda: make_user("root", is_superuser=True),
        "other-admin": lambda: make_member(other_project, Role.ADMIN, "adm2"),
    }
    user = users[caller_name]() if users[caller_name] else None

    answer = login(user).delete(f"/api/projects/alpha/members/{kept.pk}/")

    allowed = caller_name in {"admin", "superuser"}
    expected = 204 if allowed else (401 if caller_name == "anonymous" else 403)
    assert answer.status_code == expected
    assert Membership.objects.filter(project=project, user=kept).exists() is not allowed


# --- the workspace's admins see all of its projects ------------------------------------------


def test_an_admin_of_a_workspace_administers_every_project_of_it(
    login, project, other_project, admin_member
):
    sibling = make_project("sibling")
    Project.objects.filter(pk=sibling.pk).update(workspace=project.workspace)
    sibling.refresh_from_db()
    labeler_here = make_member(project, Role.LABELER, "lab-here")

    visible = set(projects_visible_to(admin_member).values_list("slug", flat=True))
    api = login(admin_member).get("/api/projects/").json()
    page = login(admin_member).get("/p/sibling/tasks/")

    assert visible == {"alpha", "sibling"}
    scope = projects_with_data_access(admin_member).values_list("slug", flat=True)
    assert set(scope) == {"alpha", "sibling"}  # the leaderboard's "all projects"
    assert {p["slug"] for p in api} == {"alpha", "sibling"}
    assert page.status_code == 200
    assert project_role(user=admin_member, project=sibling) == Role.ADMIN
    assert project_role(user=admin_member, project=other_project) is None
    assert login(admin_member).get("/p/beta/").status_code == 403
    # A labeler of the workspace sees only their own project.
    assert set(projects_visible_to(labeler_here).values_list("slug", flat=True)) == {"alpha"}
    assert login(labeler_here).get("/p/sibling/").status_code == 403


def test_a_labeler_here_and_admin_elsewhere_in_the_workspace_is_admin_here(login, project):
    sibling = make_project("sibling")
    Project.objects.filter(pk=sibling.pk).update(workspace=project.workspace)
    user = make_member(project, Role.LABELER, "both")
    Membership.objects.create(project=sibling, user=user, role=Role.ADMIN)

    assert project_role(user=user, project=project) == Role.ADMIN
    assert login(user).get("/p/alpha/members/").status_code == 200


# --- the navigation ----------------------------------------------------------------------------


def _nav(html: str) -> str:
    return html.split('aria-label="Project"')[1].split("</nav>")[0]


def test_each_role_sees_its_groups_of_the_nav(login, project, labeler, researcher, admin_member):
    by_labeler = _nav(login(labeler).get("/p/alpha/").content.decode())
    by_researcher = _nav(login(researcher).get("/p/alpha/").content.decode())
    by_admin = _nav(login(admin_member).get("/p/alpha/").content.decode())

    groups = ("<summary>Data</summary>", "<summary>Models</summary>", "<summary>Quality</summary>")
    assert "<summary>Label</summary>" in by_labeler
    assert not any(group in by_labeler for group in groups)
    assert all(group in by_researcher for group in groups)
    assert "Project settings" not in by_researcher
    assert 'href="/p/alpha/prompts/"' not in by_researcher
    assert "Project settings" in by_admin and 'href="/p/alpha/members/"' in by_admin
    for link in ("label", "chat", "arena", "me", "prompts", "data/import", "data/versions",
                 "export", "models", "training", "judges", "leaderboard", "quality",
                 "review", "tasks", "members"):  # fmt: skip
        assert f'href="/p/alpha/{link}/"' in by_admin, link
