"""A labeler's own page: progress, streak, recent judgments, gold accuracy, time."""

import re
from datetime import date, timedelta

import pytest
from django.utils import timezone

from annotation.labeling.services import ensure_task
from annotation.models import ChatSession, Judgment, Response, Review, Role, Task, TaskKind
from annotation.review import selectors
from tests.factories import (
    judge,
    make_caller,
    make_kind_task,
    make_member,
    make_prompt,
    make_task,
    make_version,
)


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_my_work_counts_by_kind_streak_gold_and_median_time(project, labeler, admin_member):
    now = timezone.now()
    for days_ago, ms in ((0, 4000), (1, 2000), (2, 0), (4, 6000)):
        judge(make_task(project), labeler, ms=ms, at=now - timedelta(days=days_ago))
    judge(make_kind_task(project, TaskKind.RATING, responses=1), labeler, scores={"helpful": 3})
    gold = make_task(project)
    Task.objects.filter(pk=gold.pk).update(is_gold=True, gold_answer={"choice": "b"})
    judge(gold, labeler, choice="a", ms=1000)
    judge(make_task(project), admin_member)  # someone else's

    work = selectors.my_work(project=project, labeler=labeler, today=timezone.localdate(now))

    assert work["judged"] == 6
    assert work["by_kind"] == [("comparison", 5), ("rating", 1)]
    assert work["streak"] == 3
    assert (work["gold_correct"], work["gold_judged"], work["gold_percent"]) == (0, 1, 0)
    assert work["median_seconds"] == 2.0  # 1, 1, 2, 4, 6 s; the untimed one is left out
    assert len(work["recent"]) == 6


def test_the_streak_is_zero_after_a_day_without_judgments(project, labeler):
    judge(make_task(project), labeler, at=timezone.now() - timedelta(days=2))

    work = selectors.my_work(project=project, labeler=labeler)

    assert work["streak"] == 0


def test_recent_judgments_are_the_last_twenty_with_review_decisions(project, labeler, admin_member):
    judgments = [judge(make_task(project), labeler) for _ in range(22)]
    Review.objects.create(judgment=judgments[-1], reviewer=admin_member, decision="rejected")

    work = selectors.my_work(project=project, labeler=labeler)

    assert [j.pk for j in work["recent"]] == [j.pk for j in judgments[::-1][:20]]
    assert work["recent"][0].decision == "rejected"
    assert work["recent"][0].summary == "A is better"


@pytest.mark.parametrize(
    ("who", "status"),
    [("anonymous", 302), ("outsider", 403), ("labeler", 200), ("researcher", 200), ("admin", 200)],
)
def test_every_member_sees_their_own_page_and_nobody_else_does(login, project, who, status):
    client = login(make_caller(who, project))

    answer = client.get("/p/alpha/me/")

    assert answer.status_code == status
    if who == "anonymous":
        assert answer["Location"] == "/login/?next=/p/alpha/me/"


def test_the_page_shows_only_the_signed_in_labelers_work(login, project, labeler):
    other = make_member(project, Role.LABELER, "other")
    judge(make_task(project, texts=("x", "y")), labeler, choice="tie", ms=3000)
    judge(make_task(project), other, choice="b")

    page = login(labeler).get("/p/alpha/me/")

    html = page.content.decode()
    assert "<dd data-judged>1</dd>" in html
    assert "Tie" in html and "B is better" not in html
    assert "1 day" in html  # streak
    assert "3.0 s" in html
    assert "Quality" not in html.split('aria-label="Quality"')[1].split("</nav>")[0]


def test_the_page_takes_no_input(login, project, labeler, other_project):
    client = login(labeler)

    posted = client.post("/p/alpha/me/", {"judged": 1000})
    foreign = client.get(f"/p/{other_project.slug}/me/")
    missing = client.get("/p/no-such-project/me/")

    assert (posted.status_code, foreign.status_code, missing.status_code) == (405, 403, 404)


def test_an_empty_page_invites_to_label(login, project, labeler):
    page = login(labeler).get("/p/alpha/me/")

    assert "Start labeling" in page.content.decode()
    assert (
        selectors.my_work(project=project, labeler=labeler, today=date(2026, 1, 1))["streak"] == 0
    )


def _row(html: str, judgment: Judgment) -> str:
    return html.split(f'data-recent="{judgment.pk}"')[1].split("</tr>")[0]


def test_a_ranking_is_shown_best_first_as_ranked_with_the_places_it_was_shown_at(
    login, project, labeler
):
    prompt = make_prompt(project, "Name a fruit.")
    apple, banana, cherry = (
        Response.objects.create(prompt=prompt, author="test", text=text)
        for text in ("Apple.", "Banana.", "Cherry.")
    )
    task, _ = ensure_task(
        project=project, kind=TaskKind.RANKING, prompt=prompt, responses=[apple, banana, cherry]
    )
    # Shown cherry, apple, banana; ranked banana best, then cherry, then apple.
    judgment = Judgment.objects.create(
        kind=TaskKind.RANKING,
        project=project,
        task=task,
        prompt=prompt,
        shown_order=[cherry.pk, apple.pk, banana.pk],
        ranking=[banana.pk, cherry.pk, apple.pk],
        labeler=labeler,
    )

    row = _row(login(labeler).get("/p/alpha/me/").content.decode(), judgment)

    ranked = re.findall(r'<li data-ranked="(\d+)" data-shown-at="(\d)">([^<]*?)\s*<', row)
    assert ranked == [
        (str(banana.pk), "3", "Banana."),
        (str(cherry.pk), "1", "Cherry."),
        (str(apple.pk), "2", "Apple."),
    ]


def test_a_comparison_is_told_in_the_sides_the_labeler_saw(login, project, labeler):
    task = make_task(project, texts=("Answer one", "Answer two"))
    first, second = task.ordered_responses()
    # Shown second on the left (as A); the labeler said "A is better": task terms say b.
    judgment = Judgment.objects.create(
        kind=TaskKind.COMPARISON,
        project=project,
        task=task,
        prompt=task.prompt,
        shown_order=[second.pk, first.pk],
        response_a=first,
        response_b=second,
        choice="b",
        strength=4,
        labeler=labeler,
    )

    row = _row(login(labeler).get("/p/alpha/me/").content.decode(), judgment)

    assert "A is much better" in row
    assert "B is" not in row


def test_a_chat_pick_is_told_as_left_or_right_as_the_chat_page_says(login, project, labeler):
    prompt = make_prompt(project, "Hi?")
    first, second = (
        Response.objects.create(prompt=prompt, author="m", text=text, sample_index=index)
        for index, text in enumerate(("one", "two"))
    )
    session = ChatSession.objects.create(
        project=project, labeler=labeler, model_version=make_version("chat-model")
    )
    # The right-hand reply (task terms: a) was picked.
    judgment = Judgment.objects.create(
        kind=TaskKind.COMPARISON,
        project=project,
        prompt=prompt,
        shown_order=[second.pk, first.pk],
        response_a=first,
        response_b=second,
        choice="a",
        chat_session=session,
        labeler=labeler,
    )

    row = _row(login(labeler).get("/p/alpha/me/").content.decode(), judgment)

    assert "Right is better" in row
    assert "A is" not in row and "B is" not in row
