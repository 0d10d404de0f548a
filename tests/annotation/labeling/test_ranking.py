import re
import uuid

import pytest
from django.http import QueryDict

from annotation.labeling.kinds import KINDS
from annotation.labeling.kinds.ranking import kendall_tau, ranking_pairs
from annotation.labeling.services import assignment_next, ensure_task, judgment_submit
from annotation.models import Assignment, Judgment, Response, Role, Task
from config.errors import ServiceError
from tests.factories import make_member, make_prompt, make_user

RANKING = KINDS["ranking"]


def make_ranking_task(project, *, k: int = 4, prompt=None) -> Task:
    prompt = prompt or make_prompt(project)
    responses = [
        Response.objects.create(prompt=prompt, author=f"test: {n}", text=f"Answer number {n}.")
        for n in range(k)
    ]
    task, _ = ensure_task(project=project, kind="ranking", prompt=prompt, responses=responses)
    return task


def submit(labeler, assignment, data) -> Judgment:
    return judgment_submit(
        project=assignment.task.project,
        labeler=labeler,
        assignment_id=assignment.pk,
        data=data,
        client_id=uuid.uuid4(),
    )


def places_form(order: list[int], **extra) -> QueryDict:
    """The page's form: one rank_<id> select per response, holding its place."""
    form = QueryDict(mutable=True)
    for place, response_id in enumerate(order, start=1):
        form[f"rank_{response_id}"] = str(place)
    for name, field in extra.items():
        form[name] = field
    return form


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def task(project):
    return make_ranking_task(project, k=4)


def test_a_ranking_list_is_stored_best_first(project, labeler, task):
    assignment = assignment_next(project=project, labeler=labeler)
    best_first = list(reversed(assignment.shown_order))

    judgment = submit(labeler, assignment, {"ranking": best_first, "rationale": " Clear. "})

    assert judgment.kind == "ranking"
    assert judgment.ranking == best_first
    assert judgment.all_bad is False
    assert judgment.rationale == "Clear."
    assert judgment.shown_order == assignment.shown_order
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.DONE


def test_the_page_places_become_the_ranking(project, labeler, task):
    assignment = assignment_next(project=project, labeler=labeler)
    first, second, third, fourth = assignment.shown_order
    form = places_form([third, first, fourth, second])

    judgment = submit(labeler, assignment, form)

    assert judgment.ranking == [third, first, fourth, second]


@pytest.mark.parametrize("with_ranking", [True, False])
def test_all_bad_is_stored_with_or_without_a_ranking(project, labeler, task, with_ranking):
    assignment = assignment_next(project=project, labeler=labeler)
    order = assignment.shown_order
    data = places_form(order, all_bad="true") if with_ranking else {"all_bad": True}

    judgment = submit(labeler, assignment, data)

    assert judgment.all_bad is True
    assert judgment.ranking == (order if with_ranking else [])
    assert ranking_pairs(judgment) == []


BAD_INPUT = [
    ("nothing", "Rank the 4 responses best first, or mark them all bad."),
    ("empty list", "Rank the 4 responses best first, or mark them all bad."),
    ("all_bad maybe", "all_bad must be true or false."),
    ("words", "ranking must list response ids (whole numbers), best first."),
    ("missing", "ranking must hold each of the 4 shown responses exactly once."),
    ("repeated", "ranking must hold each of the 4 shown responses exactly once."),
    ("foreign", "ranking must hold each of the 4 shown responses exactly once."),
    ("same places", "Give each response a different place from 1 to 4."),
    ("place 5", "Give every response a place from 1 to 4."),
    ("place missing", "Give every response a place from 1 to 4."),
    ("long rationale", "Keep the rationale under 5000 characters."),
]


def _bad_data(case, order):
    first, second, third, fourth = order
    return {
        "nothing": {},
        "empty list": {"ranking": []},
        "all_bad maybe": {"all_bad": "maybe"},
        "words": {"ranking": ["first", "second", "third", "fourth"]},
        "missing": {"ranking": [first, second, third]},
        "repeated": {"ranking": [first, first, second, third, fourth]},
        "foreign": {"ranking": [first, second, third, 999_999]},
        "same places": places_form([first, second, third], **{f"rank_{fourth}": "1"}),
        "place 5": places_form([first, second, third], **{f"rank_{fourth}": "5"}),
        "place missing": places_form([first, second, third]),
        "long rationale": {"ranking": order, "rationale": "x" * 5001},
    }[case]


@pytest.mark.parametrize(("case", "message"), BAD_INPUT)
def test_bad_input_is_refused_with_a_clear_message_and_stores_nothing(
    project, labeler, task, case, message
):
    assignment = assignment_next(project=project, labeler=labeler)

    with pytest.raises(ServiceError) as refused:
        submit(labeler, assignment, _bad_data(case, assignment.shown_order))

    assert refused.value.message == message
    assert Judgment.objects.count() == 0
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.PENDING


def test_ranking_pairs_put_every_better_response_before_every_worse_one(project, labeler, task):
    assignment = assignment_next(project=project, labeler=labeler)
    best, second, third, worst = assignment.shown_order
    judgment = submit(labeler, assignment, {"ranking": [best, second, third, worst]})

    pairs = ranking_pairs(judgment)

    assert pairs == [
        (best, second), (best, third), (best, worst),
        (second, third), (second, worst),
        (third, worst),
    ]  # fmt: skip
    assert len(pairs) == 4 * 3 // 2


def test_kendall_tau_runs_from_reversed_to_same_order():
    assert kendall_tau([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert kendall_tau([4, 3, 2, 1], [1, 2, 3, 4]) == -1.0
    assert kendall_tau([2, 1, 3, 4], [1, 2, 3, 4]) == pytest.approx(4 / 6)


@pytest.mark.parametrize(
    ("labeled", "all_bad", "gold", "matches"),
    [
        ([1, 2, 3, 4], False, {"ranking": [1, 2, 3, 4]}, True),
        ([2, 1, 3, 4], False, {"ranking": [1, 2, 3, 4]}, True),  # one neighbour swap
        ([2, 1, 4, 3], False, {"ranking": [1, 2, 3, 4]}, False),  # two swaps: tau 1/3
        ([4, 3, 2, 1], False, {"ranking": [1, 2, 3, 4]}, False),
        ([1, 2, 3, 4], True, {"ranking": [1, 2, 3, 4]}, False),
        ([], True, {"all_bad": True}, True),
        ([1, 2, 3, 4], False, {"all_bad": True}, False),
        ([1, 2, 3, 4], False, {"ranking": [1, 2, 3, 5]}, False),
    ],
)
def test_gold_matches_when_kendall_tau_is_at_least_a_half(labeled, all_bad, gold, matches):
    judgment = Judgment(kind="ranking", ranking=labeled, all_bad=all_bad)

    assert RANKING.matches_gold(judgment, gold) is matches


def _responses(prompt, count):
    return [
        Response.objects.create(prompt=prompt, author=f"test: {n}", text=f"Answer {n}.")
        for n in range(count)
    ]


def test_create_tasks_ranks_the_k_newest_responses_of_each_prompt_with_enough(project):
    five = _responses(make_prompt(project), 5)
    four = _responses(make_prompt(project), 4)
    _responses(make_prompt(project), 3)

    created = RANKING.create_tasks(project=project, options={"k": 4})
    again = RANKING.create_tasks(project=project, options={"k": "4"})

    assert (created.created, again.created) == (2, 0)
    tasks = Task.objects.filter(project=project, kind="ranking").order_by("prompt_id")
    assert [[r.pk for r in t.ordered_responses()] for t in tasks] == [
        [r.pk for r in five[1:]],
        [r.pk for r in four],
    ]


@pytest.mark.parametrize("options", [{}, {"k": ""}, {"k": None}, None])
def test_create_tasks_uses_k_4_by_default(project, options):
    _responses(make_prompt(project), 4)
    _responses(make_prompt(project), 3)

    assert RANKING.create_tasks(project=project, options=options).created == 1


@pytest.mark.parametrize("k", [2, 10, "four", 3.5, True])
def test_create_tasks_refuses_k_outside_3_to_9(project, k):
    _responses(make_prompt(project), 4)

    with pytest.raises(ServiceError) as refused:
        RANKING.create_tasks(project=project, options={"k": k})

    assert refused.value.message == "k must be a whole number from 3 to 9."
    assert Task.objects.count() == 0


@pytest.mark.parametrize("count", [2, 10])
def test_a_ranking_task_needs_3_to_9_responses(project, count):
    prompt = make_prompt(project)

    with pytest.raises(ServiceError, match=f"A ranking task takes 3 to 9 responses, not {count}"):
        ensure_task(
            project=project, kind="ranking", prompt=prompt, responses=_responses(prompt, count)
        )


def test_api_submission_stores_a_ranking_and_refuses_a_bad_one(login, project, labeler, task):
    client = login(labeler)
    shown = client.get(f"/api/projects/{project.slug}/tasks/next/").json()
    ids = [response["id"] for response in shown["responses"]]
    url = f"/api/projects/{project.slug}/judgments/"
    body = {"assignment_id": shown["assignment_id"], "client_id": str(uuid.uuid4()),
            "ranking": ids[::-1], "rationale": "Last is best."}  # fmt: skip

    bad = client.post(
        url, {**body, "ranking": ids[:3], "client_id": str(uuid.uuid4())},
        content_type="application/json",
    )  # fmt: skip
    created = client.post(url, body, content_type="application/json")

    assert bad.status_code == 400
    assert bad.json()["detail"] == "ranking must hold each of the 4 shown responses exactly once."
    assert created.status_code == 201
    assert created.json()["ranking"] == ids[::-1]
    assert created.json()["all_bad"] is False
    assert created.json()["rationale"] == "Last is best."
    assert Judgment.objects.get().ranking == ids[::-1]


@pytest.mark.parametrize(
    ("role", "status"),
    [(None, 401), ("outsider", 403), (Role.LABELER, 201), (Role.RESEARCHER, 201),
     (Role.ADMIN, 201)],
)  # fmt: skip
def test_who_may_submit_a_ranking_through_the_api(login, project, task, role, status):
    if role is None:
        user, assignment_id = None, 1
    elif role == "outsider":
        user = make_user("stranger")
        assignment_id = assignment_next(project=project, labeler=make_user("lone")).pk
    else:
        user = make_member(project, role, f"as-{role}")
        assignment_id = assignment_next(project=project, labeler=user).pk
    client = login(user)
    ranking = list(task.links.values_list("response_id", flat=True))
    body = {"assignment_id": assignment_id, "client_id": str(uuid.uuid4()), "ranking": ranking}

    answer = client.post(
        f"/api/projects/{project.slug}/judgments/", body, content_type="application/json"
    )

    assert answer.status_code == status
    assert Judgment.objects.filter(ranking=ranking).count() == (1 if status == 201 else 0)


def test_the_page_shows_the_responses_with_places_and_keys(login, project, labeler, task):
    page = login(labeler).get(f"/p/{project.slug}/label/")

    html = page.content.decode()
    assignment = page.context["assignment"]
    assert page.status_code == 200
    for place, response_id in enumerate(assignment.shown_order, start=1):
        own_select = rf'name="rank_{response_id}" data-rank-select>.*?</select>'
        assert f'<option value="{place}" selected>' in re.search(own_select, html, re.S)[0]
    assert html.count("data-rank-item") == 4
    assert "<kbd>Enter</kbd>" in html and "<kbd>X</kbd>" in html and "<kbd>U</kbd>" in html


def test_page_submission_with_htmx_stores_the_order_and_shows_the_next_task(
    login, project, labeler, task
):
    make_ranking_task(project, k=3)
    client = login(labeler)
    assignment = client.get(f"/p/{project.slug}/label/").context["assignment"]
    first, second, third, fourth = assignment.shown_order
    form = {f"rank_{fourth}": "1", f"rank_{third}": "2", f"rank_{second}": "3",
            f"rank_{first}": "4", "assignment_id": assignment.pk,
            "client_id": str(uuid.uuid4()), "shown_at_ms": "0"}  # fmt: skip

    answer = client.post(f"/p/{project.slug}/label/", form, HTTP_HX_REQUEST="true")

    assert answer.status_code == 200
    assert answer.content.decode().lstrip().startswith('<section id="task"')
    assert Judgment.objects.get().ranking == [fourth, third, second, first]
    assert answer.content.decode().count("data-rank-item") == 3


def test_page_submission_of_bad_places_shows_the_message_and_stores_nothing(
    login, project, labeler, task
):
    client = login(labeler)
    assignment = client.get(f"/p/{project.slug}/label/").context["assignment"]
    form = {f"rank_{response_id}": "1" for response_id in assignment.shown_order}
    form |= {"assignment_id": assignment.pk, "client_id": str(uuid.uuid4())}

    answer = client.post(f"/p/{project.slug}/label/", form, follow=True)

    assert "Give each response a different place from 1 to 4." in answer.content.decode()
    assert Judgment.objects.count() == 0
