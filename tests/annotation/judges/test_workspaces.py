"""Issue 14, "Workspaces: no project reaches into another", through real requests: a
project uses only its own workspace's judges (or one its owner shared with it), never sees
another workspace's endpoint or key, and a new version of a built-in constitution starts the
editing workspace's own line instead of changing what every other workspace reads."""

import pytest
from django.test import Client

from annotation.judges import jobs, services
from annotation.models import Constitution, Judge, JudgeJob, Judgment, Role
from annotation.projects.services import ensure_project, ensure_workspace
from tests.annotation.judges.fake_endpoint import Answer, FakeEndpoint, completion, option_text
from tests.factories import make_member, make_project, make_task
from tests.migrations import migrate_to, schema_at

KEY = "sk-demo-secret-key-0123456789abcdef"
URL = "https://judge.demo.example/v1"
PRINCIPLES = [
    {
        "name": "brevity",
        "critique_request": "Say how the reply could be shorter.",
        "revision_request": "Rewrite the reply shorter.",
        "comparison_question": "Which reply is shorter?",
    }
]


@pytest.fixture
def demo(db):
    return make_project("demo")


@pytest.fixture
def other(db):
    return make_project("other")


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def demo_admin(demo):
    return _client(make_member(demo, Role.ADMIN, "demo-admin"))


@pytest.fixture
def other_admin(other):
    return _client(make_member(other, Role.ADMIN, "other-admin"))


@pytest.fixture
def constitution(db):
    return services.ensure_default_constitution()


def _remote_judge(project, constitution, *, name="demo-remote", url=URL):
    return services.judge_create(
        workspace=project.workspace,
        name=name,
        backend="remote",
        endpoint_url=url,
        endpoint_model="judge-model",
        api_key=KEY,
        constitution=constitution,
    )


@pytest.fixture
def demo_judge(demo, constitution):
    return _remote_judge(demo, constitution)


def _share(client, slug, judge, body):
    return client.post(
        f"/api/projects/{slug}/judges/{judge.pk}/share/", body, content_type="application/json"
    )


def _start_job(client, slug, judge):
    return client.post(
        f"/api/projects/{slug}/judge-jobs/",
        {"judge": judge.pk, "kind": "pairwise"},
        content_type="application/json",
    )


def _shared_with(judge) -> list[str]:
    return sorted(judge.shared_with.values_list("slug", flat=True))


# --- jobs: only the workspace's own judges, or one shared with it --------------------------


def test_two_projects_get_two_workspaces(demo, other):
    assert demo.workspace != other.workspace
    assert (demo.workspace.slug, other.workspace.slug) == ("demo", "other")


def test_another_workspaces_judge_cannot_run_a_job_through_the_api(other, other_admin, demo_judge):
    make_task(other)

    response = _start_job(other_admin, "other", demo_judge)

    assert response.status_code == 400
    assert response.json()["detail"] == "Choose a judge."
    assert not JudgeJob.objects.exists()


def test_another_workspaces_judge_cannot_run_a_job_through_the_page(other, other_admin, demo_judge):
    make_task(other)

    response = other_admin.post(
        "/p/other/judges/jobs/",
        {"judge": demo_judge.pk, "kind": "pairwise", "max_requests": "10"},
    )

    assert response.status_code == 400
    assert "Choose a judge." in response.content.decode()
    assert not JudgeJob.objects.exists()


def test_the_service_refuses_another_workspaces_judge(other, demo_judge):
    make_task(other)

    with pytest.raises(jobs.ServiceError, match="Choose a judge."):
        jobs.judge_job_start(project=other, judge=demo_judge, kind="pairwise")
    assert not JudgeJob.objects.exists()


def test_another_workspaces_judges_are_not_listed(other_admin, demo_judge):
    response = other_admin.get("/api/projects/other/judges/")

    assert response.status_code == 200
    assert response.json() == []
    assert URL not in response.content.decode()
    assert KEY not in response.content.decode()


def test_a_shared_judge_is_listed_without_its_endpoint_and_usable_until_unshared(
    other, demo_admin, other_admin, demo_judge
):
    make_task(other)

    shared = _share(demo_admin, "demo", demo_judge, {"workspace": "other", "share": True})

    assert shared.status_code == 200
    assert shared.json()["shared_with"] == ["other"]
    assert shared.json()["endpoint_url"] == URL  # the owner sees its own endpoint
    assert _shared_with(demo_judge) == ["other"]
    listed = other_admin.get("/api/projects/other/judges/")
    [judge] = listed.json()
    assert (judge["id"], judge["name"], judge["workspace"], judge["owned"]) == (
        demo_judge.pk,
        "demo-remote",
        "demo",
        False,
    )
    assert (judge["endpoint_url"], judge["has_api_key"], judge["shared_with"]) == ("", True, [])
    assert URL not in listed.content.decode()
    assert KEY not in listed.content.decode()

    started = _start_job(other_admin, "other", demo_judge)

    assert started.status_code == 202
    job = JudgeJob.objects.get()
    assert (job.project, job.judge) == (other, demo_judge)
    assert URL not in started.content.decode() and KEY not in started.content.decode()

    unshared = _share(demo_admin, "demo", demo_judge, {"workspace": "other", "share": False})

    assert unshared.status_code == 200
    assert unshared.json()["shared_with"] == []
    assert other_admin.get("/api/projects/other/judges/").json() == []
    refused = _start_job(other_admin, "other", demo_judge)
    assert refused.status_code == 400
    assert refused.json()["detail"] == "Choose a judge."
    assert JudgeJob.objects.count() == 1


def test_a_shared_remote_judge_judges_the_borrowers_pairs_and_hides_its_endpoint(
    demo, other, demo_admin, other_admin, constitution, settings
):
    """The owner lends its endpoint and key on purpose; the borrower's job and its page
    still show neither."""
    settings.OUTBOUND_ALLOW_PRIVATE = True  # the scripted endpoint listens on 127.0.0.1
    make_task(other, texts=("good answer", "bad answer"))

    def prefers_good(number, payload):
        p_a = 0.9 if option_text(payload, "A").startswith("good") else 0.1
        return Answer(body=completion("A", {"A": p_a, "B": 1 - p_a}))

    with FakeEndpoint(prefers_good) as endpoint:
        judge = _remote_judge(demo, constitution, url=endpoint.url)
        assert _share(demo_admin, "demo", judge, {"workspace": "other"}).status_code == 200
        started = _start_job(other_admin, "other", judge)
        assert started.status_code == 202
        job = jobs.judge_job_execute(job_id=started.json()["id"])

    assert job.status == "succeeded"
    assert {hit.headers.get("Authorization") for hit in endpoint.hits} == {f"Bearer {KEY}"}
    assert Judgment.objects.get(judge_job=job).project == other
    for url in (
        f"/api/projects/other/judge-jobs/{job.pk}/",
        f"/p/other/judges/jobs/{job.pk}/",
        "/p/other/judges/",
    ):
        body = other_admin.get(url).content.decode()
        assert endpoint.url not in body
        assert KEY not in body


def test_a_job_queued_with_a_shared_judge_fails_if_the_owner_unshares_before_it_runs(
    demo, other, demo_admin, other_admin, constitution, settings
):
    settings.OUTBOUND_ALLOW_PRIVATE = True
    make_task(other, texts=("good answer", "bad answer"))
    with FakeEndpoint(
        lambda number, payload: Answer(body=completion("A", {"A": 0.9, "B": 0.1}))
    ) as endpoint:
        judge = _remote_judge(demo, constitution, url=endpoint.url)
        _share(demo_admin, "demo", judge, {"workspace": "other"})
        started = _start_job(other_admin, "other", judge)
        assert started.status_code == 202
        _share(demo_admin, "demo", judge, {"workspace": "other", "share": False})

        job = jobs.judge_job_execute(job_id=started.json()["id"])

    assert job.status == "failed"
    assert "stopped sharing" in job.error
    assert endpoint.hits == []
    assert not Judgment.objects.filter(judge_job=job).exists()


def test_ai_review_fill_reads_another_workspaces_judge_as_unknown(other, other_admin, demo_judge):
    answer = other_admin.post(
        "/api/projects/other/review/ai/",
        {"mode": "all", "judge": demo_judge.pk},
        content_type="application/json",
    )

    assert answer.status_code == 400
    assert f"There is no judge {demo_judge.pk}." in answer.content.decode()


def test_the_judges_page_shows_another_workspaces_judge_only_once_shared(
    demo_admin, other_admin, demo_judge
):
    page = other_admin.get("/p/other/judges/").content.decode()

    assert "demo-remote" not in page
    assert URL not in page

    _share(demo_admin, "demo", demo_judge, {"workspace": "other"})
    page = other_admin.get("/p/other/judges/").content.decode()

    assert "demo-remote" in page
    assert "shared by Demo" in page
    assert 'data-shared-by="demo"' in page
    assert URL not in page
    assert KEY not in page
    owner_page = demo_admin.get("/p/demo/judges/").content.decode()
    assert URL in owner_page
    assert KEY not in owner_page


def test_the_share_form_on_the_page_shares_and_stops(demo_admin, other, demo_judge):
    shared = demo_admin.post(f"/p/demo/judges/{demo_judge.pk}/share/", {"workspace": "other"})

    assert shared.status_code == 302
    assert _shared_with(demo_judge) == ["other"]

    stopped = demo_admin.post(
        f"/p/demo/judges/{demo_judge.pk}/share/", {"workspace": "other", "action": "unshare"}
    )

    assert stopped.status_code == 302
    assert _shared_with(demo_judge) == []


# --- sharing: only the owner's admins, only to a workspace that exists ---------------------


@pytest.mark.parametrize("role", [Role.LABELER, Role.RESEARCHER])
def test_only_the_owners_admins_may_share(demo, other, demo_judge, role):
    client = _client(make_member(demo, role, f"demo-{role}"))

    api = _share(client, "demo", demo_judge, {"workspace": "other"})
    page = client.post(f"/p/demo/judges/{demo_judge.pk}/share/", {"workspace": "other"})

    assert (api.status_code, page.status_code) == (403, 403)
    assert _shared_with(demo_judge) == []


def test_another_workspaces_admin_cannot_share_its_judge(other_admin, demo_judge):
    through_own = _share(other_admin, "other", demo_judge, {"workspace": "other"})
    through_demo = _share(other_admin, "demo", demo_judge, {"workspace": "other"})
    through_page = other_admin.post(
        f"/p/other/judges/{demo_judge.pk}/share/", {"workspace": "other"}
    )

    assert through_own.status_code == 404
    assert through_own.json()["detail"] == "No such judge in this workspace."
    assert through_demo.status_code == 403  # not a member of demo
    assert through_page.status_code == 404
    assert _shared_with(demo_judge) == []


@pytest.mark.parametrize(
    "body, message",
    [
        ({"workspace": "nowhere"}, "No such workspace"),
        ({"workspace": ""}, "No such workspace"),
        ({}, "No such workspace"),
        ({"workspace": ["other"]}, "No such workspace"),
        ({"workspace": "demo"}, "always usable in its own workspace"),
        ({"workspace": "other", "share": "yes"}, "share must be true or false"),
    ],
)
def test_a_bad_share_is_refused_with_the_reason(other, demo_admin, demo_judge, body, message):
    response = _share(demo_admin, "demo", demo_judge, body)

    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert _shared_with(demo_judge) == []


def test_a_bad_share_on_the_page_is_refused_with_the_reason(demo_admin, demo_judge):
    response = demo_admin.post(f"/p/demo/judges/{demo_judge.pk}/share/", {"workspace": "nowhere"})

    assert response.status_code == 400
    assert "No such workspace" in response.content.decode()
    assert _shared_with(demo_judge) == []


# --- projects of one workspace share its judges --------------------------------------------


def test_projects_of_one_workspace_see_and_use_its_judges(constitution):
    team = ensure_workspace(slug="team", name="Team")
    first = ensure_project(slug="team-a", name="Team A", workspace=team)
    second = ensure_project(slug="team-b", name="Team B", workspace=team)
    first_admin = _client(make_member(first, Role.ADMIN, "a-admin"))
    second_admin = _client(make_member(second, Role.ADMIN, "b-admin"))
    made = first_admin.post(
        "/api/projects/team-a/judges/",
        {
            "name": "team-judge",
            "backend": "remote",
            "endpoint_url": URL,
            "endpoint_model": "m",
            "api_key": KEY,
            "constitution": constitution.pk,
        },
        content_type="application/json",
    )
    assert made.status_code == 201
    make_task(second)

    [listed] = second_admin.get("/api/projects/team-b/judges/").json()
    started = _start_job(second_admin, "team-b", Judge.objects.get(pk=listed["id"]))

    assert (listed["name"], listed["owned"], listed["endpoint_url"]) == ("team-judge", True, URL)
    assert started.status_code == 202
    assert JudgeJob.objects.get().project == second


# --- constitutions: built-in ones are read by all and changed by none ----------------------


def test_a_new_version_of_a_built_in_constitution_stays_in_the_editing_workspace(
    demo, other, other_admin, constitution
):
    demo_researcher = _client(make_member(demo, Role.RESEARCHER, "demo-researcher"))

    edited = other_admin.post(
        f"/api/projects/other/constitutions/{constitution.pk}/",
        {"principles": PRINCIPLES, "note": "ours"},
        content_type="application/json",
    )

    assert edited.status_code == 201
    v2 = Constitution.objects.get(pk=edited.json()["id"])
    assert (v2.name, v2.version, v2.workspace) == ("loop-default", 2, other.workspace)
    constitution.refresh_from_db()
    assert (constitution.workspace, constitution.version) == (None, 1)
    seen_by_demo = demo_researcher.get("/api/projects/demo/constitutions/").json()
    assert [(c["id"], c["name"], c["version"]) for c in seen_by_demo] == [
        (constitution.pk, "loop-default", 1)
    ]
    assert demo_researcher.get(f"/api/projects/demo/constitutions/{v2.pk}/").status_code == 404
    seen_by_other = other_admin.get("/api/projects/other/constitutions/").json()
    assert [(c["id"], c["version"], c["note"]) for c in seen_by_other] == [(v2.pk, 2, "ours")]
    assert services.ensure_default_constitution() == constitution


def test_another_workspaces_constitution_cannot_be_read_edited_or_used(
    demo, other_admin, constitution
):
    house = services.constitution_create(
        workspace=demo.workspace, name="house", principles=PRINCIPLES
    )
    before = Constitution.objects.count()

    api_read = other_admin.get(f"/api/projects/other/constitutions/{house.pk}/")
    api_edit = other_admin.post(
        f"/api/projects/other/constitutions/{house.pk}/",
        {"principles": PRINCIPLES},
        content_type="application/json",
    )
    page_read = other_admin.get(f"/p/other/judges/constitutions/{house.pk}/")
    page_edit = other_admin.post(f"/p/other/judges/constitutions/{house.pk}/", {"principles": "[]"})
    listed = other_admin.get("/api/projects/other/constitutions/").json()
    judged = other_admin.post(
        "/api/projects/other/judges/",
        {
            "name": "borrowed-rules",
            "backend": "remote",
            "endpoint_url": URL,
            "endpoint_model": "m",
            "constitution": house.pk,
        },
        content_type="application/json",
    )

    assert [r.status_code for r in (api_read, api_edit, page_read, page_edit)] == [404] * 4
    assert [c["name"] for c in listed] == ["loop-default"]
    assert judged.status_code == 400
    assert "Choose a constitution version." in judged.json()["detail"]
    assert Constitution.objects.count() == before
    assert not Judge.objects.exists()


# --- migration 0009/0010: existing rows get owners ----------------------------------------

BEFORE = [("annotation", "0008_generation_jobs_move")]
AFTER = [("annotation", "0010_workspaces_required")]


@pytest.fixture
def schema_before_workspaces(transactional_db):
    """The schema as it was before 0009; put back to the latest after the test."""
    with schema_at(BEFORE) as apps:
        yield apps


def test_0009_gives_each_project_a_workspace_and_a_used_judge_its_projects(
    schema_before_workspaces,
):
    old = schema_before_workspaces
    Project = old.get_model("annotation", "Project")
    Constitution = old.get_model("annotation", "Constitution")
    Judge = old.get_model("annotation", "Judge")
    JudgeJob = old.get_model("annotation", "JudgeJob")
    first = Project.objects.create(slug="first", name="First")
    second = Project.objects.create(slug="second", name="Second")
    default = Constitution.objects.create(name="loop-default", version=1, principles=PRINCIPLES)
    rules = Constitution.objects.create(name="rules", version=1, principles=PRINCIPLES)
    judge = Judge.objects.create(
        name="used", backend="remote", endpoint_url=URL, constitution=rules
    )
    JudgeJob.objects.create(project=second, judge=judge, kind="pairwise")

    new = migrate_to(AFTER)

    Project = new.get_model("annotation", "Project")
    Workspace = new.get_model("annotation", "Workspace")
    first, second = Project.objects.get(pk=first.pk), Project.objects.get(pk=second.pk)
    assert first.workspace_id != second.workspace_id
    assert sorted(Workspace.objects.values_list("slug", flat=True)) == ["first", "second"]
    assert new.get_model("annotation", "Judge").objects.get(pk=judge.pk).workspace_id == (
        second.workspace_id
    )
    Constitution = new.get_model("annotation", "Constitution")
    assert Constitution.objects.get(pk=rules.pk).workspace_id == second.workspace_id
    assert Constitution.objects.get(pk=default.pk).workspace_id is None
