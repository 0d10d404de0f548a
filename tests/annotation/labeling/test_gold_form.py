"""The gold answer form of a task (Quality page -> a task's gold form): fields of the task's
kind, what they store, and bad input that re-renders with the reason and stores nothing.
The stored answer is the shape annotation/labeling/kinds/*.matches_gold scores against."""

import pytest

from annotation.labeling.kinds import KINDS
from annotation.models import Task, TaskKind
from tests.factories import judge, make_kind_task, make_member


@pytest.fixture
def client(login, admin_member):
    return login(admin_member)


def _url(task):
    return f"/p/{task.project.slug}/quality/gold/{task.pk}/"


def _ids(task):
    return list(task.links.order_by("position").values_list("response_id", flat=True))


def _gold(task):
    task.refresh_from_db()
    return task.gold_answer if task.is_gold else None


# --- what each kind's fields store ----------------------------------------------------


def test_comparison_shows_both_responses_and_stores_the_choice(client, project):
    task = make_kind_task(project, TaskKind.COMPARISON)

    page = client.get(_url(task)).content.decode()
    stored = client.post(_url(task), {"choice": "b"})

    assert "Answer 0" in page and "Answer 1" in page
    assert all(f'value="{v}"' in page for v in ("a", "b", "tie", "both_bad"))
    assert stored.status_code == 302
    assert _gold(task) == {"choice": "b"}


def test_ranking_places_become_the_order_best_first(client, project):
    task = make_kind_task(project, TaskKind.RANKING, responses=3)
    first, second, third = _ids(task)

    page = client.get(_url(task)).content.decode()
    client.post(_url(task), {f"rank_{first}": "3", f"rank_{second}": "1", f"rank_{third}": "2"})

    assert f'name="rank_{first}"' in page and 'name="all_bad"' in page
    assert _gold(task) == {"ranking": [second, third, first]}


def test_ranking_all_bad_needs_no_places(client, project):
    task = make_kind_task(project, TaskKind.RANKING, responses=3)

    client.post(_url(task), {"all_bad": "on"})

    assert _gold(task) == {"all_bad": True}


def test_rating_stores_the_scores_given_and_the_flags(client, project):
    task = make_kind_task(project, TaskKind.RATING, responses=1)

    page = client.get(_url(task)).content.decode()
    client.post(_url(task), {"score_helpful": "6", "score_honest": "7", "flags": ["unsafe"]})

    assert 'name="score_harmless"' in page and 'max="7"' in page
    assert _gold(task) == {"scores": {"helpful": 6, "honest": 7}, "flags": ["unsafe"]}


def test_demonstration_stores_the_text_and_threshold(client, project):
    task = make_kind_task(project, TaskKind.DEMONSTRATION, responses=0)

    client.post(_url(task), {"text": " Line one\r\nline two ", "min_similarity": "0.6"})

    assert _gold(task) == {"text": "Line one\nline two", "min_similarity": 0.6}


def test_the_form_shows_the_current_gold_answer_and_a_stored_answer_scores_judgments(
    client, project
):
    task = make_kind_task(project, TaskKind.RANKING, responses=3)
    ids = _ids(task)
    client.post(_url(task), {f"rank_{pk}": str(place) for place, pk in enumerate(ids, 1)})

    page = client.get(_url(task)).content.decode()
    labeler = make_member(project, "labeler", "lab")
    agreeing = judge(task, labeler, ranking=ids)

    assert '<option value="1" selected>1</option>' in page
    assert KINDS[TaskKind.RANKING].matches_gold(agreeing, _gold(task))


# --- bad input ------------------------------------------------------------------------


def _with_ids(key: str, ids: list[int]) -> str:
    """rank_X1 -> rank_<id of the task's second response>."""
    if key.startswith("rank_X"):
        return f"rank_{ids[int(key.removeprefix('rank_X'))]}"
    return key


@pytest.mark.parametrize(
    ("kind", "responses", "body", "says"),
    [
        (TaskKind.COMPARISON, 2, {}, "Choose A, B, tie or both bad."),
        (TaskKind.COMPARISON, 2, {"choice": "left"}, "Choose A, B, tie or both bad."),
        (
            TaskKind.RANKING,
            3,
            {"rank_X0": "1", "rank_X1": "1", "rank_X2": "2"},
            "place 1 is given twice",
        ),
        (TaskKind.RANKING, 3, {"rank_X0": "1"}, "Give every response a place from 1 to 3"),
        (
            TaskKind.RANKING,
            3,
            {"rank_X0": "4", "rank_X1": "1", "rank_X2": "2"},
            "Select a valid choice",
        ),
        (
            TaskKind.RATING,
            1,
            {"score_helpful": "8"},
            "The score for helpful must be a whole number from 1 to 7.",
        ),
        (
            TaskKind.RATING,
            1,
            {"score_helpful": "0"},
            "The score for helpful must be a whole number from 1 to 7.",
        ),
        (TaskKind.RATING, 1, {}, "Give at least one score"),
        (TaskKind.RATING, 1, {"score_helpful": "5", "flags": ["rude"]}, "Select a valid choice"),
        (TaskKind.DEMONSTRATION, 0, {"text": "   "}, "Write the ideal reply."),
        (
            TaskKind.DEMONSTRATION,
            0,
            {"text": "Hi", "min_similarity": "0"},
            "Least similarity to match",
        ),
    ],
)
def test_bad_input_is_refused_with_the_reason_and_stores_nothing(
    client, project, kind, responses, body, says
):
    task = make_kind_task(project, kind, responses=responses)
    ids = _ids(task)
    body = {_with_ids(key, ids): value for key, value in body.items()}

    response = client.post(_url(task), body)

    assert response.status_code == 400
    assert says in response.content.decode()
    assert not Task.objects.filter(is_gold=True).exists()


def test_a_task_of_another_project_has_no_gold_form(client, project, other_project):
    task = make_kind_task(other_project, TaskKind.COMPARISON)

    response = client.post(f"/p/{project.slug}/quality/gold/{task.pk}/", {"choice": "a"})

    assert response.status_code == 404
    assert not Task.objects.filter(is_gold=True).exists()
