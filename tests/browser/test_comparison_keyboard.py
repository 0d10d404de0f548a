"""A labeler compares answers with the keyboard only, in real headless Chromium: a key that
opens a text field puts the cursor in it, no key acts while typing there, and keys work
again from a radio button."""

import pytest

from annotation.models import Assignment, Judgment, Role, Task
from tests.browser.conftest import log_in
from tests.factories import PASSWORD, make_member, make_project, make_task
from tests.worker_fixtures import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.browser, pytest.mark.timeout(120)]

RATIONALE = "B hallucinates."  # holds t (tie) and s (skip), two of the page's keys


def _assignment_id(page) -> str:
    return page.locator("#task form[data-keyboard-form]").get_attribute("data-assignment")


def _next_task(page, before: str) -> None:
    page.wait_for_function(
        "old => document.querySelector('#task form[data-keyboard-form]')"
        "?.dataset.assignment !== old",
        arg=before,
    )


def _choice_for(assignment: Assignment, side: str) -> str:
    """The stored choice (task terms: a is the task's first response) for a side shown."""
    task_a = assignment.task.links.order_by("position").first().response_id
    picked = assignment.shown_order[0 if side == "left" else 1]
    return "a" if picked == task_a else "b"


def test_typing_a_rationale_records_it_and_triggers_no_key(live_server, new_page):
    project = make_project("keys-comparison")
    labeler = make_member(project, Role.LABELER, "compare-labeler")
    for number in range(3):
        make_task(project, texts=(f"Answer {number} one.", f"Answer {number} two."))
    page = new_page()
    log_in(page, live_server.url, labeler.username, PASSWORD)
    page.goto(f"{live_server.url}/p/{project.slug}/label/")

    # R opens the rationale with the cursor in it; what is typed there stays there.
    first = _assignment_id(page)
    page.keyboard.press("r")
    page.keyboard.type(RATIONALE)
    assert page.locator(f"#rationale-{first}").input_value() == RATIONALE
    # Escape gives the keys back: 7 is "B is better".
    page.keyboard.press("Escape")
    page.keyboard.press("7")
    _next_task(page, first)

    stored = wait_for(
        lambda: Judgment.objects.filter(labeler=labeler).first(), timeout=10, what="the judgment"
    )
    assignment = Assignment.objects.get(pk=first)
    assert stored.task_id == assignment.task_id
    assert stored.rationale == RATIONALE
    assert (stored.choice, stored.strength) == (_choice_for(assignment, "right"), 3)

    # A criterion radio has the focus (Shift+Tab from the rationale, Space checks it): the
    # page's keys still work from there.
    second = _assignment_id(page)
    page.keyboard.press("r")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Space")
    criterion, side = page.evaluate("[document.activeElement.name, document.activeElement.value]")
    assert criterion == "criterion_honest"
    page.keyboard.press("2")  # A is better
    _next_task(page, second)
    page.locator("#answer-status", has_text="Saved.").wait_for()

    wait_for(
        lambda: Judgment.objects.filter(labeler=labeler).count() == 2,
        timeout=10,
        what="the second judgment",
    )
    assignment = Assignment.objects.get(pk=second)
    judged = Judgment.objects.get(labeler=labeler, task_id=assignment.task_id)
    assert (judged.choice, judged.strength) == (_choice_for(assignment, "left"), 3)
    expected = side if side == "tie" else _choice_for(assignment, side)
    assert judged.criteria_choices == {"honest": expected}
    assert judged.rationale == ""
    # Nothing else was recorded: no tie, no skip.
    assert Judgment.objects.filter(labeler=labeler).count() == 2
    assert not Judgment.objects.filter(labeler=labeler, choice="tie").exists()
    assert not Assignment.objects.filter(labeler=labeler, status="skipped").exists()
    assert Task.objects.filter(project=project, skip_count__gt=0).count() == 0
