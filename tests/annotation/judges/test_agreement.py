"""The agreement report: each AI judge and constitution version against the human
majority, on a fixture whose answers are known by hand."""

import pytest

from annotation.judges.agreement import cohen_kappa, judge_agreement, majority
from annotation.models import Judgment, Role
from annotation.review import services as review
from tests.annotation.judges.factories import make_ai_judgment, make_constitution, make_judge
from tests.factories import judge as human_judge
from tests.factories import make_caller, make_member, make_task

# --- plain functions -------------------------------------------------------------------


def test_kappa_matches_the_textbook_example():
    # Wikipedia's example: 50 proposals, both yes 20, A yes B no 5, A no B yes 10, both no 15:
    # p_o = 0.7, p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5, kappa = 0.4.
    first = ["yes"] * 25 + ["no"] * 25
    second = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15

    assert cohen_kappa(first, second) == pytest.approx(0.4)


def test_kappa_edge_cases():
    assert cohen_kappa([], []) is None
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None  # p_e = 1: undefined
    assert cohen_kappa(["a", "b"], ["a", "b"]) == pytest.approx(1.0)
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        cohen_kappa(["a"], ["a", "b"])


def test_majority_needs_a_single_top_outcome():
    assert majority(["a", "a", "b"]) == "a"
    assert majority(["a", "tie", "b"]) is None
    assert majority(["tie", "tie", "a"]) == "tie"
    assert majority([]) is None


# --- the known-answer fixture ----------------------------------------------------------

# Ten pairs with a human winner in task order (A = the task's first response): six A, four
# B. The judge (constitution v1) agrees on seven: it says A on pairs 0-4 and 8-9, B on 5-7.
HUMAN = ["a"] * 6 + ["b"] * 4
AI = ["a"] * 5 + ["b"] * 3 + ["a"] * 2
SOFT = [0.9, 0.8, 0.7, 0.95, 0.6, 0.3, 0.1, 0.2, 0.75, 0.65]
# By hand: p_o = 7/10; AI says A 7 times, humans 6: p_e = 0.7 * 0.6 + 0.3 * 0.4 = 0.54;
# kappa = (0.7 - 0.54) / (1 - 0.54) = 0.16 / 0.46 = 8/23.
KAPPA = 8 / 23


@pytest.fixture
def people(project):
    return [make_member(project, Role.LABELER, name) for name in ("ann", "bob", "cy")]


@pytest.fixture
def v1(db):
    return make_constitution("loop-default", 1)


@pytest.fixture
def judged(project, people, v1, admin_member):
    """The known-answer fixture, and a few pairs that must be left out."""
    ann, bob, cy = people
    judge = make_judge("judge-local", v1, workspace=project.workspace)
    for number, (human, ai, soft) in enumerate(zip(HUMAN, AI, SOFT, strict=True)):
        task = make_task(project, texts=(f"first {number}", f"second {number}"))
        other = "b" if human == "a" else "a"
        # two of three, or all three, for the winner; some with a dissent
        human_judge(task, ann, choice=human)
        human_judge(task, bob, choice=human)
        human_judge(task, cy, choice=other if number % 2 else human)
        # the judge saw every third pair the other way round (its A is the task's B)
        swapped = number % 3 == 0
        soft_own = 1 - soft if swapped else soft
        made = make_ai_judgment(task, judge, soft_label=soft_own, swapped=swapped)
        assert made.choice == ({"a": "b", "b": "a"}[ai] if swapped else ai)
    # pair 10: the current votes are tie, tie; counting the superseded and the rejected A
    # votes as well would make it "no majority" instead.
    task = make_task(project, texts=("first 10", "second 10"))
    human_judge(task, ann, choice="tie")
    old = human_judge(task, bob, choice="a")
    Judgment.objects.create(
        kind="comparison", project=project, task=task, prompt=task.prompt,
        shown_order=old.shown_order, response_a_id=old.response_a_id,
        response_b_id=old.response_b_id, choice="tie", labeler=bob, supersedes=old,
    )  # fmt: skip
    rejected = human_judge(task, cy, choice="a")
    review.judgment_reject(project=project, judgment_id=rejected.pk, reviewer=admin_member)
    make_ai_judgment(task, judge, soft_label=0.9, agree=False)
    # pair 11: one A, one B -> no majority
    task = make_task(project, texts=("first 11", "second 11"))
    human_judge(task, ann, choice="a")
    human_judge(task, bob, choice="b")
    make_ai_judgment(task, judge, soft_label=0.2, agree=False)
    # pair 12: no human judgment; pair 13: humans say A, the judge is undecided
    make_ai_judgment(make_task(project, texts=("first 12", "second 12")), judge, soft_label=0.7)
    task = make_task(project, texts=("first 13", "second 13"))
    human_judge(task, ann, choice="a")
    make_ai_judgment(task, judge, soft_label=0.5, choice="tie")
    return judge


def test_accuracy_kappa_bias_and_confidence_on_known_answers(project, judged):
    [row] = judge_agreement(project=project)

    softs = SOFT + [0.9, 0.2, 0.7, 0.5]
    assert (row["judge"], row["constitution"]) == ("judge-local", "loop-default v1")
    assert (row["judgments"], row["compared"], row["pairs"], row["agreed"]) == (14, 10, 10, 7)
    assert row["accuracy"] == pytest.approx(0.7)
    assert row["kappa"] == pytest.approx(KAPPA)
    assert row["position_bias_rate"] == pytest.approx(2 / 14)
    assert row["mean_confidence"] == pytest.approx(sum(abs(s - 0.5) for s in softs) / 14)
    assert row["left_out"] == {
        "no_human_judgment": 1,
        "human_tie_or_both_bad": 1,
        "human_no_majority": 1,
        "ai_undecided": 1,
    }


def test_each_judge_and_constitution_version_gets_its_own_row(project, judged, v1):
    v2 = make_constitution("loop-default", 2)
    rival = make_judge("judge-rival", v1, workspace=project.workspace)
    tasks = list(project.tasks.order_by("id")[:4])
    for task in tasks:  # under v2 the same judge now agrees on all of the first four
        make_ai_judgment(task, judged, soft_label=0.9, constitution=v2)
    make_ai_judgment(tasks[0], rival, soft_label=0.1)  # the rival gets pair 0 wrong

    rows = {(r["judge"], r["constitution"]): r for r in judge_agreement(project=project)}

    assert list(rows) == [
        ("judge-local", "loop-default v2"),
        ("judge-local", "loop-default v1"),
        ("judge-rival", "loop-default v1"),
    ]
    assert rows[("judge-local", "loop-default v1")]["accuracy"] == pytest.approx(0.7)
    newer = rows[("judge-local", "loop-default v2")]
    assert (newer["compared"], newer["accuracy"], newer["kappa"]) == (4, 1.0, None)  # all A
    rival_row = rows[("judge-rival", "loop-default v1")]
    assert (rival_row["compared"], rival_row["accuracy"]) == (1, 0.0)


def test_reviewing_an_ai_label_does_not_change_the_judges_figures(project, judged, admin_member):
    wrong = Judgment.objects.filter(source="ai", choice__in=["a", "b"]).order_by("id")[5]
    review.judgment_reject(project=project, judgment_id=wrong.pk, reviewer=admin_member)

    [row] = judge_agreement(project=project)

    assert (row["compared"], row["accuracy"]) == (10, pytest.approx(0.7))


def test_no_ai_judgments_no_rows(project, people):
    human_judge(make_task(project), people[0], choice="a")

    assert judge_agreement(project=project) == []


# --- page and API ----------------------------------------------------------------------


def test_the_page_shows_a_row_per_judge_and_constitution(login, project, judged, researcher):
    html = login(researcher).get("/p/alpha/judges/agreement/").content.decode()

    assert 'data-judge="judge-local" data-constitution="loop-default v1"' in html
    assert '<td class="num" data-compared>10</td>' in html
    assert "0.700" in html and "(7/10)" in html
    assert f"{KAPPA:.3f}" in html
    assert "1 humans said tie/both bad" in html


def test_the_api_gives_the_same_figures(login, project, judged, researcher):
    body = login(researcher).get("/api/projects/alpha/judges/agreement/").json()

    [row] = body["judges"]
    assert body["project"] == "alpha"
    assert (row["judge"], row["constitution_version"], row["compared"]) == ("judge-local", 1, 10)
    assert row["kappa"] == pytest.approx(KAPPA)


def test_an_empty_report_says_so(login, project, researcher):
    page = login(researcher).get("/p/alpha/judges/agreement/")

    assert page.status_code == 200
    assert "No AI judge has compared responses" in page.content.decode()


@pytest.mark.parametrize(
    ("who", "page_status", "api_status"),
    [
        ("anonymous", 302, 401),
        ("outsider", 403, 403),
        ("labeler", 403, 403),
        ("researcher", 200, 200),
        ("admin", 200, 200),
    ],
)
def test_researchers_and_admins_see_the_agreement(login, project, who, page_status, api_status):
    client = login(make_caller(who, project))

    page = client.get("/p/alpha/judges/agreement/")
    api = client.get("/api/projects/alpha/judges/agreement/")

    assert (page.status_code, api.status_code) == (page_status, api_status)
    if who == "anonymous":
        assert page["Location"] == "/login/?next=/p/alpha/judges/agreement/"


def test_the_agreement_page_takes_only_get(login, project, researcher):
    assert login(researcher).post("/p/alpha/judges/agreement/").status_code == 405
    assert login(researcher).post("/api/projects/alpha/judges/agreement/").status_code == 405


def test_presumed_revision_pairs_are_not_the_judges_judgments(project, judged):
    """Critique-and-revision stores (original, revision) with the revision presumed better;
    nothing was judged, so the report leaves it out."""
    task = project.tasks.order_by("id").first()
    original, other = task.ordered_responses()
    Judgment.objects.create(
        kind="comparison", project=project, prompt=task.prompt, response_a=original,
        response_b=other, choice="b", source="ai", judge=judged,
        constitution=judged.constitution, principle="helpfulness", soft_label=None,
        ai_details={"presumed": True},
    )  # fmt: skip

    [row] = judge_agreement(project=project)

    assert (row["judgments"], row["compared"], row["agreed"]) == (14, 10, 7)
