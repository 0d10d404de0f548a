"""Judges pages and API: the flows an admin goes through, and the endpoint key that never
comes back. Every route for every caller is in tests/annotation/test_permissions.py."""

from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.judges import jobs, services
from annotation.models import Constitution, Judge, JudgeJob, Role
from tests.annotation.judges.forms_data import principle_rows
from tests.factories import make_member, make_task

KEY = "sk-page-secret-key-9876543210"


@pytest.fixture
def caller(labeler, researcher, admin_member, outsider):
    return {
        "anonymous": None,
        "outsider": outsider,
        "labeler": labeler,
        "researcher": researcher,
        "admin": admin_member,
    }


@pytest.fixture
def constitution(db):
    return services.ensure_default_constitution()


@pytest.fixture
def judge(project, constitution):
    return services.judge_create(
        workspace=project.workspace,
        name="remote-judge",
        backend="remote",
        endpoint_url="https://judge.example/v1",
        endpoint_model="judge-model",
        api_key=KEY,
        constitution=constitution,
    )


@pytest.fixture
def job(project, judge):
    make_task(project)
    return jobs.judge_job_start(project=project, judge=judge, kind="pairwise", max_requests=10)


def test_a_job_of_another_project_is_not_found(login, other_project, admin_member, judge):
    make_task(other_project)
    services.judge_share(judge=judge, workspace_slug=other_project.workspace.slug)
    foreign = jobs.judge_job_start(project=other_project, judge=judge, kind="pairwise")
    client = login(admin_member)
    slug = admin_member.memberships.get().project.slug

    assert client.get(f"/p/{slug}/judges/jobs/{foreign.pk}/").status_code == 404
    assert client.get(f"/api/projects/{slug}/judge-jobs/{foreign.pk}/").status_code == 404
    assert client.post(f"/p/{slug}/judges/jobs/{foreign.pk}/cancel/").status_code == 404
    foreign.refresh_from_db()
    assert foreign.status == "queued"


def test_the_nav_shows_judges_to_researchers_and_admins_only(login, project, labeler, researcher):
    link = f'href="/p/{project.slug}/judges/"'

    seen_by_researcher = login(researcher).get(f"/p/{project.slug}/").content.decode()
    seen_by_labeler = login(labeler).get(f"/p/{project.slug}/").content.decode()

    assert link in seen_by_researcher
    assert link not in seen_by_labeler


# --- an admin's flows through the pages ------------------------------------------------------


def test_an_admin_adds_the_default_constitution_once(login, project, admin_member):
    client = login(admin_member)
    assert (
        "Add the default constitution" in client.get(f"/p/{project.slug}/judges/").content.decode()
    )

    first = client.post(f"/p/{project.slug}/judges/constitutions/default/")
    second = client.post(f"/p/{project.slug}/judges/constitutions/default/")

    constitution = Constitution.objects.get()
    assert (constitution.name, constitution.version) == ("loop-default", 1)
    assert first["Location"] == second["Location"]
    page = client.get(f"/p/{project.slug}/judges/").content.decode()
    assert "Add the default constitution" not in page


def test_an_admin_creates_and_edits_a_constitution_on_the_pages(login, project, admin_member):
    client = login(admin_member)
    principles = [
        {
            "name": "kind",
            "critique_request": "Is it unkind?",
            "revision_request": "Make it kind.",
            "comparison_question": "Which is kinder?",
        }
    ]

    created = client.post(
        f"/p/{project.slug}/judges/constitutions/",
        {"constitution_name": "house", **principle_rows(principles), "note": "v1"},
    )

    v1 = Constitution.objects.get(name="house")
    assert created.status_code == 302
    assert created["Location"] == f"/p/{project.slug}/judges/constitutions/{v1.pk}/"
    page = client.get(created["Location"]).content.decode()
    assert "Which is kinder?" in page and "Save as a new version" in page

    edited = [{**principles[0], "comparison_question": "Which is gentler?"}]
    response = client.post(
        f"/p/{project.slug}/judges/constitutions/{v1.pk}/",
        {**principle_rows(edited), "note": "gentler"},
    )

    v2 = Constitution.objects.get(name="house", version=2)
    assert response["Location"] == f"/p/{project.slug}/judges/constitutions/{v2.pk}/"
    v1.refresh_from_db()
    assert v1.principles == principles
    assert v2.principles == edited
    assert v2.created_by == admin_member


def test_bad_principles_on_the_page_are_refused_with_the_reason(login, project, admin_member):
    client = login(admin_member)

    old_json = client.post(
        f"/p/{project.slug}/judges/constitutions/",
        {"constitution_name": "house", "principles": "[{"},
    )
    bad_fields = client.post(
        f"/p/{project.slug}/judges/constitutions/",
        {"constitution_name": "house", **principle_rows([{"name": "x"}])},
    )

    assert old_json.status_code == 400
    assert "The principles form is incomplete" in old_json.content.decode()
    assert bad_fields.status_code == 400
    assert "Principle 1: critique request: Write the critique request." in (
        bad_fields.content.decode()
    )
    assert not Constitution.objects.exists()


def test_the_key_is_write_only_on_the_judge_form(login, project, admin_member, constitution):
    client = login(admin_member)
    form = {
        "name": "gpt-judge",
        "backend": "remote",
        "endpoint_url": "https://judge.example/v1",
        "endpoint_model": "big",
        "api_key": KEY,
        "constitution": constitution.pk,
        "chain_of_thought": "on",
    }

    refused = client.post(f"/p/{project.slug}/judges/new/", {**form, "endpoint_model": ""})
    created = client.post(f"/p/{project.slug}/judges/new/", form)

    assert refused.status_code == 400
    assert "model name" in refused.content.decode()
    assert KEY.encode() not in refused.content
    assert created.status_code == 302
    judge = Judge.objects.get()
    assert (judge.api_key, judge.chain_of_thought, judge.constitution) == (KEY, True, constitution)
    page = client.get(f"/p/{project.slug}/judges/")
    assert "gpt-judge" in page.content.decode()
    assert "key set" in page.content.decode()
    assert KEY.encode() not in page.content


def test_an_admin_starts_watches_and_cancels_a_job(login, project, admin_member, judge):
    make_task(project)
    client = login(admin_member)

    started = client.post(
        f"/p/{project.slug}/judges/jobs/",
        {"judge": judge.pk, "kind": "pairwise", "max_requests": "20", "pairwise-limit": "5"},
    )

    job = JudgeJob.objects.get()
    assert started["Location"] == f"/p/{project.slug}/judges/jobs/{job.pk}/"
    assert (job.max_requests, job.options, job.created_by) == (20, {"limit": 5}, admin_member)
    page = client.get(started["Location"], headers={"HX-Request": "true"}).content.decode()
    assert page.lstrip().startswith('<section id="job-status"')
    assert 'hx-trigger="every 2s"' in page
    assert "Cancel job" in page
    cancelled = client.post(
        f"/p/{project.slug}/judges/jobs/{job.pk}/cancel/", headers={"HX-Request": "true"}
    )
    assert cancelled.status_code == 200
    assert "Cancelled" in cancelled.content.decode()
    assert "every 2s" not in cancelled.content.decode()
    again = client.post(f"/p/{project.slug}/judges/jobs/{job.pk}/cancel/")
    assert again.status_code == 409
    assert "already ended" in again.content.decode()


def test_a_bad_job_form_is_refused_and_shows_why(login, project, admin_member, judge):
    client = login(admin_member)

    response = client.post(
        f"/p/{project.slug}/judges/jobs/",
        {"judge": judge.pk, "kind": "pairwise", "max_requests": "0"},
    )

    assert response.status_code == 400
    assert "budget must be a whole number from 1 to 10000" in response.content.decode()
    assert not JudgeJob.objects.exists()


def test_a_finished_job_page_shows_its_error_and_log(login, project, researcher, job):
    JudgeJob.objects.filter(pk=job.pk).update(
        status="partial", error="Stopped by the budget", log="line one\nline two\n", done=1
    )

    page = login(researcher).get(f"/p/{project.slug}/judges/jobs/{job.pk}/").content.decode()

    assert "Stopped by the budget" in page
    assert "line two" in page
    assert "every 2s" not in page
    assert "Cancel job" not in page


# --- API ------------------------------------------------------------------------------------


def test_the_api_creates_a_judge_and_never_returns_its_key(login, project, admin_member):
    constitution = services.ensure_default_constitution()
    client = login(admin_member)

    created = client.post(
        f"/api/projects/{project.slug}/judges/",
        {
            "name": "api-judge",
            "backend": "remote",
            "endpoint_url": "https://judge.example/v1",
            "endpoint_model": "m",
            "api_key": KEY,
            "constitution": constitution.pk,
        },
        content_type="application/json",
    )
    listed = client.get(f"/api/projects/{project.slug}/judges/")

    assert created.status_code == 201
    assert created.json()["has_api_key"] is True
    assert created.json()["constitution"] == {
        "id": constitution.pk,
        "name": "loop-default",
        "version": 1,
    }
    assert [j["name"] for j in listed.json()] == ["api-judge"]
    assert KEY not in created.content.decode() + listed.content.decode()


def test_the_api_starts_a_job_and_reports_it(login, project, admin_member, researcher, judge):
    task = make_task(project)

    started = login(admin_member).post(
        f"/api/projects/{project.slug}/judge-jobs/",
        {"judge": judge.pk, "kind": "pairwise", "options": {"task_ids": [task.pk]}},
        content_type="application/json",
    )

    assert started.status_code == 202
    body = started.json()
    assert (body["status"], body["kind"], body["options"]["task_ids"]) == (
        "queued",
        "pairwise",
        [task.pk],
    )
    detail = login(researcher).get(f"/api/projects/{project.slug}/judge-jobs/{body['id']}/")
    assert detail.json()["judge"] == {"id": judge.pk, "name": "remote-judge"}
    assert KEY not in detail.content.decode()


@pytest.mark.parametrize(
    "body, message",
    [
        ({"judge": 999, "kind": "pairwise"}, "Choose a judge"),
        ({"kind": "pairwise"}, "Choose a judge"),
        ({"judge": "JUDGE", "kind": "nope"}, "Choose what the job does"),
        ({"judge": "JUDGE", "kind": "pairwise", "max_requests": 20000}, "budget"),
        ({"judge": "JUDGE", "kind": "pairwise", "options": {"x": 1}}, "Unknown options"),
    ],
)
def test_the_api_refuses_a_bad_job_with_the_reason(
    login, project, admin_member, judge, body, message
):
    body = {k: (judge.pk if v == "JUDGE" else v) for k, v in body.items()}

    response = login(admin_member).post(
        f"/api/projects/{project.slug}/judge-jobs/", body, content_type="application/json"
    )

    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert not JudgeJob.objects.exists()


def test_the_api_edits_a_constitution_into_a_new_version(login, project, admin_member):
    constitution = services.ensure_default_constitution()
    client = login(admin_member)

    response = client.post(
        f"/api/projects/{project.slug}/constitutions/{constitution.pk}/",
        {"principles": constitution.principles[:2], "note": "shorter"},
        content_type="application/json",
    )

    assert response.status_code == 201
    assert (response.json()["version"], len(response.json()["principles"])) == (2, 2)
    latest = client.get(f"/api/projects/{project.slug}/constitutions/").json()
    assert [(c["name"], c["version"]) for c in latest] == [("loop-default", 2)]
    assert client.get(f"/api/projects/{project.slug}/constitutions/999/").status_code == 404


def test_a_labeler_of_the_project_cannot_reach_the_key_through_any_payload(login, project, judge):
    member = make_member(project, Role.RESEARCHER, "reader")
    client = login(member)
    for url in (
        f"/p/{project.slug}/judges/",
        f"/api/projects/{project.slug}/judges/",
        f"/api/projects/{project.slug}/judge-jobs/",
    ):
        assert KEY.encode() not in client.get(url).content


# --- where a job stands: place in line, time left, cancel from the list ---------------------


def _history(project, judge, *, seconds: int) -> JudgeJob:
    """A job of the judge that succeeded in ``seconds``: what a queued job's wait is
    estimated from."""
    end = timezone.now() - timedelta(minutes=10)
    return JudgeJob.objects.create(
        project=project,
        judge=judge,
        kind="pairwise",
        status="succeeded",
        started_at=end - timedelta(seconds=seconds),
        finished_at=end,
    )


def test_a_queued_job_shows_its_place_in_line_and_its_wait(login, project, researcher, judge):
    _history(project, judge, seconds=60)
    make_task(project)
    ahead = jobs.judge_job_start(project=project, judge=judge, kind="pairwise")
    mine = jobs.judge_job_start(project=project, judge=judge, kind="pairwise")
    client = login(researcher)

    page = client.get(f"/p/{project.slug}/judges/jobs/{mine.pk}/").content.decode()
    payload = client.get(f"/api/projects/{project.slug}/judge-jobs/{mine.pk}/").json()
    ahead_payload = client.get(f"/api/projects/{project.slug}/judge-jobs/{ahead.pk}/").json()

    assert "queued — 2nd in line, about 2 min" in page
    assert (payload["queue_position"], payload["eta_seconds"]) == (2, 120)
    assert payload["outlook"] == "queued — 2nd in line, about 2 min"
    assert (ahead_payload["queue_position"], ahead_payload["eta_seconds"]) == (1, 60)


def test_a_queued_job_without_history_says_its_wait_is_unknown(login, project, researcher, job):
    payload = login(researcher).get(f"/api/projects/{project.slug}/judge-jobs/").json()

    assert [(j["queue_position"], j["eta_seconds"], j["outlook"]) for j in payload] == [
        (1, None, "queued — next in line, time unknown")
    ]


def test_a_running_job_shows_its_time_left(login, project, researcher, job):
    JudgeJob.objects.filter(pk=job.pk).update(
        status="running", started_at=timezone.now() - timedelta(seconds=80), done=8, total=20
    )

    page = login(researcher).get(f"/p/{project.slug}/judges/jobs/{job.pk}/").content.decode()
    payload = login(researcher).get(f"/api/projects/{project.slug}/judge-jobs/{job.pk}/").json()

    assert "running 8/20 — about 2 min left" in page
    assert (payload["queue_position"], payload["eta_seconds"]) == (None, 120)


def test_an_ended_job_has_no_place_in_line_nor_time_left(login, project, researcher, job):
    JudgeJob.objects.filter(pk=job.pk).update(status="succeeded", done=3, total=3)

    payload = login(researcher).get(f"/api/projects/{project.slug}/judge-jobs/{job.pk}/").json()

    assert (payload["queue_position"], payload["eta_seconds"], payload["outlook"]) == (
        None,
        None,
        "",
    )


def test_the_jobs_table_offers_cancel_to_admins_only(login, project, researcher, admin_member, job):
    cancel_url = f"/p/{project.slug}/judges/jobs/{job.pk}/cancel/"

    for_researcher = login(researcher).get(f"/p/{project.slug}/judges/").content.decode()
    for_admin = login(admin_member).get(f"/p/{project.slug}/judges/").content.decode()

    assert "queued — next in line, time unknown" in for_researcher
    assert cancel_url not in for_researcher
    assert f'action="{cancel_url}"' in for_admin


def test_cancel_from_the_jobs_table_cancels_and_leads_to_the_job(login, project, admin_member, job):
    response = login(admin_member).post(f"/p/{project.slug}/judges/jobs/{job.pk}/cancel/")

    assert response["Location"] == f"/p/{project.slug}/judges/jobs/{job.pk}/"
    job.refresh_from_db()
    assert job.status == "cancelled"


def test_the_api_cancels_a_queued_job(login, project, admin_member, job):
    response = login(admin_member).post(
        f"/api/projects/{project.slug}/judge-jobs/{job.pk}/cancel/",
        {},
        content_type="application/json",
    )

    assert response.status_code == 202
    job.refresh_from_db()
    assert job.status == "cancelled"


def test_cancel_of_an_ended_job_is_refused_and_changes_nothing(login, project, admin_member, job):
    JudgeJob.objects.filter(pk=job.pk).update(status="failed", error="The judge's model failed")
    client = login(admin_member)

    page = client.post(f"/p/{project.slug}/judges/jobs/{job.pk}/cancel/")
    api = client.post(f"/api/projects/{project.slug}/judge-jobs/{job.pk}/cancel/")

    assert (page.status_code, api.status_code) == (409, 409)
    assert "This job has already ended (failed)." in page.content.decode()
    assert api.json()["detail"] == "This job has already ended (failed)."
    job.refresh_from_db()
    assert (job.status, job.cancel_requested, job.error) == (
        "failed",
        False,
        "The judge's model failed",
    )


POLL = {"HX-Request": "true", "HX-Target": "judge-jobs-table"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("anonymous", 302),
        ("outsider", 403),
        ("labeler", 403),
        ("researcher", 200),
        ("admin", 200),
        ("other_admin", 403),
    ],
)
def test_the_jobs_table_polls_for_those_who_see_the_jobs(
    login, project, other_project, caller, job, name, expected
):
    user = (
        make_member(other_project, Role.ADMIN, "other-admin")
        if name == "other_admin"
        else caller[name]
    )

    response = login(user).get(f"/p/{project.slug}/judges/", headers=POLL)

    assert response.status_code == expected
    if expected == 200:
        html = response.content.decode().strip()
        assert html.startswith('<table class="judge-jobs" id="judge-jobs-table"')
        assert 'hx-trigger="every 2s"' in html
        assert "queued — next in line, time unknown" in html


def test_the_jobs_table_stops_polling_once_every_job_has_ended(login, project, researcher, job):
    JudgeJob.objects.filter(pk=job.pk).update(status="succeeded")

    html = login(researcher).get(f"/p/{project.slug}/judges/", headers=POLL).content.decode()

    assert "every 2s" not in html
