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


def test_a_click_after_typing_in_a_field_below_the_queue_sends_its_form(
    live_server, new_page, tmp_path
):
    """Leaving a field shows the one-key hints again; the page must not move under the
    pointer then, or the click (mousedown leaves the field) ends beside its button."""
    from annotation.datasets.imports import dataset_import

    project = make_project("review-typing")
    admin = make_member(project, Role.ADMIN, "review-typist")
    ann = make_member(project, Role.LABELER, "review-typing-ann")
    bob = make_member(project, Role.LABELER, "review-typing-bob")
    task = make_task(project, texts=("Paris.", "Lyon."))
    judge(task, ann, choice="a")
    judge(task, bob, choice="b")  # a disagreement: the queue shows the task and its keys
    file = tmp_path / "hh.jsonl"
    file.write_text(
        '{"chosen": "\\n\\nHuman: Is ice cold?\\n\\nAssistant: Yes.", '
        '"rejected": "\\n\\nHuman: Is ice cold?\\n\\nAssistant: No."}\n'
    )
    dataset_import(project=project, path=file, source="ice")
    url = live_server.url

    page = new_page()
    log_in(page, url, admin.username, PASSWORD)
    page.goto(f"{url}/p/{project.slug}/review/")
    page.fill("#import-fill-share", "1")
    with page.expect_navigation():
        page.locator("#import-review-fill button[type=submit]").click()

    assert "1 imported judgment sent to the review queue." in page.inner_text("body")
    assert Judgment.objects.get(source=Judgment.Source.IMPORT).needs_review
