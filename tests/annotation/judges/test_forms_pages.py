"""The judges pages' forms: job options as one field per option, and principles as rows
(add, remove, reorder). Each stores what its fields say; bad input re-renders with the
reason and stores nothing."""

import pytest

from annotation.judges import services
from annotation.models import Constitution, JudgeJob
from tests.annotation.judges.forms_data import principle_rows
from tests.factories import make_task

KIND = {
    "name": "kind",
    "critique_request": "Is it unkind?",
    "revision_request": "Make it kind.",
    "comparison_question": "Which is kinder?",
}
TRUE = {
    "name": "true",
    "critique_request": "Is it false?",
    "revision_request": "Make it true.",
    "comparison_question": "Which is truer?",
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
        api_key="sk-x",
        constitution=constitution,
    )


@pytest.fixture
def admin_client(login, admin_member):
    return login(admin_member)


# --- job options ------------------------------------------------------------------------


def test_the_job_form_shows_one_field_per_option_with_defaults_and_limits(
    admin_client, project, judge
):
    page = admin_client.get(f"/p/{project.slug}/judges/").content.decode()

    assert 'name="pairwise-limit"' in page and "1 to 10000, default 50" in page
    assert 'name="revision-temperature"' in page and "0 to 2, default 0.0" in page
    assert 'name="self_instruct-seeds"' in page
    assert 'name="options"' not in page


def test_a_job_stores_the_options_its_fields_say(admin_client, project, judge):
    task = make_task(project)

    started = admin_client.post(
        f"/p/{project.slug}/judges/jobs/",
        {
            "judge": judge.pk,
            "kind": "pairwise",
            "max_requests": "30",
            "pairwise-limit": "7",
            "pairwise-task_ids": f"{task.pk}",
            "pairwise-unsure_threshold": "0.2",
            "pairwise-critique_max_tokens": "",
            # another kind's fields are ignored
            "revision-limit": "99999",
        },
    )

    assert started.status_code == 302
    job = JudgeJob.objects.get()
    assert job.options == {"limit": 7, "task_ids": [task.pk], "unsure_threshold": 0.2}


def test_revision_options_from_fields(admin_client, project, judge):
    admin_client.post(
        f"/p/{project.slug}/judges/jobs/",
        {
            "judge": judge.pk,
            "kind": "revision",
            "revision-rounds": "2",
            "revision-temperature": "0.5",
            "revision-only_model_responses": "no",
        },
    )

    options = JudgeJob.objects.get().options
    assert (options["rounds"], options["temperature"], options["only_model_responses"]) == (
        2,
        0.5,
        False,
    )


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"pairwise-limit": "0"}, "Most pairs: Ensure this value is greater than or equal to 1."),
        ({"pairwise-unsure_threshold": "0.9"}, "Unsure below: Ensure this value is less than"),
        ({"pairwise-task_ids": "1; two"}, "List ids as whole numbers"),
        ({"pairwise-colour": "red"}, "Unknown option &#x27;colour&#x27; for pairwise"),
        ({"options": '{"limit": 5}'}, "Unknown option &#x27;options&#x27; for pairwise"),
        ({"pairwise-task_ids": "999999"}, "Not comparison tasks of this project: 999999"),
    ],
)
def test_bad_job_options_are_refused_with_the_reason(admin_client, project, judge, fields, says):
    response = admin_client.post(
        f"/p/{project.slug}/judges/jobs/",
        {"judge": judge.pk, "kind": "pairwise", "max_requests": "20", **fields},
    )

    assert response.status_code == 400
    assert says in response.content.decode()
    assert not JudgeJob.objects.exists()


# --- principles -------------------------------------------------------------------------


def test_the_constitution_form_starts_with_the_default_principles_as_rows(admin_client, project):
    page = admin_client.get(f"/p/{project.slug}/judges/").content.decode()

    assert 'name="principles-0-name"' in page
    assert 'name="principles-0-DELETE"' in page and 'name="principles-0-ORDER"' in page
    assert "Add a principle" in page


def test_rows_are_stored_in_their_order_without_the_removed_ones(admin_client, project):
    rows = [{**KIND, "ORDER": 2}, {**TRUE, "ORDER": 1}, {**KIND, "name": "gone", "DELETE": True}]

    created = admin_client.post(
        f"/p/{project.slug}/judges/constitutions/",
        {"constitution_name": "house", **principle_rows(rows)},
    )

    assert created.status_code == 302
    assert Constitution.objects.get(name="house").principles == [TRUE, KIND]


def test_add_a_principle_shows_a_blank_row_and_stores_nothing(admin_client, project):
    response = admin_client.post(
        f"/p/{project.slug}/judges/constitutions/",
        {"constitution_name": "house", "action": "add_row", **principle_rows([KIND])},
    )

    page = response.content.decode()
    assert response.status_code == 200
    assert 'name="principles-1-name"' in page and "Is it unkind?" in page
    assert not Constitution.objects.filter(name="house").exists()


def test_a_blank_added_row_is_skipped(admin_client, project):
    rows = principle_rows([KIND, {}])

    admin_client.post(
        f"/p/{project.slug}/judges/constitutions/", {"constitution_name": "h", **rows}
    )

    assert Constitution.objects.get(name="h").principles == [KIND]


def test_editing_rows_saves_a_new_version_and_keeps_the_old(admin_client, project):
    v1 = services.constitution_create(workspace=project.workspace, name="house", principles=[KIND])
    page = admin_client.get(f"/p/{project.slug}/judges/constitutions/{v1.pk}/").content.decode()
    assert 'value="kind"' in page

    response = admin_client.post(
        f"/p/{project.slug}/judges/constitutions/{v1.pk}/",
        {**principle_rows([{**KIND, "ORDER": 2}, {**TRUE, "ORDER": 1}], initial=1), "note": "n"},
    )

    v2 = Constitution.objects.get(name="house", version=2)
    assert response["Location"] == f"/p/{project.slug}/judges/constitutions/{v2.pk}/"
    assert v2.principles == [TRUE, KIND]
    v1.refresh_from_db()
    assert v1.principles == [KIND]


@pytest.mark.parametrize(
    ("rows", "says"),
    [
        ([{**KIND, "name": ""}], "Principle 1: name: Give the principle a name."),
        ([{**KIND, "name": "   "}], "Principle 1: name: Give the principle a name."),
        ([KIND, {**TRUE, "name": "kind"}], "Each principle needs its own name; &#x27;kind&#x27;"),
        ([{**KIND, "DELETE": True}], "A constitution needs at least one principle."),
        ([{**KIND, "revision_request": "x" * 2001}], "Principle 1: revision request: Ensure"),
    ],
)
def test_bad_rows_are_refused_and_nothing_is_stored(admin_client, project, rows, says):
    v1 = services.constitution_create(workspace=project.workspace, name="house", principles=[KIND])

    edited = admin_client.post(
        f"/p/{project.slug}/judges/constitutions/{v1.pk}/", principle_rows(rows, initial=1)
    )
    created = admin_client.post(
        f"/p/{project.slug}/judges/constitutions/",
        {"constitution_name": "new", **principle_rows(rows)},
    )

    for response in (edited, created):
        assert response.status_code == 400
        assert says in response.content.decode()
    assert list(Constitution.objects.values_list("name", "version")) == [("house", 1)]
