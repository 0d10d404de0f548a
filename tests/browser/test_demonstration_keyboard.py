"""A labeler writes one demonstration and edits another with the keyboard only, in real
headless Chromium: the text box has focus when each task appears, Ctrl+Enter submits, and
the next task replaces the first without a page load."""

import re

import pytest

from annotation.labeling.services import ensure_task
from annotation.models import Judgment, Response, Role
from tests.browser.conftest import log_in
from tests.factories import PASSWORD, make_member, make_project, make_prompt

pytestmark = [pytest.mark.postgres, pytest.mark.browser, pytest.mark.timeout(120)]

ORIGINAL = "Paris is the capital of Germany.\nIt has about 2 million people."
EDITED = "Paris is the capital of France.\nIt has about 2 million people."

FOCUSED_MODE = "document.activeElement?.dataset?.demoMode ?? null"


def _assignment_id(page) -> str:
    return page.locator("#task form[data-keyboard-form] input[name=assignment_id]").get_attribute(
        "value"
    )


def test_write_then_edit_with_the_keyboard_only(live_server, new_page):
    project = make_project("browser-demonstrations")
    labeler = make_member(project, Role.LABELER, "demo-labeler")
    ensure_task(project=project, kind="demonstration", prompt=make_prompt(project, "Boil an egg?"))
    prompt = make_prompt(project, "Tell me about Paris.")
    response = Response.objects.create(prompt=prompt, author="test", text=ORIGINAL)
    edit_task, _ = ensure_task(
        project=project, kind="demonstration", prompt=prompt, responses=[response]
    )

    page = new_page()
    log_in(page, live_server.url, labeler.username, PASSWORD)
    page.goto(f"{live_server.url}/p/{project.slug}/label/")
    page.evaluate("window.__samePage = 'yes'")

    # Write: the empty text box has focus; type, count, submit with Ctrl+Enter.
    page.wait_for_function(f"{FOCUSED_MODE} === 'write'")
    page.keyboard.type("Boil it for nine minutes.")
    page.keyboard.press("Enter")
    page.keyboard.type("Then cool it in cold water.")
    assert page.locator("#task [data-demo-count]").inner_text() == "53"
    first = _assignment_id(page)
    page.keyboard.press("Control+Enter")

    # Edit: the next task is in place at once, its text box focused and holding the model's
    # reply, caret at the start.
    page.wait_for_function(
        "old => document.querySelector('#task input[name=assignment_id]')?.value !== old",
        arg=first,
    )
    page.wait_for_function(f"{FOCUSED_MODE} === 'edit'")
    assert page.locator("#task textarea[name=text]").input_value() == ORIGINAL
    assert page.locator("#task [data-demo-diff]").is_hidden()
    page.keyboard.press("End")
    for _ in "Germany.":
        page.keyboard.press("Backspace")
    page.keyboard.type("France.")
    page.locator("#task [data-demo-diff] del").wait_for()
    assert page.locator("#task [data-demo-diff] del").all_inner_texts() == ["Germany."]
    assert page.locator("#task [data-demo-diff] ins").all_inner_texts() == ["France."]

    # Escape leaves the box (keys work again), E goes back to it, Ctrl+Enter submits.
    page.keyboard.press("Escape")
    assert page.evaluate(FOCUSED_MODE) is None
    page.keyboard.press("e")
    page.wait_for_function(f"{FOCUSED_MODE} === 'edit'")
    page.keyboard.press("Control+Enter")
    page.get_by_text("Nothing to label right now").wait_for()
    page.locator("#answer-status", has_text="Saved.").wait_for()

    assert page.evaluate("window.__samePage") == "yes"  # no full page load happened
    written, edited = Judgment.objects.filter(labeler=labeler).order_by("id")
    assert written.text == "Boil it for nine minutes.\nThen cool it in cold water."
    assert (written.edited_from_id, written.edit_diff) == (None, "")
    assert edited.task == edit_task
    assert edited.text == EDITED
    assert edited.edited_from == response
    assert "-Paris is the capital of Germany.\n+Paris is the capital of France." in (
        edited.edit_diff
    )


def test_a_draft_survives_a_reload(live_server, new_page):
    project = make_project("browser-drafts")
    labeler = make_member(project, Role.LABELER, "draft-labeler")
    ensure_task(project=project, kind="demonstration", prompt=make_prompt(project, "Why?"))

    page = new_page()
    log_in(page, live_server.url, labeler.username, PASSWORD)
    page.goto(f"{live_server.url}/p/{project.slug}/label/")
    page.wait_for_function(f"{FOCUSED_MODE} === 'write'")
    page.keyboard.type("Because the sky")
    page.reload()

    page.wait_for_function(f"{FOCUSED_MODE} === 'write'")
    assert page.locator("#task textarea[name=text]").input_value() == "Because the sky"
    assert page.locator("#task [data-demo-count]").inner_text() == "15"
    page.keyboard.type(" is blue.")  # the caret is at the end of the draft
    page.keyboard.press("Control+Enter")
    page.get_by_text("Nothing to label right now").wait_for()
    page.locator("#answer-status", has_text="Saved.").wait_for()
    assert Judgment.objects.get(labeler=labeler).text == "Because the sky is blue."


def test_the_hints_never_offer_a_key_that_would_be_typed(live_server, new_page):
    project = make_project("browser-demo-hints")
    labeler = make_member(project, Role.LABELER, "hint-labeler")
    prompt = make_prompt(project, "Tell me about Paris.")
    response = Response.objects.create(prompt=prompt, author="test", text=ORIGINAL)
    ensure_task(project=project, kind="demonstration", prompt=prompt, responses=[response])
    page = new_page()
    log_in(page, live_server.url, labeler.username, PASSWORD)
    page.goto(f"{live_server.url}/p/{project.slug}/label/")
    box = page.locator("#task textarea[name=text]")
    e_hints = page.locator("#task kbd", has_text=re.compile(r"^E$"))
    typing_hint = page.get_by_text("Typing into the reply")

    # The editor has the focus: E would be typed, so no hint offers it; the page says so.
    page.wait_for_function(f"{FOCUSED_MODE} === 'edit'")
    assert e_hints.count() == 2
    assert not any(hint.is_visible() for hint in e_hints.all())
    assert typing_hint.is_visible()
    # Escape: the keys work, and their hints are back.
    page.keyboard.press("Escape")
    assert page.evaluate(FOCUSED_MODE) is None
    assert all(hint.is_visible() for hint in e_hints.all())
    assert typing_hint.is_hidden()
    # E goes back to the editor and types nothing.
    page.keyboard.press("e")
    page.wait_for_function(f"{FOCUSED_MODE} === 'edit'")
    assert box.input_value() == ORIGINAL
    assert not any(hint.is_visible() for hint in e_hints.all())
    page.keyboard.press("Control+A")
    page.keyboard.type("Paris is the capital of France.")
    page.keyboard.press("Control+Enter")
    page.get_by_text("Nothing to label right now").wait_for()
    page.locator("#answer-status", has_text="Saved.").wait_for()

    stored = Judgment.objects.get(labeler=labeler)
    assert stored.text == "Paris is the capital of France."
    assert stored.edited_from == response
