import uuid

import pytest
from django.http import QueryDict

from annotation.labeling.kinds import KINDS
from annotation.labeling.kinds.rating import FLAGS
from annotation.labeling.services import assignment_next, ensure_task, judgment_submit
from annotation.models import Assignment, Judgment, Response, Role, Task
from config.errors import ServiceError
from tests.factories import make_member, make_prompt, make_user

RATING = KINDS["rating"]
GOOD = {"score_helpful": "6", "score_harmless": "7", "score_honest": "5"}


def make_rating_task(project, *, text: str = "The capital of France is Paris.") -> Task:
    prompt = make_prompt(project)
    response = Response.objects.create(prompt=prompt, author="test", text=text)
    task, _ = ensure_task(project=project, kind="rating", prompt=prompt, responses=[response])
    return task


def form(fields: dict, flags=()) -> QueryDict:
    """The page's form: score_<criterion> radios and repeated flag checkboxes."""
    data = QueryDict(mutable=True)
    for name, field in fields.items():
        data[name] = field
    data.setlist("flag", list(flags))
    return data


def submit(labeler, assignment, data) -> Judgment:
    return judgment_submit(
        project=assignment.task.project,
        labeler=labeler,
        assignment_id=assignment.pk,
        data=data,
        client_id=uuid.uuid4(),
    )


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def task(project):
    return make_rating_task(project)


def test_page_fields_store_scores_flags_and_comment(project, labeler, task):
    assignment = assignment_next(project=project, labeler=labeler)

    judgment = submit(
        labeler, assignment, form({**GOOD, "rationale": " Fine. "}, flags=["spam", "pii"])
    )

    assert judgment.kind == "rating"
    assert judgment.rated_response_id == task.links.get().response_id
    assert judgment.scores == {"helpful": 6, "harmless": 7, "honest": 5}
    assert judgment.flags == ["pii", "spam"]  # in the fixed order, whatever the order sent
    assert judgment.rationale == "Fine."
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.DONE


def test_json_scores_object_and_flags_list_are_accepted(project, labeler, task):
    assignment = assignment_next(project=project, labeler=labeler)

    judgment = submit(
        labeler,
        assignment,
        {"scores": {"helpful": 1, "harmless": 2, "honest": 3}, "flags": ["factually_wrong"]},
    )

    assert judgment.scores == {"helpful": 1, "harmless": 2, "honest": 3}
    assert judgment.flags == ["factually_wrong"]


def test_the_project_criteria_decide_what_is_rated(project, labeler, task):
    project.criteria = ["concise"]
    project.save(update_fields=["criteria"])
    assignment = assignment_next(project=project, labeler=labeler)

    judgment = submit(labeler, assignment, {"score_concise": 4})

    assert judgment.scores == {"concise": 4}


BAD_INPUT = [
    ({"score_helpful": "6", "score_harmless": "7"}, "Rate every criterion: honest has no score."),
    ({**GOOD, "score_honest": ""}, "Rate every criterion: honest has no score."),
    (
        {**GOOD, "score_helpful": "8"},
        "The score for helpful must be a whole number from 1 to 7.",
    ),
    (
        {**GOOD, "score_helpful": "0"},
        "The score for helpful must be a whole number from 1 to 7.",
    ),
    (
        {**GOOD, "score_harmless": "great"},
        "The score for harmless must be a whole number from 1 to 7.",
    ),
    (
        {"scores": {"helpful": 5, "harmless": 5, "honest": 4.5}},
        "The score for honest must be a whole number from 1 to 7.",
    ),
    (
        {"scores": {"helpful": True, "harmless": 5, "honest": 4}},
        "The score for helpful must be a whole number from 1 to 7.",
    ),
    (
        {"scores": {"helpful": 5, "harmless": 5, "honest": 4, "funny": 2}},
        "Unknown criterion 'funny'; this project rates helpful, harmless, honest.",
    ),
    ({"scores": [5, 5, 4]}, "scores must be an object {criterion: score}."),
    (
        {**GOOD, "flag": "rude"},
        "Unknown flag 'rude'; choose from pii, unsafe, factually_wrong, off_language, spam.",
    ),
    (
        {**GOOD, "flags": ["pii", {"x": 1}]},
        "Unknown flag {'x': 1}; choose from pii, unsafe, factually_wrong, off_language, spam.",
    ),
    ({**GOOD, "rationale": "x" * 5001}, "Keep the comment under 5000 characters."),
]


@pytest.mark.parametrize(("data", "message"), BAD_INPUT)
def test_bad_input_is_refused_with_a_clear_message_and_stores_nothing(
    project, labeler, task, data, message
):
    assignment = assignment_next(project=project, labeler=labeler)

    with pytest.raises(ServiceError) as refused:
        submit(labeler, assignment, data)

    assert refused.value.message == message
    assert Judgment.objects.count() == 0
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.PENDING


@pytest.mark.parametrize(
    ("scores", "flags", "gold", "matches"),
    [
        ({"helpful": 6, "honest": 2}, [], {"scores": {"helpful": 6, "honest": 2}}, True),
        ({"helpful": 5, "honest": 3}, [], {"scores": {"helpful": 6, "honest": 2}}, True),
        ({"helpful": 4, "honest": 2}, [], {"scores": {"helpful": 6, "honest": 2}}, False),
        ({"helpful": 6}, [], {"scores": {"helpful": 6, "honest": 2}}, False),
        ({"helpful": 6}, ["unsafe", "pii"], {"scores": {"helpful": 7}, "flags": ["pii"]}, True),
        ({"helpful": 6}, ["spam"], {"scores": {"helpful": 7}, "flags": ["pii"]}, False),
    ],
)
def test_gold_matches_when_every_score_is_within_one_point(scores, flags, gold, matches):
    judgment = Judgment(kind="rating", scores=scores, flags=flags)

    assert RATING.matches_gold(judgment, gold) is matches


def test_create_tasks_makes_one_rating_task_per_response(project, other_project):
    prompt = make_prompt(project)
    answers = [Response.objects.create(prompt=prompt, text=f"Answer {n}.") for n in range(3)]
    Response.objects.create(prompt=make_prompt(other_project), text="Elsewhere.")

    created = RATING.create_tasks(project=project, options={})
    again = RATING.create_tasks(project=project, options={})

    assert (created.created, again.created) == (3, 0)
    tasks = Task.objects.filter(project=project, kind="rating").order_by("id")
    assert [[r.pk for r in task.ordered_responses()] for task in tasks] == [
        [answer.pk] for answer in answers
    ]
    assert not Task.objects.filter(project=other_project).exists()


def test_a_rating_task_takes_exactly_one_response(project):
    prompt = make_prompt(project)
    two = [Response.objects.create(prompt=prompt, text=f"Answer {n}.") for n in range(2)]

    with pytest.raises(ServiceError, match="A rating task takes 1 to 1 responses, not 2"):
        ensure_task(project=project, kind="rating", prompt=prompt, responses=two)


def test_api_submission_stores_a_rating_and_refuses_a_bad_one(login, project, labeler, task):
    client = login(labeler)
    shown = client.get(f"/api/projects/{project.slug}/tasks/next/").json()
    url = f"/api/projects/{project.slug}/judgments/"
    body = {"assignment_id": shown["assignment_id"], "client_id": str(uuid.uuid4()),
            "scores": {"helpful": 2, "harmless": 1, "honest": 3},
            "flags": ["unsafe", "off_language"], "rationale": "Risky."}  # fmt: skip

    bad = client.post(
        url, {**body, "flags": ["boring"], "client_id": str(uuid.uuid4())},
        content_type="application/json",
    )  # fmt: skip
    created = client.post(url, body, content_type="application/json")

    assert bad.status_code == 400
    assert bad.json()["detail"] == (
        "Unknown flag 'boring'; choose from pii, unsafe, factually_wrong, off_language, spam."
    )
    assert created.status_code == 201
    payload = created.json()
    assert payload["rated_response"] == shown["responses"][0]["id"]
    assert payload["scores"] == {"helpful": 2, "harmless": 1, "honest": 3}
    assert payload["flags"] == ["unsafe", "off_language"]
    assert payload["rationale"] == "Risky."
    assert Judgment.objects.count() == 1


@pytest.mark.parametrize(
    ("role", "status"),
    [(None, 401), ("outsider", 403), (Role.LABELER, 201), (Role.RESEARCHER, 201),
     (Role.ADMIN, 201)],
)  # fmt: skip
def test_who_may_submit_a_rating_through_the_api(login, project, task, role, status):
    if role is None:
        user, assignment_id = None, 1
    elif role == "outsider":
        user = make_user("stranger")
        assignment_id = assignment_next(project=project, labeler=make_user("lone")).pk
    else:
        user = make_member(project, role, f"as-{role}")
        assignment_id = assignment_next(project=project, labeler=user).pk
    client = login(user)
    body = {"assignment_id": assignment_id, "client_id": str(uuid.uuid4()),
            "score_helpful": 4, "score_harmless": 4, "score_honest": 4}  # fmt: skip

    answer = client.post(
        f"/api/projects/{project.slug}/judgments/", body, content_type="application/json"
    )

    assert answer.status_code == status
    assert Judgment.objects.count() == (1 if status == 201 else 0)


def test_the_page_shows_every_criterion_flag_and_key(login, project, labeler, task):
    page = login(labeler).get(f"/p/{project.slug}/label/")

    html = page.content.decode()
    assert page.status_code == 200
    assert "The capital of France is Paris." in html
    for criterion in ("helpful", "harmless", "honest"):
        for score in range(1, 8):
            assert f'name="score_{criterion}" value="{score}"' in html
    for flag, (label, key) in FLAGS.items():
        assert (
            f'name="flag" value="{flag}" data-flag-key="{key}"> {label} <kbd class="keys-hint">'
            in html
        )
    assert "<kbd>Enter</kbd>" in html and "<kbd>1</kbd>–<kbd>7</kbd>" in html


def test_page_submission_with_htmx_stores_the_rating_and_shows_the_next_task(
    login, project, labeler, task
):
    make_rating_task(project, text="Second answer.")
    client = login(labeler)
    assignment = client.get(f"/p/{project.slug}/label/").context["assignment"]
    fields = {**GOOD, "flag": ["pii", "unsafe"], "rationale": "Leaks an address.",
              "assignment_id": assignment.pk, "client_id": str(uuid.uuid4()),
              "shown_at_ms": "0"}  # fmt: skip

    answer = client.post(f"/p/{project.slug}/label/", fields, HTTP_HX_REQUEST="true")

    html = answer.content.decode()
    assert answer.status_code == 200
    assert html.lstrip().startswith('<section id="task"')
    assert "Second answer." in html
    judgment = Judgment.objects.get()
    assert judgment.scores == {"helpful": 6, "harmless": 7, "honest": 5}
    assert judgment.flags == ["pii", "unsafe"]
    assert judgment.rationale == "Leaks an address."


def test_page_submission_without_a_score_shows_the_message_and_stores_nothing(
    login, project, labeler, task
):
    client = login(labeler)
    assignment = client.get(f"/p/{project.slug}/label/").context["assignment"]
    fields = {"score_helpful": "3", "assignment_id": assignment.pk,
              "client_id": str(uuid.uuid4())}  # fmt: skip

    answer = client.post(f"/p/{project.slug}/label/", fields, follow=True)

    assert "Rate every criterion: harmless has no score." in answer.content.decode()
    assert Judgment.objects.count() == 0
