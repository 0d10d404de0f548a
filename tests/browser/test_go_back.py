"""A labeler goes back with the keyboard, in real headless Chromium: after judging two
comparisons, [ opens the newest judgment and [ again the one before, shown with the
answer marked; a new answer replaces it (a judgment that supersedes the old one)."""

import pytest

from annotation.models import Judgment, Role
from tests.browser.conftest import log_in
from tests.factories import PASSWORD, make_member, make_project, make_task
from tests.worker_fixtures import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.browser, pytest.mark.timeout(120)]


def _assignment_id(page) -> str:
    return page.locator("#task form[data-keyboard-form]").get_attribute("data-assignment")


def _next_task(page, before: str) -> None:
    page.wait_for_function(
        "old => document.querySelector('#task form[data-keyboard-form]')"
        "?.dataset.assignment !== old",
        arg=before,
    )


def test_going_back_to_the_first_judgment_and_changing_it(live_server, new_page):
    project = make_project("go-back")
    labeler = make_member(project, Role.LABELER, "go-back-labeler")
    for number in range(3):
        make_task(project, texts=(f"Answer {number} one.", f"Answer {number} two."))
    page = new_page()
    log_in(page, live_server.url, labeler.username, PASSWORD)
    page.goto(f"{live_server.url}/p/{project.slug}/label/")

    first = _assignment_id(page)
    page.keyboard.press("1")  # A is much better
    _next_task(page, first)
    second = _assignment_id(page)
    page.keyboard.press("8")  # B is much better
    _next_task(page, second)
    # The strip fetches itself again once each answer is stored.
    page.locator("#recent-judgments [data-recent-judgment]").nth(1).wait_for()
    judged = wait_for(
        lambda: list(Judgment.objects.filter(labeler=labeler).order_by("id")) or None,
        timeout=10,
        what="the judgments",
    )
    assert len(judged) == 2
    older, newer = judged

    # [ opens the newest judgment; [ on its page goes one further back.
    page.keyboard.press("[")
    page.wait_for_url(f"**/p/{project.slug}/label/judgments/{newer.pk}/")
    assert page.locator('button[aria-pressed="true"]').get_attribute("value") == "right-4"
    page.keyboard.press("[")
    page.wait_for_url(f"**/p/{project.slug}/label/judgments/{older.pk}/")
    assert page.locator('button[aria-pressed="true"]').get_attribute("value") == "left-4"

    page.keyboard.press("t")  # Tie
    page.wait_for_url(f"**/p/{project.slug}/label/")
    page.get_by_text("your new answer replaces the old one").wait_for()

    change = Judgment.objects.get(supersedes=older)
    assert (change.choice, change.strength, change.labeler) == ("tie", None, labeler)
    assert change.task_id == older.task_id and change.shown_order == older.shown_order
    older.refresh_from_db()
    assert older.strength == 4  # the first answer is kept as it was, superseded
    assert Judgment.objects.filter(labeler=labeler).count() == 3
    # The strip now offers the change, not the old answer.
    strip = page.locator("#recent-judgments [data-recent-judgment]")
    ids = {strip.nth(i).get_attribute("data-recent-judgment") for i in range(strip.count())}
    assert ids == {str(change.pk), str(newer.pk)}
