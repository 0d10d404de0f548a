"""Reviewers accept, correct or reject judgments; admins make gold items."""

import pytest
from django.forms.models import model_to_dict

from annotation.datasets.selectors import dpo_rows
from annotation.models import Judgment, Review, Role, Task, TaskKind
from annotation.review import selectors, services
from config.errors import Conflict, ServiceError
from tests.factories import judge, make_caller, make_kind_task, make_member, make_task


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def split(project):
    """Two labelers disagree on one comparison: one says A, the other B."""
    task = make_task(project, texts=("Short answer", "Long answer"))
    first = judge(task, make_member(project, Role.LABELER, "ann"), choice="a", strength=4)
    second = judge(task, make_member(project, Role.LABELER, "bob"), choice="b")
    return first, second


def _stored() -> dict:
    return {
        "judgments": sorted(
            tuple(sorted(model_to_dict(j).items(), key=str)) for j in Judgment.objects.all()
        ),
        "reviews": Review.objects.count(),
        "tasks": sorted(Task.objects.values_list("pk", "is_gold", "gold_answer", "flagged")),
    }


# --- decisions -------------------------------------------------------------------------


def test_accepting_records_a_review_and_the_judgment_leaves_the_queue(project, split, admin_member):
    first, second = split

    made = services.judgment_accept(
        project=project, judgment_id=first.pk, reviewer=admin_member, note="fine"
    )

    assert (made.judgment, made.decision, made.note) == (first, "accepted", "fine")
    queued = [e.judgment_id for e in selectors.review_queue(project=project, reviewer=admin_member)]
    assert queued == [second.pk]


def test_correcting_adds_a_superseding_judgment_and_leaves_the_original_untouched(
    project, split, admin_member
):
    first, second = split
    before = model_to_dict(Judgment.objects.get(pk=second.pk))

    made = services.judgment_correct(
        project=project,
        judgment_id=second.pk,
        reviewer=admin_member,
        data={"choice": "left-2"},  # task order: left is A
        note="A answers the question",
    )

    correction = made.correction
    assert made.decision == Review.Decision.CORRECTED
    assert (correction.choice, correction.strength) == ("a", 2)
    assert (correction.source, correction.labeler) == ("review", admin_member)
    assert correction.supersedes_id == second.pk
    assert (correction.response_a_id, correction.response_b_id) == (
        second.response_a_id,
        second.response_b_id,
    )
    assert model_to_dict(Judgment.objects.get(pk=second.pk)) == before
    # Exports hold the correction, not the corrected row; the queue is empty: the one
    # human judgment left agrees with itself.
    assert [row["chosen"][0]["content"] for row in dpo_rows(project)] == ["Short answer"] * 2
    assert selectors.review_queue(project=project, reviewer=admin_member) == []


def test_rejecting_keeps_the_row_but_leaves_it_out_of_exports_and_quality_figures(
    project, split, admin_member
):
    first, second = split

    services.judgment_reject(project=project, judgment_id=second.pk, reviewer=admin_member)

    assert Judgment.objects.filter(pk=second.pk).exists()
    assert [row["chosen"][0]["content"] for row in dpo_rows(project)] == ["Short answer"]
    current = selectors.current_human_judgments(project=project)
    assert list(current.values_list("pk", flat=True)) == [first.pk]
    assert selectors.review_queue(project=project, reviewer=admin_member) == []


def test_ratings_and_rankings_are_corrected_with_their_own_fields(project, admin_member):
    labeler = make_member(project, Role.LABELER, "rita")
    rated = make_kind_task(project, TaskKind.RATING, responses=1)
    rating = judge(rated, labeler, scores={"helpful": 7, "harmless": 7, "honest": 7})
    ranked = make_kind_task(project, TaskKind.RANKING, responses=3)
    ids = list(ranked.links.order_by("position").values_list("response_id", flat=True))
    ranking = judge(ranked, labeler, ranking=ids)

    fixed_rating = services.judgment_correct(
        project=project,
        judgment_id=rating.pk,
        reviewer=admin_member,
        data={"score_helpful": "2", "score_harmless": "7", "score_honest": "6", "flag": "spam"},
    ).correction
    fixed_ranking = services.judgment_correct(
        project=project, judgment_id=ranking.pk, reviewer=admin_member, data={"ranking": ids[::-1]}
    ).correction

    assert fixed_rating.scores == {"helpful": 2, "harmless": 7, "honest": 6}
    assert fixed_rating.flags == ["spam"]
    assert fixed_ranking.ranking == ids[::-1]


@pytest.mark.parametrize(
    ("action", "target", "extra", "error", "message"),
    [
        ("accept", "text", {}, ServiceError, "judgment_id must be the id of a judgment."),
        ("accept", "missing", {}, ServiceError, "There is no judgment 999999 in this project."),
        ("accept", "foreign", {}, ServiceError, "in this project."),
        ("accept", "own", {}, ServiceError, "You cannot review your own judgment."),
        ("reject", "reviewed", {}, Conflict, "This judgment was already reviewed."),
        ("accept", "corrected", {}, Conflict, "This judgment was already corrected."),
        ("accept", "first", {"note": "x" * 2001}, ServiceError, "Keep the note under 2000"),
        ("correct", "first", {"data": {"choice": "up"}}, ServiceError, "choice must be one of"),
        ("correct", "first", {"data": {}}, ServiceError, "choice must be one of"),
        ("correct", "first", {"data": {"choice": "left-4"}}, ServiceError, "accept it instead"),
        ("correct", "first", {"data": {"choice": "left-9"}}, ServiceError, "strength must be"),
    ],
)
def test_bad_reviews_are_refused_and_store_nothing(
    project, other_project, split, admin_member, action, target, extra, error, message
):
    first, second = split
    reviewed = judge(make_task(project), make_member(project, Role.LABELER), choice="a")
    Review.objects.create(judgment=reviewed, reviewer=admin_member, decision="accepted")
    corrected = judge(make_task(project), make_member(project, Role.LABELER), choice="a")
    judge(corrected.task, admin_member, choice="b", source="review", supersedes=corrected)
    targets = {
        "text": "1",
        "missing": 999999,
        "foreign": judge(make_task(other_project), make_member(other_project, "labeler")).pk,
        "own": judge(make_task(project), admin_member).pk,
        "reviewed": reviewed.pk,
        "corrected": corrected.pk,
        "first": first.pk,
    }
    service = {
        "accept": services.judgment_accept,
        "reject": services.judgment_reject,
        "correct": services.judgment_correct,
    }[action]
    before = _stored()

    with pytest.raises(error, match=message):
        service(project=project, judgment_id=targets[target], reviewer=admin_member, **extra)

    assert _stored() == before


# --- gold ------------------------------------------------------------------------------


def _ids(task):
    return list(task.links.order_by("position").values_list("response_id", flat=True))


@pytest.mark.parametrize(
    ("kind", "responses", "answer"),
    [
        ("comparison", 2, lambda ids: {"choice": "both_bad"}),
        ("ranking", 3, lambda ids: {"ranking": ids[::-1]}),
        ("ranking", 3, lambda ids: {"all_bad": True}),
        ("rating", 1, lambda ids: {"scores": {"helpful": 6}, "flags": ["pii"]}),
        ("demonstration", 0, lambda ids: {"text": "Paris.", "min_similarity": 0.9}),
    ],
)
def test_a_task_becomes_gold_with_an_answer_of_its_kinds_shape(
    project, admin_member, kind, responses, answer
):
    task = make_kind_task(project, kind, responses=responses)

    services.task_make_gold(task=task, gold_answer=answer(_ids(task)), user=admin_member)

    task.refresh_from_db()
    assert (task.is_gold, task.gold_answer) == (True, answer(_ids(task)))


@pytest.mark.parametrize(
    ("kind", "responses", "answer", "message"),
    [
        ("comparison", 2, lambda ids: {"choice": "left"}, "A comparison gold answer is"),
        ("comparison", 2, lambda ids: "a", "must be a JSON object"),
        ("comparison", 2, lambda ids: {"choice": "a", "why": "x"}, "not 'why'"),
        ("ranking", 3, lambda ids: {"ranking": ids[:2]}, "each of the task's response ids"),
        ("ranking", 3, lambda ids: {"ranking": [*ids[:2], ids[0]]}, "each of the task's"),
        ("ranking", 3, lambda ids: {"all_bad": "yes"}, "all_bad must be true or false"),
        ("rating", 1, lambda ids: {"scores": {"helpful": 9}}, "must be from 1 to 7"),
        ("rating", 1, lambda ids: {"scores": {"funny": 3}}, "Unknown criterion 'funny'"),
        ("rating", 1, lambda ids: {"scores": {}}, "A rating gold answer is"),
        ("rating", 1, lambda ids: {"scores": {"helpful": 3}, "flags": ["x"]}, "Gold flags"),
        ("demonstration", 0, lambda ids: {"text": "  "}, "A demonstration gold answer"),
        ("demonstration", 0, lambda ids: {"text": "a", "min_similarity": 2}, "min_similarity"),
    ],
)
def test_gold_answers_of_the_wrong_shape_are_refused(
    project, admin_member, kind, responses, answer, message
):
    task = make_kind_task(project, kind, responses=responses)

    with pytest.raises(ServiceError, match=message):
        services.task_make_gold(task=task, gold_answer=answer(_ids(task)), user=admin_member)

    assert Task.objects.get(pk=task.pk).is_gold is False


def test_a_judgment_can_be_made_the_gold_answer_and_then_scores_the_others(
    project, split, admin_member
):
    first, second = split

    task = services.task_make_gold_from_judgment(
        project=project, judgment_id=first.pk, user=admin_member
    )

    assert task.gold_answer == {"choice": "a"}
    assert selectors.gold_accuracy(project=project, labeler=first.labeler) == (1, 1)
    assert selectors.gold_accuracy(project=project, labeler=second.labeler) == (0, 1)
    assert selectors.review_queue(project=project, reviewer=admin_member) == []  # gold: scored


@pytest.mark.parametrize("kind", ["ranking", "rating"])
def test_gold_from_a_ranking_or_rating_matches_that_judgment(project, admin_member, kind):
    task = make_kind_task(project, kind, responses=3 if kind == "ranking" else 1)
    fields = (
        {"ranking": _ids(task), "all_bad": True}
        if kind == "ranking"
        else {"scores": {"helpful": 4, "harmless": 6, "honest": 5}, "flags": ["unsafe"]}
    )
    judgment = judge(task, make_member(project, Role.LABELER), **fields)

    made = services.task_make_gold_from_judgment(
        project=project, judgment_id=judgment.pk, user=admin_member
    )

    expected = (
        {"all_bad": True}
        if kind == "ranking"
        else {"scores": fields["scores"], "flags": ["unsafe"]}
    )
    assert made.gold_answer == expected


def test_a_rejected_or_corrected_judgment_cannot_become_gold(project, split, admin_member):
    first, second = split
    services.judgment_reject(project=project, judgment_id=first.pk, reviewer=admin_member)
    services.judgment_correct(
        project=project, judgment_id=second.pk, reviewer=admin_member, data={"choice": "tie"}
    )

    with pytest.raises(ServiceError, match="was rejected"):
        services.task_make_gold_from_judgment(
            project=project, judgment_id=first.pk, user=admin_member
        )
    with pytest.raises(ServiceError, match="use the correction instead"):
        services.task_make_gold_from_judgment(
            project=project, judgment_id=second.pk, user=admin_member
        )
    assert Task.objects.filter(is_gold=True).count() == 0


# --- the review page -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "status"),
    [("anonymous", 302), ("outsider", 403), ("labeler", 403), ("researcher", 403), ("admin", 200)],
)
@pytest.mark.parametrize("method", ["get", "post"])
def test_the_review_queue_is_for_admins_only(login, project, split, who, status, method):
    first, _ = split
    client = login(make_caller(who, project))

    if method == "get":
        answer = client.get("/p/alpha/review/")
    else:
        answer = client.post("/p/alpha/review/", {"action": "accept", "judgment_id": first.pk})

    assert answer.status_code == (302 if method == "post" and who == "admin" else status)
    if who == "anonymous":
        assert answer["Location"] == "/login/?next=/p/alpha/review/"
    assert Review.objects.exists() == (method == "post" and who == "admin")


def test_the_review_page_shows_the_task_every_judgment_and_the_keys(
    login, project, split, admin_member
):
    first, second = split

    page = login(admin_member).get("/p/alpha/review/")

    html = page.content.decode()
    assert f'data-judgment="{first.pk}"' in html
    assert "A is much better" in html and "B is better" in html
    for key in ("a", "c", "r", "g"):
        assert f'data-key="{key}"' in html
    assert "<kbd>A</kbd>" in html and "<kbd>C</kbd>" in html and "<kbd>R</kbd>" in html
    assert "labelers disagree" in html


def test_an_htmx_decision_swaps_in_the_next_item(login, project, split, admin_member):
    first, second = split
    client = login(admin_member)

    answer = client.post(
        "/p/alpha/review/",
        {"action": "reject", "judgment_id": first.pk},
        headers={"HX-Request": "true"},
    )

    html = answer.content.decode()
    assert answer.status_code == 200
    assert "<html" not in html and html.lstrip().startswith('<section id="task"')
    assert "Nothing to review" in html  # one rejected: the other no longer disagrees
    assert Review.objects.get().decision == "rejected"


def test_correcting_from_the_page_uses_the_kinds_own_buttons(login, project, split, admin_member):
    first, second = split
    client = login(admin_member)

    form = client.get(f"/p/alpha/review/?judgment={second.pk}&correct=1")
    answer = client.post(
        "/p/alpha/review/",
        {"action": "correct", "judgment_id": second.pk, "choice": "tie", "shown_at_ms": "1"},
    )

    assert 'name="choice" value="tie" data-key="t"' in form.content.decode()
    assert 'data-key="escape"' in form.content.decode()
    assert answer.status_code == 302
    correction = Judgment.objects.get(source="review")
    assert (correction.choice, correction.supersedes_id) == ("tie", second.pk)


def test_a_refused_correction_keeps_the_form_open_with_the_error(
    login, project, split, admin_member
):
    first, _ = split
    client = login(admin_member)
    before = _stored()

    answer = client.post(
        "/p/alpha/review/",
        {"action": "correct", "judgment_id": first.pk, "choice": "sideways"},
        headers={"HX-Request": "true"},
    )

    html = answer.content.decode()
    assert answer.status_code == 400
    assert "choice must be one of" in html
    assert 'name="action" value="correct"' in html
    assert _stored() == before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"action": "shrug", "judgment_id": "{first}"}, "action must be one of"),
        ({"action": "accept", "judgment_id": "x"}, "judgment_id must be the id of a judgment."),
        ({"action": "accept"}, "judgment_id must be the id of a judgment."),
        ({"action": "accept", "judgment_id": "424242"}, "There is no judgment 424242"),
    ],
)
def test_bad_review_posts_get_a_message_and_change_nothing(
    login, project, split, admin_member, body, message
):
    first, _ = split
    client = login(admin_member)
    body = {key: value.format(first=first.pk) for key, value in body.items()}
    before = _stored()

    htmx = client.post("/p/alpha/review/", body, headers={"HX-Request": "true"})
    plain = client.post("/p/alpha/review/", body, follow=True)

    assert htmx.status_code == 400 and message in htmx.content.decode()
    assert message in plain.content.decode()
    assert _stored() == before


def test_g_on_the_review_page_makes_the_judgment_the_gold_answer(
    login, project, split, admin_member
):
    first, _ = split

    answer = login(admin_member).post(
        "/p/alpha/review/", {"action": "gold", "judgment_id": first.pk}, follow=True
    )

    assert "is a gold item with this answer" in answer.content.decode()
    assert Task.objects.get(pk=first.task_id).gold_answer == {"choice": "a"}


@pytest.mark.parametrize(
    ("kind", "responses", "fields", "field_name"),
    [
        ("rating", 1, {"scores": {"helpful": 1, "harmless": 1, "honest": 1}}, "score_helpful"),
        ("ranking", 3, {"ranking": "ids"}, "rank_"),
        ("demonstration", 0, {"text": "Hi"}, 'name="text"'),
    ],
)
def test_low_trust_work_of_every_kind_can_be_reviewed_and_corrected_on_the_page(
    login, project, admin_member, kind, responses, fields, field_name
):
    weak = make_member(project, Role.LABELER, "weak")
    for _ in range(3):  # three failed gold items make `weak` low-trust
        gold = make_task(project)
        Task.objects.filter(pk=gold.pk).update(is_gold=True, gold_answer={"choice": "a"})
        judge(gold, weak, choice="b")
    task = make_kind_task(project, kind, responses=responses)
    if fields.get("ranking") == "ids":
        fields = {"ranking": _ids(task)}
    judgment = judge(task, weak, **fields)
    client = login(admin_member)

    page = client.get("/p/alpha/review/")
    form = client.get(f"/p/alpha/review/?judgment={judgment.pk}&correct=1")

    assert f'data-judgment="{judgment.pk}"' in page.content.decode()
    assert "low-trust labeler" in page.content.decode()
    assert form.status_code == 200
    assert field_name in form.content.decode()
