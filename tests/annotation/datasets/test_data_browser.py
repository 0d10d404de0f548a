"""The data browser: filters, keyset pages, a judgment as its labeler saw it, soft delete
and restore, and bad input (400 with a clear message, never a 500)."""

import datetime

import pytest

from annotation.datasets.browser import selectors, services
from annotation.labeling.services import assignment_next
from annotation.models import Assignment, Judgment, Prompt, PromptImport, Response, Role, Task
from config.errors import ServiceError
from tests.factories import make_member, make_prompt, make_task, make_version
from tests.permissions import caller


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def researcher(project):
    return make_member(project, Role.RESEARCHER, "res")


@pytest.fixture
def admin(project):
    return make_member(project, Role.ADMIN, "adm")


def judge(task, labeler, *, choice="a", source=Judgment.Source.HUMAN, **fields):
    a, b = task.ordered_responses()
    return Judgment.objects.create(
        project=task.project,
        task=task,
        kind=fields.pop("kind", task.kind),
        prompt=task.prompt,
        response_a=a,
        response_b=b,
        shown_order=fields.pop("shown_order", [b.pk, a.pk]),
        choice=choice,
        source=source,
        labeler=labeler,
        **fields,
    )


def ids(page):
    return [row.pk for row in page.rows]


def browse(project, tab="judgments", **filters):
    return selectors.browse(project=project, filters={"tab": tab, **filters})


def test_keyset_pages_never_repeat_nor_skip_a_row(project, researcher):
    task = make_task(project)
    made = [judge(task, researcher).pk for _ in range(123)]
    seen, after, pages = [], None, 0
    while True:
        page = browse(project, after=after)
        seen += ids(page)
        pages += 1
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == sorted(made, reverse=True)
    assert pages == 3


def test_the_last_full_page_has_no_next(project, researcher):
    task = make_task(project)
    for _ in range(50):
        judge(task, researcher)
    assert browse(project).next_after is None


def test_filters_by_kind_source_import_labeler_model_and_date(project, researcher):
    other = make_member(project, Role.LABELER, "other")
    version = make_version("policy-1", workspace=project.workspace)
    task = make_task(project)
    a, _ = task.ordered_responses()
    Response.objects.filter(pk=a.pk).update(model_version=version)
    batch = PromptImport.objects.create(project=project, file_name="f", source="hh", prompt_count=0)
    human = judge(task, researcher)
    imported = judge(task, None, source=Judgment.Source.IMPORT, source_import=batch)
    by_other = judge(task, other, choice="b")
    old = judge(task, other)
    Judgment.objects.filter(pk=old.pk).update(
        created_at=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    )
    plain = make_task(project, texts=("x", "y"))
    unrelated = judge(plain, researcher, kind="rating")

    assert ids(browse(project, source="import")) == [imported.pk]
    assert ids(browse(project, import_name="hh")) == [imported.pk]
    assert ids(browse(project, labeler="other")) == [old.pk, by_other.pk]
    assert unrelated.pk not in ids(browse(project, model_version="policy-1"))
    assert human.pk in ids(browse(project, model_version="policy-1"))
    assert ids(browse(project, date_to=datetime.date(2020, 1, 2))) == [old.pk]
    assert old.pk not in ids(browse(project, date_from=datetime.date(2021, 1, 1)))
    assert ids(browse(project, kind="rating")) == [unrelated.pk]
    assert ids(browse(project, kind="comparison")) == [old.pk, by_other.pk, imported.pk, human.pk]


def test_flagged_and_text_search(project, researcher):
    flagged_task = make_task(project)
    Task.objects.filter(pk=flagged_task.pk).update(flagged=True)
    in_flagged = judge(flagged_task, researcher)
    plain = make_task(project)
    with_flags = judge(plain, researcher, flags=["unsafe"], rationale="Mentions PARIS")
    judge(plain, researcher)

    assert ids(browse(project, flagged=True)) == [with_flags.pk, in_flagged.pk]
    assert ids(browse(project, q="paris")) == [with_flags.pk]


def test_agreement_disputed_and_agreed(project, researcher):
    other = make_member(project, Role.LABELER, "other")
    split = make_task(project)
    one, two = judge(split, researcher, choice="a"), judge(split, other, choice="b")
    same = make_task(project)
    three, four = judge(same, researcher, choice="a"), judge(same, other, choice="a")
    alone = judge(make_task(project), researcher)

    assert ids(browse(project, agreement="disputed")) == [two.pk, one.pk]
    assert ids(browse(project, agreement="agreed")) == [four.pk, three.pk]
    assert alone.pk not in ids(browse(project, agreement="agreed"))
    assert ids(browse(project, "prompts", agreement="disputed")) == [split.prompt_id]


def test_deleted_rows_are_hidden_unless_asked(project, researcher, admin):
    task = make_task(project)
    kept = make_prompt(project)
    shown = judge(task, researcher)
    services.prompt_delete(prompt=task.prompt, by=admin, reason="spam")

    assert ids(browse(project, "prompts")) == [kept.pk]
    assert ids(browse(project, "prompts", deleted=True)) == [kept.pk, task.prompt_id]
    assert ids(browse(project)) == []
    assert ids(browse(project, deleted=True)) == [shown.pk]
    assert ids(browse(project, "responses")) == []


def test_prompt_delete_expires_pending_assignments_and_restore_brings_it_back(project, admin):
    labeler = make_member(project, Role.LABELER, "lab")
    task = make_task(project)
    assignment = assignment_next(project=project, labeler=labeler)
    assert assignment.task_id == task.pk

    expired = services.prompt_delete(prompt=task.prompt, by=admin, reason="duplicate")

    assert expired == 1
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.EXPIRED
    prompt = Prompt.objects.get(pk=task.prompt_id)
    assert (prompt.is_deleted, prompt.deleted_by, prompt.delete_reason) == (
        True,
        admin,
        "duplicate",
    )
    assert Task.objects.get(pk=task.pk).assigned_count == 0
    with pytest.raises(ServiceError, match="already deleted"):
        services.prompt_delete(prompt=prompt, by=admin, reason="again")

    services.prompt_restore(prompt=prompt)
    prompt.refresh_from_db()
    assert (prompt.is_deleted, prompt.deleted_by, prompt.delete_reason) == (False, None, "")
    with pytest.raises(ServiceError, match="not deleted"):
        services.prompt_restore(prompt=prompt)


def test_a_delete_needs_a_reason(project, admin):
    prompt = make_prompt(project)
    with pytest.raises(ServiceError, match="reason is required"):
        services.prompt_delete(prompt=prompt, by=admin, reason="  ")
    assert not Prompt.objects.get(pk=prompt.pk).is_deleted


def test_pages_delete_and_restore_a_response(login, project, admin):
    task = make_task(project)
    response = task.ordered_responses()[0]
    client = login(admin)

    refused = client.post(f"/p/alpha/data/responses/{response.pk}/delete/", {})
    assert refused.status_code == 400
    assert "reason is required" in refused.content.decode()
    answer = client.post(f"/p/alpha/data/responses/{response.pk}/delete/", {"reason": "empty"})
    assert answer.status_code == 302
    assert Response.objects.get(pk=response.pk).delete_reason == "empty"
    page = client.get("/p/alpha/data/browse/?tab=responses&deleted=on")
    assert "Restore" in page.content.decode()
    assert client.post(f"/p/alpha/data/responses/{response.pk}/restore/").status_code == 302
    assert not Response.objects.get(pk=response.pk).is_deleted


def test_the_api_deletes_and_restores_a_prompt(login, project, admin):
    prompt = make_prompt(project)
    client = login(admin)
    url = f"/api/projects/alpha/data/prompts/{prompt.pk}/"

    assert client.post(url + "delete/", {}).json() == {
        "detail": "Say why it is deleted: a reason is required."
    }
    answer = client.post(url + "delete/", {"reason": "spam"}, content_type="application/json")
    assert answer.json() == {"id": prompt.pk, "deleted": True, "expired_assignments": 0}
    assert client.post(url + "restore/").json() == {"id": prompt.pk, "deleted": False}
    assert client.post(url + "restore/").status_code == 400


def test_a_prompt_of_another_project_is_not_found(login, project, other_project, admin):
    foreign = make_prompt(other_project)
    answer = login(admin).post(f"/p/alpha/data/prompts/{foreign.pk}/delete/", {"reason": "x"})
    assert answer.status_code == 404
    assert not Prompt.objects.get(pk=foreign.pk).is_deleted


def test_the_detail_page_shows_what_the_labeler_saw_in_its_order(login, project, researcher):
    task = make_task(project, texts=("First answer", "Second answer"))
    a, b = task.ordered_responses()
    first = judge(task, researcher, shown_order=[b.pk, a.pk], rationale="B reads better")
    correction = judge(task, researcher, choice="b", supersedes=first, source="review")

    page = login(researcher).get(f"/p/alpha/data/judgments/{first.pk}/").content.decode()

    assert page.index("Second answer") < page.index("First answer")
    assert "B reads better" in page
    assert f"/p/alpha/data/judgments/{correction.pk}/" in page


def test_the_browser_page_pages_with_a_next_link(login, project, researcher):
    task = make_task(project)
    made = [judge(task, researcher).pk for _ in range(51)]
    client = login(researcher)

    first = client.get("/p/alpha/data/browse/")
    assert first.status_code == 200
    assert f"after={made[1]}" in first.content.decode()
    second = client.get(f"/p/alpha/data/browse/?after={made[1]}", headers={"HX-Request": "true"})
    assert second.status_code == 200
    assert f"/data/judgments/{made[0]}/" in second.content.decode()
    assert "<h1>" not in second.content.decode()  # the table only


def test_the_api_pages_with_a_next_cursor(login, project, researcher):
    task = make_task(project)
    made = [judge(task, researcher).pk for _ in range(51)]
    client = login(researcher)

    first = client.get("/api/projects/alpha/data/judgments/?kind=comparison").json()
    assert first["next"] == made[1]
    second = client.get(f"/api/projects/alpha/data/judgments/?after={first['next']}").json()
    assert ([row["id"] for row in second["results"]], second["next"]) == ([made[0]], None)


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("after=abc", "after: Enter a whole number."),
        ("kind=nonsense", "kind: Select a valid choice."),
        ("after=-3", "after: Ensure this value is greater than or equal to 1."),
        ("date_from=2024-13-01", "date_from: Enter a valid date."),
        ("date_from=2024-02-01&date_to=2024-01-01", "The date range ends before it starts."),
        ("agreement=maybe", "agreement: Select a valid choice."),
        ("tab=users", "tab: Select a valid choice."),
        ("after=99999999999999999999", "after: Ensure this value is less than or equal to"),
        ("q=a%00b", "holds a NUL character"),
    ],
)
def test_bad_filters_are_refused_with_a_clear_message(login, project, researcher, query, says):
    client = login(researcher)
    page = client.get(f"/p/alpha/data/browse/?{query}")
    api = client.get(f"/api/projects/alpha/data/judgments/?{query}")

    assert page.status_code == 400
    assert says in page.content.decode()
    assert api.status_code == 400
    assert says in api.json()["detail"]


def test_a_judgment_of_another_project_is_not_found(login, project, other_project, researcher):
    foreign = judge(make_task(other_project), None)
    assert login(researcher).get(f"/p/alpha/data/judgments/{foreign.pk}/").status_code == 404


@pytest.mark.parametrize(
    ("caller_name", "status"),
    [("anonymous", 302), ("outsider", 403), ("labeler", 403), ("researcher", 200), ("admin", 200)],
)
def test_a_real_judgment_is_shown_to_those_who_view_data_only(login, project, caller_name, status):
    # The permission table (tests/annotation/test_permissions.py) asks for a missing one.
    found = judge(make_task(project), make_member(project, Role.LABELER, "someone"))
    answer = login(caller(caller_name, project)).get(f"/p/alpha/data/judgments/{found.pk}/")
    assert answer.status_code == status


def test_a_date_range_pages_through_its_days_only(project, researcher):
    task = make_task(project)
    by_day = {}
    for day in (1, 2, 3):
        for _ in range(30):
            made = judge(task, researcher)
            when = datetime.datetime(2024, 5, day, 12, tzinfo=datetime.UTC)
            Judgment.objects.filter(pk=made.pk).update(created_at=when)
            by_day.setdefault(day, []).append(made.pk)
    ranged = {"date_from": datetime.date(2024, 5, 2), "date_to": datetime.date(2024, 5, 3)}

    first = browse(project, **ranged)
    second = browse(project, **ranged, after=first.next_after)

    assert ids(first) + ids(second) == sorted(by_day[2] + by_day[3], reverse=True)
    assert second.next_after is None
    assert ids(browse(project, date_from=datetime.date(2024, 6, 1))) == []
    assert ids(browse(project, date_to=datetime.date(2024, 4, 30))) == []
