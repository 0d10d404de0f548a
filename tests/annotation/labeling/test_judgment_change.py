import random
import uuid
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from annotation.datasets.selectors import preference_rows
from annotation.labeling import changes
from annotation.labeling.changes import judgment_change
from annotation.labeling.selectors import answer_as_shown, recent_judgments
from annotation.labeling.services import assignment_next, judgment_submit
from annotation.models import Judgment, Prompt, Response, Role, TaskKind
from annotation.projects.guidelines import guidelines_publish
from annotation.projects.selectors import labeler_progress
from annotation.review.selectors import my_work
from annotation.review.services import judgment_accept, judgment_correct
from config.errors import Conflict, NotFound, ServiceError
from tests.factories import make_kind_task, make_member, make_task


def _judge_next(project, labeler, **data) -> Judgment:
    assignment = assignment_next(project=project, labeler=labeler, rng=random.Random(3))
    return judgment_submit(
        project=project,
        labeler=labeler,
        assignment_id=assignment.pk,
        data=data,
        client_id=uuid.uuid4(),
    )


def _change(project, labeler, judgment, client_id=None, **data) -> tuple[Judgment, bool]:
    return judgment_change(
        project=project,
        labeler=labeler,
        judgment_id=judgment.pk,
        data=data,
        client_id=client_id or uuid.uuid4(),
        time_spent_ms=1200,
    )


def _shown_text(judgment: Judgment, side: str) -> str:
    position = 0 if side == "left" else 1
    return Response.objects.get(pk=judgment.shown_order[position]).text


@pytest.fixture
def first(project, labeler):
    make_task(project, texts=("Paris.", "Lyon."))
    return _judge_next(project, labeler, choice="left-4")


def test_a_change_is_a_new_judgment_that_supersedes_the_old_one(project, labeler, first):
    guidelines = guidelines_publish(project=project, text="Prefer the true answer.", author=labeler)

    changed, created = _change(project, labeler, first, choice="right-2", rationale="misread")

    assert created is True
    assert changed.supersedes == first
    assert changed.source == Judgment.Source.HUMAN
    assert changed.labeler == labeler
    assert (changed.task, changed.prompt) == (first.task, first.prompt)
    assert changed.shown_order == first.shown_order
    assert changed.choice == ("b" if first.choice == "a" else "a")
    assert (changed.strength, changed.rationale) == (2, "misread")
    assert changed.guidelines == guidelines
    assert changed.time_spent_ms == 1200
    first.refresh_from_db()
    assert first.choice in ("a", "b") and first.strength == 4  # the old row is kept as it was


def test_a_change_can_itself_be_changed_but_the_old_one_not_again(project, labeler, first):
    second, _ = _change(project, labeler, first, choice="tie")

    third, _ = _change(project, labeler, second, choice="both_bad")

    assert third.supersedes == second and second.supersedes == first
    with pytest.raises(Conflict, match="already changed"):
        _change(project, labeler, first, choice="left-1")
    assert Judgment.objects.count() == 3
    assert recent_judgments(project=project, labeler=labeler) == [third]


def test_exports_read_only_the_changed_answer(project, labeler, first):
    winner_before = _shown_text(first, "left")

    _change(project, labeler, first, choice="right-3")

    rows = list(preference_rows(project, export_format="dpo"))
    assert len(rows) == 1
    assert rows[0]["chosen"][-1]["content"] == _shown_text(first, "right")
    assert rows[0]["rejected"][-1]["content"] == winner_before


def test_the_same_client_id_twice_stores_one_change(project, labeler, first):
    client_id = uuid.uuid4()

    one, created_one = _change(project, labeler, first, client_id=client_id, choice="tie")
    two, created_two = _change(project, labeler, first, client_id=client_id, choice="tie")

    assert (one.pk, created_one, created_two) == (two.pk, True, False)
    assert Judgment.objects.count() == 2


def test_a_client_id_of_another_judgment_is_refused(project, labeler, first):
    with pytest.raises(Conflict, match="client_id was already used"):
        _change(project, labeler, first, client_id=first.client_id, choice="tie")
    assert Judgment.objects.count() == 1


def test_a_second_change_of_the_same_judgment_is_refused(project, labeler, first):
    _change(project, labeler, first, choice="tie")

    with pytest.raises(Conflict, match="already changed"):
        _change(project, labeler, first, choice="both_bad")

    assert Judgment.objects.filter(supersedes=first).count() == 1


def test_the_database_refuses_a_second_change_that_passed_the_checks(
    project, labeler, first, monkeypatch
):
    """Two requests that both checked before either stored: the unique `supersedes`
    refuses the second (the row lock makes this rare on PostgreSQL; SQLite has none)."""
    _change(project, labeler, first, choice="tie")
    monkeypatch.setattr(changes, "change_refusal", lambda judgment, labeler: None)

    with pytest.raises(Conflict, match="already changed"):
        _change(project, labeler, first, choice="both_bad")

    assert Judgment.objects.count() == 2


def test_someone_elses_judgment_is_refused(project, labeler, first):
    other = make_member(project, Role.LABELER, "other-labeler")

    with pytest.raises(ServiceError, match="only change your own"):
        _change(project, other, first, choice="tie")

    assert Judgment.objects.count() == 1


def test_a_reviewed_judgment_is_refused(project, labeler, first):
    reviewer = make_member(project, Role.RESEARCHER, "reviewer")
    judgment_accept(project=project, judgment_id=first.pk, reviewer=reviewer)

    with pytest.raises(ServiceError, match="reviewer already decided"):
        _change(project, labeler, first, choice="tie")

    assert Judgment.objects.count() == 1


def test_a_judgment_a_reviewer_corrected_is_refused(project, labeler, first):
    reviewer = make_member(project, Role.RESEARCHER, "reviewer")
    flipped = "right" if first.choice == "a" else "left"
    judgment_correct(
        project=project, judgment_id=first.pk, reviewer=reviewer, data={"choice": flipped}
    )

    with pytest.raises(Conflict, match="corrected by a reviewer"):
        _change(project, labeler, first, choice="tie")

    assert Judgment.objects.count() == 2


def test_a_judgment_older_than_the_window_is_refused(project, labeler, first, settings):
    settings.LABEL_CHANGE_WINDOW_HOURS = 24
    Judgment.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(hours=25))

    with pytest.raises(ServiceError, match="changed for 24 hours"):
        _change(project, labeler, first, choice="tie")

    assert Judgment.objects.count() == 1


def test_a_judgment_of_a_deleted_prompt_is_refused(project, labeler, first):
    Prompt.objects.filter(pk=first.prompt_id).update(deleted_at=timezone.now())

    with pytest.raises(ServiceError, match="prompt was deleted"):
        _change(project, labeler, first, choice="tie")

    assert Judgment.objects.count() == 1


def test_a_gold_judgment_is_refused(project, labeler):
    project.gold_rate = 1.0
    project.save(update_fields=["gold_rate"])
    make_kind_task(project, TaskKind.COMPARISON, gold_answer={"choice": "a"})
    gold = _judge_next(project, labeler, choice="left-4")
    assert gold.task.is_gold

    with pytest.raises(ServiceError, match="Gold tasks"):
        _change(project, labeler, gold, choice="tie")

    assert Judgment.objects.count() == 1


@pytest.mark.parametrize(
    "judgment_id, error",
    [("12", ServiceError), (True, ServiceError), (999_999, NotFound)],
)
def test_a_bad_judgment_id_is_refused(project, labeler, first, judgment_id, error):
    with pytest.raises(error):
        judgment_change(
            project=project,
            labeler=labeler,
            judgment_id=judgment_id,
            data={"choice": "tie"},
            client_id=uuid.uuid4(),
        )
    assert Judgment.objects.count() == 1


def test_a_judgment_of_another_project_is_not_found(project, other_project, labeler, first):
    with pytest.raises(NotFound):
        _change(other_project, labeler, first, choice="tie")
    assert Judgment.objects.count() == 1


@pytest.mark.parametrize(
    "data, client_id, time_spent_ms, message",
    [
        ({"choice": "sideways"}, uuid.uuid4(), 0, "choice must be"),
        ({"choice": "left-9"}, uuid.uuid4(), 0, "strength must be"),
        ({"choice": "tie"}, "not-a-uuid", 0, "client_id must be"),
        ({"choice": "tie"}, uuid.uuid4(), -5, "time_spent_ms"),
    ],
)
def test_bad_input_stores_nothing(project, labeler, first, data, client_id, time_spent_ms, message):
    with pytest.raises(ServiceError, match=message):
        judgment_change(
            project=project,
            labeler=labeler,
            judgment_id=first.pk,
            data=data,
            client_id=client_id,
            time_spent_ms=time_spent_ms,
        )
    assert Judgment.objects.count() == 1


def test_a_rating_is_changed_through_its_own_parser(project, labeler):
    project.criteria = ["helpful"]
    project.save(update_fields=["criteria"])
    make_kind_task(project, TaskKind.RATING, responses=1)
    rated = _judge_next(project, labeler, score_helpful="2")

    changed, _ = _change(project, labeler, rated, score_helpful="6", flag=["spam"])

    assert (changed.scores, changed.flags) == ({"helpful": 6}, ["spam"])
    assert changed.rated_response_id == rated.rated_response_id


def test_a_ranking_is_changed_in_shown_terms(project, labeler):
    make_kind_task(project, TaskKind.RANKING, responses=3)
    ranked = _judge_next(project, labeler, all_bad="true")
    best_first = list(reversed(ranked.shown_order))

    changed, _ = _change(project, labeler, ranked, ranking=best_first)

    assert (changed.ranking, changed.all_bad) == (best_first, False)


def test_the_form_is_prefilled_in_the_order_it_was_shown(project, labeler, first):
    side = "left" if first.response_a_id == first.shown_order[0] else "right"
    if first.choice == "b":
        side = "right" if side == "left" else "left"

    assert answer_as_shown(first)["choice"] == f"{side}-4"


# --- pages and API ------------------------------------------------------------------------


def test_the_change_page_shows_the_task_with_the_answer_marked(client, project, labeler, first):
    client.force_login(labeler)

    page = client.get(reverse("label_change", args=[project.slug, first.pk]))

    assert page.status_code == 200
    html = page.content.decode()
    assert 'value="left-4" aria-pressed="true"' in html
    assert html.count('aria-pressed="true" data-key') == 1
    assert "Paris." in html and "Lyon." in html


def test_posting_the_change_page_stores_the_change(client, project, labeler, first):
    client.force_login(labeler)

    reply = client.post(
        reverse("label_change", args=[project.slug, first.pk]),
        {"choice": "tie", "client_id": str(uuid.uuid4())},
    )

    assert reply.status_code == 302
    assert reply.url == reverse("label", args=[project.slug])
    assert Judgment.objects.get(supersedes=first).choice == "tie"


def test_a_bad_post_to_the_change_page_says_why_and_stores_nothing(client, project, labeler, first):
    client.force_login(labeler)

    reply = client.post(
        reverse("label_change", args=[project.slug, first.pk]),
        {"choice": "sideways", "client_id": str(uuid.uuid4())},
    )

    assert reply.status_code == 400
    assert "Not saved: choice must be one of" in reply.content.decode()
    assert Judgment.objects.count() == 1


def test_the_change_page_of_a_changed_judgment_says_so(client, project, labeler, first):
    _change(project, labeler, first, choice="tie")
    client.force_login(labeler)

    page = client.get(reverse("label_change", args=[project.slug, first.pk]))
    posted = client.post(
        reverse("label_change", args=[project.slug, first.pk]),
        {"choice": "both_bad", "client_id": str(uuid.uuid4())},
    )

    assert "already changed" in page.content.decode()
    assert 'name="choice"' not in page.content.decode()
    assert posted.status_code == 409
    assert Judgment.objects.count() == 2


def test_the_change_page_of_someone_elses_judgment_is_not_found(client, project, first):
    other = make_member(project, Role.LABELER, "other-labeler")
    client.force_login(other)

    page = client.get(reverse("label_change", args=[project.slug, first.pk]))

    assert page.status_code == 404


def test_the_label_page_lists_recent_judgments_to_go_back_to(client, project, labeler, first):
    client.force_login(labeler)

    page = client.get(reverse("label", args=[project.slug])).content.decode()
    strip = client.get(reverse("label_recent", args=[project.slug])).content.decode()

    link = reverse("label_change", args=[project.slug, first.pk])
    assert f'href="{link}"' in page
    assert f'href="{link}"' in strip and 'data-key="["' in strip


def test_my_work_links_to_changing_a_judgment(client, project, labeler, first):
    client.force_login(labeler)

    page = client.get(reverse("my_work", args=[project.slug])).content.decode()

    assert reverse("label_change", args=[project.slug, first.pk]) in page


def test_the_api_changes_a_judgment_once_per_client_id(client, project, labeler, first):
    client.force_login(labeler)
    url = reverse("api_judgment_change", args=[project.slug, first.pk])
    body = {"choice": "tie", "client_id": str(uuid.uuid4()), "time_spent_ms": 900}

    created = client.post(url, body, content_type="application/json")
    again = client.post(url, body, content_type="application/json")

    assert (created.status_code, again.status_code) == (201, 200)
    assert created.json()["supersedes"] == first.pk
    assert created.json()["choice"] == "tie"
    assert again.json()["id"] == created.json()["id"]


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"choice": "sideways"}, 400, "choice must be"),
        ({"choice": "tie", "client_id": "nope"}, 400, "client_id"),
    ],
)
def test_the_api_refuses_bad_input_with_a_clear_message(
    client, project, labeler, first, body, status, message
):
    client.force_login(labeler)
    body = {"client_id": str(uuid.uuid4()), **body}

    reply = client.post(
        reverse("api_judgment_change", args=[project.slug, first.pk]),
        body,
        content_type="application/json",
    )

    assert reply.status_code == status
    assert message in reply.content.decode()
    assert Judgment.objects.count() == 1


def test_the_api_refuses_a_second_change_with_409(client, project, labeler, first):
    _change(project, labeler, first, choice="tie")
    client.force_login(labeler)

    reply = client.post(
        reverse("api_judgment_change", args=[project.slug, first.pk]),
        {"choice": "both_bad", "client_id": str(uuid.uuid4())},
        content_type="application/json",
    )

    assert reply.status_code == 409
    assert "already changed" in reply.json()["detail"]


def test_a_change_counts_as_the_same_item_judged(project, labeler, first):
    _change(project, labeler, first, choice="tie")

    progress = labeler_progress(project=project, labeler=labeler)
    work = my_work(project=project, labeler=labeler)

    assert progress["judged"] == 1
    assert (work["judged"], work["by_kind"]) == (1, [("comparison", 1)])
