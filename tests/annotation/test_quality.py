"""Quality figures: agreement, gold accuracy, time per item, trends, the review queue and
the admin's quality page."""

import random
import uuid
from datetime import date, datetime, timedelta

import krippendorff
import numpy as np
import pytest
from django.utils import timezone
from scipy.stats import kendalltau

from annotation import quality
from annotation.models import Judgment, Response, Review, Role, Task, TaskKind
from annotation.services import (
    assignment_next,
    assignment_skip,
    comparison_submit,
    ensure_task,
)
from tests.factories import make_member, make_project, make_prompt, make_task, make_user

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 coders,
# 12 units, values 1..5, missing as None. Nominal alpha 0.743, interval 0.849.
CANONICAL = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def _units(coders: list[list]) -> list[list]:
    """Coder-major reliability data -> the values of each unit."""
    return [
        [row[unit] for row in coders if row[unit] is not None] for unit in range(len(coders[0]))
    ]


def _package_alpha(coders: list[list], level: str) -> float:
    data = [[np.nan if v is None else v for v in row] for row in coders]
    return krippendorff.alpha(reliability_data=data, level_of_measurement=level)


# --- test data builders ----------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


CALLER_ROLES = {"labeler": Role.LABELER, "researcher": Role.RESEARCHER, "admin": Role.ADMIN}


def make_caller(who: str, project):
    """The user a permission test signs in as (None: anonymous)."""
    if who == "anonymous":
        return None
    if who == "outsider":
        return make_user("outsider")
    return make_member(project, CALLER_ROLES[who], f"caller-{who}")


def make_kind_task(project, kind: str, *, responses: int = 2, gold_answer=None) -> Task:
    prompt = make_prompt(project)
    made = [
        Response.objects.create(prompt=prompt, author=f"test: {i}", text=f"Answer {i}")
        for i in range(responses)
    ]
    task, _ = ensure_task(
        project=project, kind=kind, prompt=prompt, responses=made, gold_answer=gold_answer
    )
    return task


def judge(task: Task, labeler, *, ms: int = 1000, at: datetime | None = None, **fields):
    """A stored judgment of the task (comparison choice "a" unless given)."""
    order = list(task.links.order_by("position").values_list("response_id", flat=True))
    if task.kind == TaskKind.COMPARISON:
        fields = {"response_a_id": order[0], "response_b_id": order[1], "choice": "a", **fields}
    if task.kind == TaskKind.RATING:
        fields = {"rated_response_id": order[0], **fields}
    judgment = Judgment.objects.create(
        kind=task.kind,
        project=task.project,
        task=task,
        prompt=task.prompt,
        shown_order=order,
        labeler=labeler,
        time_spent_ms=ms,
        **fields,
    )
    if at is not None:
        Judgment.objects.filter(pk=judgment.pk).update(created_at=at)
        judgment.refresh_from_db()
    return judgment


# --- metric functions ------------------------------------------------------------------


def test_nominal_alpha_reproduces_krippendorffs_canonical_example():
    alpha = quality.krippendorff_alpha(_units(CANONICAL), level=quality.NOMINAL)

    assert round(alpha, 3) == 0.743
    assert alpha == pytest.approx(_package_alpha(CANONICAL, "nominal"), abs=1e-12)


def test_interval_alpha_reproduces_the_canonical_example_and_the_package_on_random_data():
    assert round(quality.krippendorff_alpha(_units(CANONICAL), level="interval"), 3) == 0.849
    rng = random.Random(7)
    for _ in range(20):
        coders = [[rng.choice([None, 1, 2, 3, 4, 5, 6, 7]) for _ in range(15)] for _ in range(4)]
        ours = quality.krippendorff_alpha(_units(coders), level="interval")
        if ours is None:
            continue
        assert ours == pytest.approx(_package_alpha(coders, "interval"), abs=1e-9)
        nominal = quality.krippendorff_alpha(_units(coders), level="nominal")
        assert nominal == pytest.approx(_package_alpha(coders, "nominal"), abs=1e-9)


def test_alpha_is_undefined_without_paired_values_or_without_variation():
    assert quality.krippendorff_alpha([["a"], ["b"]]) is None
    assert quality.krippendorff_alpha([["a", "a"], ["a", "a"]]) is None
    assert quality.krippendorff_alpha([["a", "a"], ["b", "b"]]) == 1.0


def test_a_labelers_alpha_equals_the_project_alpha_when_two_labelers_judged():
    units = {1: {"x": "a", "y": "a"}, 2: {"x": "b", "y": "a"}, 3: {"x": "b", "y": "b"}}
    project_alpha = quality.krippendorff_alpha([u.values() for u in units.values()])

    assert quality.labeler_alpha(units, coder="x") == pytest.approx(project_alpha)
    assert quality.labeler_alpha(units, coder="y") == pytest.approx(project_alpha)


def test_a_labelers_alpha_counts_only_the_pairs_they_take_part_in():
    # Pooled values: a x5, b x3 -> D_e = (64 - 25 - 9) / 56. L differs from the other
    # labeler on one of its three units -> D_o = 1/3, alpha = 1 - 56/90 = 17/45.
    units = {
        1: {"L": "a", "M": "a"},
        2: {"L": "b", "M": "b"},
        3: {"L": "a", "N": "b"},
        4: {"M": "a", "N": "a"},
    }

    assert quality.labeler_alpha(units, coder="L") == pytest.approx(17 / 45)
    assert quality.labeler_alpha(units, coder="L", only_units={1, 2}) == pytest.approx(1.0)
    assert quality.labeler_alpha(units, coder="Z") is None


def test_kendall_tau_matches_scipy_on_random_rankings():
    rng = random.Random(3)
    for k in (2, 3, 4, 7):
        for _ in range(10):
            first = list(range(k))
            second = first[:]
            rng.shuffle(second)
            expected = kendalltau(
                [first.index(i) for i in range(k)], [second.index(i) for i in range(k)]
            ).statistic
            assert quality.kendall_tau(first, second) == pytest.approx(expected)


def test_kendall_tau_uses_the_shared_items_only():
    assert quality.kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert quality.kendall_tau([1, 2, 3, 9], [1, 2, 3]) == 1.0
    assert quality.kendall_tau([1], [1]) is None


def test_mean_pairwise_tau_over_all_pairs_and_for_one_labeler():
    units = {
        1: {"x": [1, 2, 3], "y": [1, 2, 3], "z": [3, 2, 1]},  # taus: 1, -1, -1
        2: {"x": [4, 5, 6], "y": [4, 6, 5]},  # tau 1/3
    }

    assert quality.mean_pairwise_tau(units) == pytest.approx((1 - 1 - 1 + 1 / 3) / 4)
    assert quality.mean_pairwise_tau(units, coder="z") == -1.0
    assert quality.mean_pairwise_tau(units, coder="x") == pytest.approx((1 - 1 + 1 / 3) / 3)


def test_median_seconds_leaves_out_judgments_without_a_time():
    assert quality.median_seconds([0, 1000, 3000, 2000, 0]) == 2.0
    assert quality.median_seconds([0, 0]) is None


def test_streak_counts_days_in_a_row_up_to_today_or_yesterday():
    today = date(2026, 3, 10)
    days = {today, date(2026, 3, 9), date(2026, 3, 8), date(2026, 3, 6)}

    assert quality.streak_days(days, today=today) == 3
    assert quality.streak_days(days - {today}, today=today) == 2
    assert quality.streak_days({date(2026, 3, 8)}, today=today) == 0
    assert quality.streak_days(set(), today=today) == 0


def test_periods_are_iso_weeks_or_days():
    assert quality.period_of(date(2026, 1, 1), daily=False) == ("2026-W01", date(2025, 12, 29))
    assert quality.period_of(date(2026, 1, 1), daily=True) == ("2026-01-01", date(2026, 1, 1))


# --- figures from the database ---------------------------------------------------------


@pytest.fixture
def crew(project):
    return [make_member(project, Role.LABELER, f"crew{i}") for i in range(3)]


def test_project_agreement_per_kind_uses_current_human_judgments_only(project, crew, admin_member):
    # Comparisons: three labelers on four tasks (a coder-major table like CANONICAL).
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

    lines = {(line["kind"], line["criterion"]): line for line in quality.project_agreement(
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

    assert quality.gold_accuracy(project=project, labeler=labeler) == (expected, 3)


def test_low_trust_needs_enough_gold_judgments_below_the_threshold(project, crew):
    gold = [make_task(project) for _ in range(4)]
    for task in gold:
        Task.objects.filter(pk=task.pk).update(is_gold=True, gold_answer={"choice": "a"})
    for task, choice in zip(gold, ["b", "b", "a"], strict=False):
        judge(task, crew[0], choice=choice)  # 1 of 3 right: low trust
    judge(gold[0], crew[1], choice="b")  # 0 of 1: too few to tell
    for task in gold:
        judge(task, crew[2], choice="a" if task != gold[0] else "b")  # 3 of 4 = 0.75

    assert quality.low_trust_labeler_ids(project=project) == {crew[0].pk}


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

    figures = quality.labeler_quality(project=project)

    rows = {row["labeler"].username: row for row in figures["labelers"]}
    first = rows["crew0"]
    assert (first["judgments"], first["gold_correct"], first["gold_judged"]) == (3, 1, 1)
    assert first["median_seconds"] == 3.0
    assert first["agreement"]["comparison"] == pytest.approx(
        quality.labeler_alpha(
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

    figures = quality.labeler_quality(project=project)

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

    queue = quality.review_queue(project=project, reviewer=admin_member)

    assert [(e.judgment_id, e.reasons) for e in queue] == [
        (first.pk, ("labelers disagree",)),
        (second.pk, ("labelers disagree",)),
        (alone.pk, ("low-trust labeler",)),
    ]
    assert mine.pk not in {e.judgment_id for e in quality.review_queue(
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

    queued = {e.task_id for e in quality.review_queue(project=project, reviewer=reviewer)}

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
        ("post", "/p/alpha/quality/gold/"),
        ("post", "/p/alpha/quality/tasks/{task}/return/"),
    ],
)
def test_quality_actions_are_for_admins_only(login, project, who, status, method, path):
    task = make_task(project)
    Task.objects.filter(pk=task.pk).update(flagged=True, skip_count=3)
    client = login(make_caller(who, project))
    url = path.format(task=task.pk)
    body = {"task_id": task.pk, "gold_answer": '{"choice": "a"}'}

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

    answer = login(admin_member).post(
        "/p/alpha/quality/gold/", {"task_id": task.pk, "gold_answer": '{"choice": "tie"}'}
    )

    assert answer.status_code == 302
    task.refresh_from_db()
    assert (task.is_gold, task.gold_answer) == (True, {"choice": "tie"})


@pytest.mark.parametrize(
    ("task_id", "raw", "message"),
    [
        ("mine", "{not json", "The gold answer is not valid JSON"),
        ("mine", '{"choice": "left"}', "A comparison gold answer is"),
        ("mine", '["a"]', "A gold answer must be a JSON object."),
        ("mine", '{"choice": "a", "extra": 1}', "not &#x27;extra&#x27;"),
        ("nine", '{"choice": "a"}', "Give the id of a task of this project."),
        ("other", '{"choice": "a"}', "Give the id of a task of this project."),
    ],
)
def test_the_gold_form_refuses_bad_input_and_stores_nothing(
    login, project, other_project, admin_member, task_id, raw, message
):
    ids = {"mine": make_task(project).pk, "other": make_task(other_project).pk, "nine": "9x"}

    answer = login(admin_member).post(
        "/p/alpha/quality/gold/", {"task_id": ids[task_id], "gold_answer": raw}
    )

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
