"""A labeler ranks four answers and rates one with the keyboard only, in headless Chromium."""

import pytest

from annotation.labeling.services import ensure_task
from annotation.models import Assignment, Judgment, Response, Role
from tests.browser.conftest import log_in
from tests.factories import PASSWORD, make_member, make_project, make_prompt
from tests.worker_fixtures import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.browser, pytest.mark.timeout(300)]


def _answers(prompt, count):
    return [
        Response.objects.create(prompt=prompt, author=f"test: {n}", text=f"Fruit answer {n}.")
        for n in range(count)
    ]


def _stored(labeler, kind: str) -> Judgment:
    return wait_for(
        lambda: Judgment.objects.filter(labeler=labeler, kind=kind).first(),
        timeout=10,
        what=f"the {kind} judgment",
    )


def _places(page) -> list[int]:
    """Response ids in the order the page shows them, checked against the place selects."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('[data-rank-item]')).map((item, i) => {
             const select = item.querySelector('[data-rank-select]');
             if (select.value !== String(i + 1)) throw new Error('select out of step');
             return Number(item.dataset.responseId);
           })"""
    )


def test_a_labeler_ranks_and_rates_with_keys_only(live_server, new_page):
    project = make_project("keys-rank-rate")
    labeler = make_member(project, Role.LABELER, "keys-labeler")
    ranking_prompt = make_prompt(project, "Name a fruit.")
    ranking_task, _ = ensure_task(
        project=project,
        kind="ranking",
        prompt=ranking_prompt,
        responses=_answers(ranking_prompt, 4),
        priority=1,
    )
    rating_prompt = make_prompt(project, "Is this answer good?")
    rated = Response.objects.create(prompt=rating_prompt, author="test", text="Rate me, please.")
    ensure_task(project=project, kind="rating", prompt=rating_prompt, responses=[rated])
    url = live_server.url

    page = new_page()
    log_in(page, url, labeler.username, PASSWORD)
    page.goto(f"{url}/p/{project.slug}/label/")
    page.locator("[data-rank-list]").wait_for()
    page.evaluate("window.__samePage = 'yes'")
    a, b, c, d = Assignment.objects.get(labeler=labeler, task=ranking_task).shown_order
    assert _places(page) == [a, b, c, d]

    # The first response is chosen; J chooses the next one, Shift+Up moves it up.
    page.keyboard.press("j")
    page.keyboard.press("Shift+ArrowUp")
    assert _places(page) == [b, a, c, d]
    # Down three times chooses the last one; 2 puts it at place 2.
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    page.keyboard.press("2")
    assert _places(page) == [b, d, a, c]
    # Down once chooses a (place 3); D moves it down to the last place.
    page.keyboard.press("ArrowDown")
    page.keyboard.press("d")
    assert _places(page) == [b, d, c, a]
    assert page.locator("[data-rank-item].is-current").get_attribute("data-response-id") == str(a)
    page.keyboard.press("Enter")

    # The next task shows at once; the answer is saved in the background.
    page.locator("[data-rating]").wait_for()
    ranking = _stored(labeler, "ranking")
    assert ranking.ranking == [b, d, c, a]
    assert ranking.all_bad is False

    # 1-7 score the highlighted criterion and move on; Up goes back to correct it.
    for key in ["5", "3", "ArrowUp", "4", "7"]:
        page.keyboard.press(key)
    assert page.locator(".criterion-row.is-current").get_attribute("data-criterion") == "honest"
    for key in ["u", "f", "f", "p"]:  # f twice: on, then off again
        page.keyboard.press(key)
    assert page.locator("input[name=flag]:checked").count() == 2
    page.keyboard.press("r")  # the focus is on a radio; R still opens the comment
    assert page.locator("#task details.extras").evaluate("details => details.open")
    # ... with the cursor in it: the letters are typed, not flags; Esc gives the keys back.
    page.keyboard.type("Fine, if plain.")
    page.keyboard.press("Escape")
    page.keyboard.press("Enter")

    rating = _stored(labeler, "rating")
    page.get_by_text("Nothing to label right now").wait_for()
    assert page.evaluate("window.__samePage") == "yes"  # no full page load happened
    assert rating.rated_response_id == rated.pk
    assert rating.scores == {"helpful": 5, "harmless": 4, "honest": 7}
    assert rating.flags == ["pii", "unsafe"]
    assert rating.rationale == "Fine, if plain."


def test_dragging_a_response_moves_it_and_its_place(live_server, new_page):
    project = make_project("drag-rank")
    labeler = make_member(project, Role.LABELER, "drag-labeler")
    prompt = make_prompt(project, "Name a colour.")
    task, _ = ensure_task(
        project=project, kind="ranking", prompt=prompt, responses=_answers(prompt, 3)
    )
    url = live_server.url
    page = new_page()
    log_in(page, url, labeler.username, PASSWORD)
    page.goto(f"{url}/p/{project.slug}/label/")
    a, b, c = Assignment.objects.get(labeler=labeler, task=task).shown_order

    # Dropped on the upper half of the first response: it goes above it.
    page.locator(f"[data-response-id='{c}']").drag_to(
        page.locator(f"[data-response-id='{a}']"), target_position={"x": 40, "y": 5}
    )

    assert _places(page) == [c, a, b]
