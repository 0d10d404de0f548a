"""Quality figures: agreement, gold accuracy, time per item, trends, the review queue and
the admin's quality page."""

import uuid
from datetime import date, datetime, timedelta

import krippendorff
import numpy as np
import pytest
from django.utils import timezone

from annotation.labeling.services import (
    assignment_next,
    assignment_skip,
    comparison_submit,
)
from annotation.models import Judgment, Review, Role, Task, TaskKind
from annotation.review import agreement_math, selectors
from tests.factories import (
    judge,
    make_caller,
    make_kind_task,
    make_member,
    make_project,
    make_task,
    make_user,
)


def _package_alpha(coders: list[list], level: str) -> float:
    data = [[np.nan if v is None else v for v in row] for row in coders]
    return krippendorff.alpha(reliability_data=data, level_of_measurement=level)


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# --- figures of time and trend ---------------------------------------------------------


def test_median_seconds_leaves_out_judgments_without_a_time():
    assert selectors.median_seconds([0, 1000, 3000, 2000, 0]) == 2.0
    assert selectors.median_seconds([0, 0]) is None


def test_streak_counts_days_in_a_row_up_to_today_or_yesterday():
    today = date(2026, 3, 10)
    days = {today, date(2026, 3, 9), date(2026, 3, 8), date(2026, 3, 6)}

    assert selectors.streak_days(days, today=today) == 3
    assert selectors.streak_days(days - {today}, today=today) == 2
    assert selectors.streak_days({date(2026, 3, 8)}, today=today) == 0
    assert selectors.streak_days(set(), today=today) == 0


def test_periods_are_iso_weeks_or_days():
    assert selectors.period_of(date(2026, 1, 1), daily=False) == ("2026-W01", date(2025, 12, 29))
    assert selectors.period_of(date(2026, 1, 1), daily=True) == ("2026-01-01", date(2026, 1, 1))


# --- figures from the database ---------------------------------------------------------


@pytest.fixture
def crew(project):
    return [make_member(project, Role.LABELER, f"crew{i}") for i in range(3)]


def test_project_agreement_per_kind_uses_current_human_judgments_only(project, crew, admin_member):
    # Comparisons: three labelers on four tasks (coder-major, as in test_agreement_math.py).
    choices = [["a", "a", "b", "tie"], ["a", "b", "b", "tie"], ["a", "a", "b", None]]
    tasks = [make_task(project) for _ in range(4)]
    for labeler, row in zip(crew, choices, strict=True):
        for task, choice in zip(tasks, row, strict=True):
            if choice:
                judge(task, labeler, choice=choice)
    # None of these count: an AI judgment, a corrected one (its correction is by a
    # reviewer) and a rejected one.
    judge(tasks[3], None, choice="both_bad", source=Judgment.Source.AI)
    corrected = judge(tasks[0], make_member(project, Role.LABELER), choice="b")
    judge(tasks[0], admin_member, choice="a", source="review", supersedes=corrected)
    rejected = judge(tasks[1], make_member(project, Role.LABELER), choice="both_bad")
    Review.objects.create(judgment=rejected, reviewer=admin_member, decision="rejected")
    # Ratings on two criteria, rankings of three responses.
    rated = [make_kind_task(project, TaskKind.RATING, responses=1) for _ in range(2)]
    for labeler, scores in zip(crew, [(7, 5), (6, 5), (2, 4)], strict=True):
        judge(rated[0], labeler, scores={"helpful": scores[0], "honest": scores[1]})
        judge(rated[1], labeler, scores={"helpful": scores[0] - 1, "honest": scores[1]})
    ranked = make_kind_task(project, TaskKind.RANKING, responses=3)
    ids = list(ranked.links.order_by("position").values_list("response_id", flat=True))
    judge(ranked, crew[0], ranking=ids)
    judge(ranked, crew[1], ranking=ids[::-1])

    lines = {(line["kind"], line["criterion"]): line for line in selectors.project_agreement(
        project=project
    )}  # fmt: skip

    comparison = lines[("comparison", "")]
    numeric = {"a": 1, "b": 2, "tie": 3}
    coders = [[numeric.get(c) for c in row] for row in choices]
    assert comparison["value"] == pytest.approx(_package_alpha(coders, "nominal"))
    assert comparison["units"] == 4
    helpful = [[7, 6], [6, 5], [2, 1]]
    assert lines[("rating", "helpful")]["value"] == pytest.approx(
        _package_alpha(helpful, "interval")
    )
    assert lines[("rating", "honest")]["value"] == pytest.approx(
        _package_alpha([[5, 5], [5, 5], [4, 4]], "interval")
    )
    assert lines[("ranking", "")]["value"] == -1.0


def test_gold_accuracy_scores_judgments_made_through_the_queue(db):
    project = make_project("golden")
    project.gold_rate = 1.0
    project.save(update_fields=["gold_rate"])
    labeler = make_member(project, Role.LABELER, "gilda")
    for answer in ("a", "b", "tie"):
        task = make_task(project)
        Task.objects.filter(pk=task.pk).update(is_gold=True, gold_answer={"choice": answer})
    for side in ("left", "left", "tie"):
        assignment = assignment_next(project=project, labeler=labeler)
        assert assignment.task.is_gold
        comparison_submit(
            project=project,
            labeler=labeler,
            assignment_id=assignment.pk,
            side=side,
            client_id=uuid.uuid4(),
        )
    expected = 0
    for judgment in Judgment.objects.filter(labeler=labeler):
        expected += judgment.choice == judgment.task.gold_answer["choice"]

    assert selectors.gold_accuracy(project=project, labeler=labeler) == (expected, 3)


def test_low_trust_needs_enough_gold_judgments_below_the_threshold(project, crew):
    gold = [make_task(project) for _ in range(4)]
    for task in gold:
        Task.objects.filter(pk=task.pk).update(is_gold=True, gold_answer={"choice": "a"})
    for task, choice in zip(gold, ["b", "b", "a"], strict=False):
        judge(task, crew[0], choice=choice)  # 1 of 3 right: low trust
    judge(gold[0], crew[1], choice="b")  # 0 of 1: too few to tell
    for task in gold:
        judge(task, crew[2], choice="a" if task != gold[0] else "b")  # 3 of 4 = 0.75

    assert selectors.low_trust_labeler_ids(project=project) == {crew[0].pk}


def test_labeler_table_has_counts_gold_agreement_time_skips_and_a_daily_trend(project, crew):
    now = timezone.now()
    tasks = [make_task(project) for _ in range(3)]
    gold = make_task(project)
    Task.objects.filter(pk=gold.pk).update(is_gold=True, gold_answer={"choice": "a"})
    judge(tasks[0], crew[0], choice="a", ms=2000, at=now - timedelta(days=1))
    judge(tasks[1], crew[0], choice="b", ms=4000)
    judge(gold, crew[0], choice="a", ms=0)
    judge(tasks[0], crew[1], choice="a", ms=1000)
    judge(tasks[1], crew[1], choice="a", ms=1000)
    skipped = assignment_next(project=project, labeler=crew[2])
    assignment_skip(project=project, labeler=crew[2], assignment_id=skipped.pk, reason="Other")

    figures = selectors.labeler_quality(project=project)

    rows = {row["labeler"].username: row for row in figures["labelers"]}
    first = rows["crew0"]
    assert (first["judgments"], first["gold_correct"], first["gold_judged"]) == (3, 1, 1)
    assert first["median_seconds"] == 3.0
    assert first["agreement"]["comparison"] == pytest.approx(
        agreement_math.labeler_alpha(
            {tasks[0].pk: {1: "a", 2: "a"}, tasks[1].pk: {1: "b", 2: "a"}}, coder=1
        )
    )
    assert rows["crew2"]["skips"] == 1 and rows["crew2"]["judgments"] == 0
    assert figures["daily"] is True
    assert [p["judgments"] for p in first["trend"]] == [1, 2]
    assert (
        first["trend"][0]["period"]
        == timezone.localtime(now - timedelta(days=1)).date().isoformat()
    )
    assert first["sparkline"]


def test_trends_are_weekly_when_judgments_span_two_weeks_or_more(project, crew):
    start = timezone.make_aware(datetime(2026, 3, 2, 12))  # a Monday
    judge(make_task(project), crew[0], at=start)
    judge(make_task(project), crew[0], at=start + timedelta(days=3))
    judge(make_task(project), crew[0], at=start + timedelta(days=15))

    figures = selectors.labeler_quality(project=project)

    assert figures["daily"] is False
    assert figures["periods"] == ["2026-W10", "2026-W12"]
    assert [p["judgments"] for p in figures["labelers"][0]["trend"]] == [2, 1]


# --- review queue ----------------------------------------------------------------------


def test_review_queue_holds_disagreements_and_low_trust_labelers(project, crew, admin_member):
    agreed, split, single = make_task(project), make_task(project), make_task(project)
    judge(agreed, crew[0], choice="a")
    judge(agreed, crew[1], choice="a")
    first = judge(split, crew[0], choice="a")
    second = judge(split, crew[1], choice="tie")
    mine = judge(split, admin_member, choice="b")  # the reviewer's own: not for them
    alone = judge(single, crew[2], choice="a")
    for _ in range(3):  # crew2 fails three gold items
        gold = make_task(project)
        Task.objects.filter(pk=gold.pk).update(is_gold=True, gold_answer={"choice": "a"})
        judge(gold, crew[2], choice="b")

    queue = selectors.review_queue(project=project, reviewer=admin_member)

    assert [(e.judgment_id, e.reasons) for e in queue] == [
        (first.pk, ("labelers disagree",)),
        (second.pk, ("labelers disagree",)),
        (alone.pk, ("low-trust labeler",)),
    ]
    assert mine.pk not in {e.judgment_id for e in selectors.review_queue(
        project=project, reviewer=admin_member
    )}  # fmt: skip


def test_ratings_and_rankings_disagree_beyond_their_tolerance(project, crew):
    close = make_kind_task(project, TaskKind.RATING, responses=1)
    judge(close, crew[0], scores={"helpful": 5})
    judge(close, crew[1], scores={"helpful": 6})
    far = make_kind_task(project, TaskKind.RATING, responses=1)
    judge(far, crew[0], scores={"helpful": 5})
    judge(far, crew[1], scores={"helpful": 3})
    swapped = make_kind_task(project, TaskKind.RANKING, responses=4)
    ids = list(swapped.links.order_by("position").values_list("response_id", flat=True))
    judge(swapped, crew[0], ranking=ids)
    judge(swapped, crew[1], ranking=[ids[1], ids[0], *ids[2:]])  # tau 0.67
    reversed_ = make_kind_task(project, TaskKind.RANKING, responses=4)
    ids = list(reversed_.links.order_by("position").values_list("response_id", flat=True))
    judge(reversed_, crew[0], ranking=ids)
    judge(reversed_, crew[1], ranking=ids[::-1])
    reviewer = make_user("rev")

    queued = {e.task_id for e in selectors.review_queue(project=project, reviewer=reviewer)}

    assert queued == {far.pk, reversed_.pk}


# --- the quality page ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "status"),
    [("anonymous", 302), ("outsider", 403), ("labeler", 403), ("researcher", 403), ("admin", 200)],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/p/alpha/quality/"),
        ("post", "/p/alpha/quality/gold/{task}/"),
        ("post", "/p/alpha/quality/tasks/{task}/return/"),
    ],
)
def test_quality_actions_are_for_admins_only(login, project, who, status, method, path):
    task = make_task(project)
    Task.objects.filter(pk=task.pk).update(flagged=True, skip_count=3)
    client = login(make_caller(who, project))
    url = path.format(task=task.pk)
    body = {"choice": "a"}

    answer = client.get(url) if method == "get" else client.post(url, body)

    expected = 302 if method == "post" and who == "admin" else status
    if method == "get" and who == "researcher":
        expected = 200  # researchers browse agreement; gold answers and actions stay hidden
    assert answer.status_code == expected
    if who == "anonymous":
        assert answer["Location"] == f"/login/?next={url}"
    task.refresh_from_db()
    changed = not task.flagged or task.is_gold
    assert changed == (who == "admin" and method == "post")


def test_quality_page_shows_labelers_agreement_and_flagged_tasks_with_reasons(
    login, project, crew, admin_member
):
    tasks = [make_task(project) for _ in range(2)]
    judge(tasks[0], crew[0], choice="a", ms=1500)
    judge(tasks[0], crew[1], choice="b", ms=2500)
    project.skip_flag_threshold = 1
    project.save(update_fields=["skip_flag_threshold"])
    skipped = assignment_next(project=project, labeler=crew[2])
    assignment_skip(
        project=project, labeler=crew[2], assignment_id=skipped.pk, reason="<b>Needs a lawyer</b>"
    )

    page = login(admin_member).get("/p/alpha/quality/")

    html = page.content.decode()
    assert page.status_code == 200
    assert 'data-labeler="crew0"' in html and 'data-labeler="crew1"' in html
    assert "Krippendorff" in html
    assert "&lt;b&gt;Needs a lawyer&lt;/b&gt;" in html  # escaped, never run
    assert f"/p/alpha/quality/tasks/{skipped.task_id}/return/" in html


def test_returning_a_flagged_task_puts_it_back_in_the_pool(login, project, admin_member):
    task = make_task(project)
    Task.objects.filter(pk=task.pk).update(flagged=True, skip_count=3)
    newcomer = make_member(project, Role.LABELER, "newcomer")
    assert assignment_next(project=project, labeler=newcomer) is None

    answer = login(admin_member).post(f"/p/alpha/quality/tasks/{task.pk}/return/")

    assert answer.status_code == 302
    task.refresh_from_db()
    assert (task.flagged, task.skip_count) == (False, 0)
    assert assignment_next(project=project, labeler=newcomer).task == task


def test_returning_a_task_that_is_not_flagged_or_not_in_the_project_changes_nothing(
    login, project, other_project, admin_member
):
    task = make_task(project)
    elsewhere = make_task(other_project)
    Task.objects.filter(pk=elsewhere.pk).update(flagged=True)
    client = login(admin_member)

    not_flagged = client.post(f"/p/alpha/quality/tasks/{task.pk}/return/", follow=True)
    foreign = client.post(f"/p/alpha/quality/tasks/{elsewhere.pk}/return/", follow=True)

    assert "This task is not flagged." in not_flagged.content.decode()
    assert f"There is no task {elsewhere.pk} in this project." in foreign.content.decode()
    assert Task.objects.get(pk=elsewhere.pk).flagged is True


def test_the_gold_form_makes_a_task_gold(login, project, admin_member):
    task = make_task(project)
    client = login(admin_member)

    opened = client.post("/p/alpha/quality/gold/", {"task_id": task.pk})
    form = client.get(opened["Location"]).content.decode()
    answer = client.post(opened["Location"], {"choice": "tie"})

    assert opened["Location"] == f"/p/alpha/quality/gold/{task.pk}/"
    assert 'name="choice" value="tie"' in form and "Answer one" in form and "Answer two" in form
    assert answer.status_code == 302
    task.refresh_from_db()
    assert (task.is_gold, task.gold_answer) == (True, {"choice": "tie"})


@pytest.mark.parametrize(
    ("task_id", "message"),
    [
        ("nine", "Give the id of a task of this project."),
        ("other", "Give the id of a task of this project."),
        ("none", "Give the id of a task of this project."),
    ],
)
def test_the_gold_task_id_is_refused_when_not_a_task_of_the_project(
    login, project, other_project, admin_member, task_id, message
):
    ids = {"other": make_task(other_project).pk, "nine": "9x", "none": ""}

    answer = login(admin_member).post("/p/alpha/quality/gold/", {"task_id": ids[task_id]})

    assert answer.status_code == 400
    assert message in answer.content.decode()
    assert not Task.objects.filter(is_gold=True).exists()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Choose A, B, tie or both bad."),
        ({"choice": "left"}, "Choose A, B, tie or both bad."),
        ({"gold_answer": '{"choice": "a"}'}, "Choose A, B, tie or both bad."),
    ],
)
def test_the_gold_form_refuses_bad_input_and_stores_nothing(
    login, project, admin_member, body, message
):
    task = make_task(project)

    answer = login(admin_member).post(f"/p/alpha/quality/gold/{task.pk}/", body)

    assert answer.status_code == 400
    assert message in answer.content.decode()
    assert not Task.objects.filter(is_gold=True).exists()


def test_the_quality_page_works_with_no_data_and_refuses_other_methods(
    login, project, admin_member
):
    client = login(admin_member)

    empty = client.get("/p/alpha/quality/")
    wrong_method = client.post("/p/alpha/quality/")
    unknown = client.get("/p/nope/quality/")

    assert empty.status_code == 200 and "No one has labeled yet." in empty.content.decode()
    assert wrong_method.status_code == 405
    assert unknown.status_code == 404


def test_quality_page_shows_agreement_of_every_kind(login, project, crew, admin_member):
    rated = make_kind_task(project, TaskKind.RATING, responses=1)
    judge(rated, crew[0], scores={"helpful": 2, "honest": 5})
    judge(rated, crew[1], scores={"helpful": 6, "honest": 5})
    ranked = make_kind_task(project, TaskKind.RANKING, responses=3)
    ids = list(ranked.links.order_by("position").values_list("response_id", flat=True))
    judge(ranked, crew[0], ranking=ids)
    judge(ranked, crew[1], ranking=[ids[1], ids[0], ids[2]])
    judge(make_kind_task(project, TaskKind.DEMONSTRATION, responses=0), crew[2], text="Hello")

    html = login(admin_member).get("/p/alpha/quality/").content.decode()

    assert 'data-kind="rating" data-criterion="helpful"' in html
    assert 'data-kind="ranking"' in html
    ranking_row = html.split('data-kind="ranking"')[1].split("</tr>")[0]
    assert "0.333" in ranking_row  # one swap among three: tau 1/3
    assert "ranking: τ 0.33" in html


def test_researchers_browse_agreement_but_not_gold_answers(login, project, researcher):
    from tests.factories import make_task

    task = make_task(project)
    task.is_gold, task.gold_answer = True, {"choice": "a"}
    task.save(update_fields=["is_gold", "gold_answer"])

    page = login(researcher).get(f"/p/{project.slug}/quality/")

    html = page.content.decode()
    assert page.status_code == 200
    assert 'id="labelers"' in html
    assert 'id="gold"' not in html
    assert "Make gold" not in html
