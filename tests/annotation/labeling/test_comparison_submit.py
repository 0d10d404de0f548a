import random
import uuid

import pytest

from annotation.labeling.services import assignment_next, comparison_submit
from annotation.models import Assignment, Judgment, Role
from config.errors import Conflict, NotAssigned, ServiceError
from tests.factories import make_member, make_task


@pytest.fixture
def task(project):
    return make_task(project)


def test_a_judgment_records_who_what_order_and_time(project, labeler, task):
    assignment = assignment_next(project=project, labeler=labeler, rng=random.Random(1))

    comparison = comparison_submit(
        project=project,
        labeler=labeler,
        assignment_id=assignment.pk,
        side="left",
        client_id=uuid.uuid4(),
        time_spent_ms=5300,
    )

    assert comparison.labeler == labeler
    assert comparison.shown_order == assignment.shown_order
    picked_a = assignment.shown_order[0] == task.links.get(position=0).response_id
    assert comparison.choice == ("a" if picked_a else "b")
    assert comparison.time_spent_ms == 5300
    assert comparison.source == "human"
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.DONE


def test_the_same_client_id_twice_stores_one_judgment(project, labeler, task):
    assignment = assignment_next(project=project, labeler=labeler)
    client_id = uuid.uuid4()

    first = comparison_submit(
        project=project,
        labeler=labeler,
        assignment_id=assignment.pk,
        side="tie",
        client_id=client_id,
    )
    second = comparison_submit(
        project=project,
        labeler=labeler,
        assignment_id=assignment.pk,
        side="tie",
        client_id=client_id,
    )

    assert first.pk == second.pk
    assert Judgment.objects.count() == 1


def test_a_task_not_assigned_to_the_labeler_is_refused(project, labeler, task):
    other = make_member(project, Role.LABELER)
    assignment = assignment_next(project=project, labeler=other)

    with pytest.raises(NotAssigned):
        comparison_submit(
            project=project,
            labeler=labeler,
            assignment_id=assignment.pk,
            side="left",
            client_id=uuid.uuid4(),
        )
    with pytest.raises(NotAssigned):
        comparison_submit(
            project=project,
            labeler=labeler,
            assignment_id=None,
            side="left",
            client_id=uuid.uuid4(),
        )
    assert Judgment.objects.count() == 0


def test_a_second_judgment_of_the_same_assignment_is_a_conflict(project, labeler, task):
    assignment = assignment_next(project=project, labeler=labeler)
    comparison_submit(
        project=project,
        labeler=labeler,
        assignment_id=assignment.pk,
        side="left",
        client_id=uuid.uuid4(),
    )

    with pytest.raises(Conflict):
        comparison_submit(
            project=project,
            labeler=labeler,
            assignment_id=assignment.pk,
            side="right",
            client_id=uuid.uuid4(),
        )
    assert Judgment.objects.count() == 1


@pytest.mark.parametrize(
    ("side", "client_id", "time_spent_ms", "message"),
    [
        ("middle", uuid.uuid4(), 0, "choice must be one of"),
        ("left", "not-a-uuid", 0, "client_id must be a UUID"),
        ("left", uuid.uuid4(), -5, "time_spent_ms"),
    ],
)
def test_bad_input_is_refused_and_stores_nothing(
    project, labeler, task, side, client_id, time_spent_ms, message
):
    assignment = assignment_next(project=project, labeler=labeler)

    with pytest.raises(ServiceError, match=message):
        comparison_submit(
            project=project,
            labeler=labeler,
            assignment_id=assignment.pk,
            side=side,
            client_id=client_id,
            time_spent_ms=time_spent_ms,
        )
    assert Judgment.objects.count() == 0


def test_api_submission_is_idempotent_and_validates(login, project, labeler, task):
    client = login(labeler)
    next_task = client.get(f"/api/projects/{project.slug}/tasks/next/").json()
    body = {"assignment_id": next_task["assignment_id"], "choice": "right",
            "client_id": str(uuid.uuid4()), "time_spent_ms": 1200}  # fmt: skip
    url = f"/api/projects/{project.slug}/judgments/"

    bad = client.post(url, {**body, "choice": "up", "client_id": str(uuid.uuid4())},
                      content_type="application/json")  # fmt: skip
    created = client.post(url, body, content_type="application/json")
    repeated = client.post(url, body, content_type="application/json")

    assert (created.status_code, repeated.status_code) == (201, 200)
    assert created.json()["id"] == repeated.json()["id"]
    assert created.json()["shown_order"] == [
        next_task["left"]["id"],
        next_task["right"]["id"],
    ]
    assert bad.status_code == 400
    assert bad.json()["detail"] == "choice must be one of both_bad, left, right, tie."
    assert Judgment.objects.count() == 1


def test_api_refuses_someone_elses_assignment(login, project, labeler, task):
    other = make_member(project, Role.LABELER)
    assignment = assignment_next(project=project, labeler=other)
    client = login(labeler)

    answer = client.post(
        f"/api/projects/{project.slug}/judgments/",
        {"assignment_id": assignment.pk, "choice": "left", "client_id": str(uuid.uuid4())},
        content_type="application/json",
    )

    assert answer.status_code == 403
    assert answer.json()["detail"] == "This task is not assigned to you."
    assert Judgment.objects.count() == 0


def test_label_page_holds_the_next_task_and_an_answer_returns_the_one_after(
    login, project, labeler
):
    tasks = {make_task(project) for _ in range(3)}
    client = login(labeler)
    page = client.get(f"/p/{project.slug}/label/")
    current, upcoming = page.context["assignment"], page.context["upcoming"]["assignment"]
    assert current.task != upcoming.task
    assert f'data-assignment="{upcoming.pk}"' in page.content.decode()

    answer = client.post(
        f"/p/{project.slug}/label/",
        {
            "assignment_id": current.pk,
            "choice": "left-3",
            "client_id": str(uuid.uuid4()),
            "time_spent_ms": "2500",
            "after": upcoming.pk,
        },
        HTTP_HX_REQUEST="true",
    )

    html = answer.content.decode().strip()
    assert answer.status_code == 200
    assert html.startswith('<section id="task"')
    third = Assignment.objects.exclude(pk__in=[current.pk, upcoming.pk]).get(labeler=labeler)
    assert third.task in tasks - {current.task, upcoming.task}
    assert f'data-assignment="{third.pk}"' in html
    judgment = Judgment.objects.get(labeler=labeler)
    assert (judgment.time_spent_ms, judgment.strength) == (2500, 3)


def test_a_refused_page_answer_says_why_and_stores_nothing(login, project, labeler):
    make_task(project)
    client = login(labeler)
    current = client.get(f"/p/{project.slug}/label/").context["assignment"]

    answer = client.post(
        f"/p/{project.slug}/label/",
        {"assignment_id": current.pk, "choice": "sideways", "client_id": str(uuid.uuid4())},
        HTTP_HX_REQUEST="true",
    )

    assert answer.status_code == 400
    assert "Not saved: choice must be one of" in answer.content.decode()
    assert Judgment.objects.count() == 0


def test_without_javascript_an_answer_redirects_back_to_the_queue(login, project, labeler):
    make_task(project)
    client = login(labeler)
    current = client.get(f"/p/{project.slug}/label/").context["assignment"]

    answer = client.post(
        f"/p/{project.slug}/label/",
        {"assignment_id": current.pk, "choice": "tie", "client_id": str(uuid.uuid4()),
         "shown_at_ms": "0"},
    )  # fmt: skip

    assert answer.status_code == 302
    assert answer["Location"] == f"/p/{project.slug}/label/"
    assert Judgment.objects.get().choice == "tie"


def test_next_task_api_refuses_a_malformed_after(login, project, labeler, task):
    answer = login(labeler).get(f"/api/projects/{project.slug}/tasks/next/?after=abc")

    assert answer.status_code == 400
    assert answer.json() == {"detail": "after must be an assignment id."}
    assert Assignment.objects.count() == 0
