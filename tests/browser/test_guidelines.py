"""A labeler sees the project's guidelines beside the task in real headless Chromium: open
on the first visit to a version, collapsed after, and the keys still label with the panel
open, after clicking its summary too."""

import pytest

from annotation.models import Judgment, Role
from annotation.projects.guidelines import guidelines_publish
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


def test_guidelines_open_on_the_first_visit_then_collapse_and_keys_still_label(
    live_server, new_page
):
    project = make_project("guidelines-panel")
    admin = make_member(project, Role.ADMIN, "guide-admin")
    labeler = make_member(project, Role.LABELER, "guide-labeler")
    for number in range(3):
        make_task(project, texts=(f"Answer {number} one.", f"Answer {number} two."))
    guidelines_publish(project=project, text="Prefer the **honest** answer.", author=admin)
    page = new_page()
    log_in(page, live_server.url, labeler.username, PASSWORD)

    page.goto(f"{live_server.url}/p/{project.slug}/label/")
    panel = page.locator("details#guidelines")
    assert panel.get_attribute("open") is not None
    assert panel.locator("strong").inner_text() == "honest"

    # Closing the panel with a click leaves the focus on its summary: keys still label.
    panel.locator("summary").click()
    assert panel.get_attribute("open") is None
    first = _assignment_id(page)
    page.keyboard.press("2")  # A is better
    _next_task(page, first)
    stored = wait_for(
        lambda: Judgment.objects.filter(labeler=labeler).first(), timeout=10, what="the judgment"
    )
    assert stored.guidelines.version == 1

    page.reload()
    panel = page.locator("details#guidelines")
    assert panel.get_attribute("open") is None
    assert panel.locator("summary").inner_text() == "Guidelines, version 1"
