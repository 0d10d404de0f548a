"""An admin works the review queue with keys only, in real headless Chromium."""

import pytest

from annotation.models import Judgment, Review, Role
from tests.browser.conftest import log_in
from tests.factories import PASSWORD, judge, make_member, make_project, make_task

pytestmark = [pytest.mark.postgres, pytest.mark.browser, pytest.mark.timeout(300)]


def _focused(page) -> str:
    return page.locator("#task").get_attribute("data-judgment")


def _next_item(page, before: str) -> None:
    page.wait_for_function(
        "old => document.querySelector('#task')?.dataset.judgment !== old", arg=before
    )


def test_an_admin_accepts_corrects_and_rejects_with_keys_only(live_server, new_page):
    project = make_project("review-keys")
    admin = make_member(project, Role.ADMIN, "review-admin")
    ann = make_member(project, Role.LABELER, "review-ann")
    bob = make_member(project, Role.LABELER, "review-bob")
    first_task = make_task(project, texts=("Paris.", "Lyon."))
    second_task = make_task(project, texts=("Blue.", "Green."))
    ann_first = judge(first_task, ann, choice="a")
    bob_first = judge(first_task, bob, choice="b")
    ann_second = judge(second_task, ann, choice="tie")
    judge(second_task, bob, choice="both_bad")
    url = live_server.url

    page = new_page()
    log_in(page, url, admin.username, PASSWORD)
    page.goto(f"{url}/p/{project.slug}/review/")
    page.evaluate("window.__samePage = 'yes'")

    # Accept ann's answer on the first task.
    assert _focused(page) == str(ann_first.pk)
    page.keyboard.press("a")
    _next_item(page, str(ann_first.pk))

    # Correct bob's: C opens the comparison buttons, 1 says "A is much better".
    assert _focused(page) == str(bob_first.pk)
    page.keyboard.press("c")
    page.locator("form.correction").wait_for()
    page.keyboard.press("1")
    _next_item(page, str(bob_first.pk))

    # Reject ann's tie on the second task; bob's answer then stands alone: queue empty.
    assert _focused(page) == str(ann_second.pk)
    page.keyboard.press("r")
    page.get_by_text("Nothing to review").wait_for()

    assert page.evaluate("window.__samePage") == "yes"  # every step swapped in place
    decisions = dict(Review.objects.values_list("judgment_id", "decision"))
    assert decisions == {
        ann_first.pk: "accepted",
        bob_first.pk: "corrected",
        ann_second.pk: "rejected",
    }
    correction = Judgment.objects.get(supersedes=bob_first)
    assert (correction.choice, correction.strength, correction.labeler) == ("a", 4, admin)
