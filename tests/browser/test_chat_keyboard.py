"""A labeler chats with a model through the real gpu worker, with the keyboard only."""

import pytest

from annotation.models import ChatSession, Judgment, Response, Role
from models_registry.services import ensure_base_model_from_folder
from tests.browser.conftest import log_in
from tests.factories import PASSWORD, make_member, make_project

pytestmark = [pytest.mark.postgres, pytest.mark.browser, pytest.mark.timeout(600)]

# The worker writes two replies of up to 128 tokens per turn on CPU.
REPLY_TIMEOUT_MS = 240_000


def _wait_for_two_replies(page) -> list[str]:
    page.locator("#task[data-turn-status=ready]").wait_for(timeout=REPLY_TIMEOUT_MS)
    replies = page.locator("#task article.response")
    assert replies.count() == 2
    return [replies.nth(i).get_attribute("data-response") for i in range(2)]


def test_a_labeler_chats_picks_and_rates_with_the_keyboard(
    live_server, celery_worker_process, tiny_model_dir, new_page
):
    project = make_project("browser-chat")
    labeler = make_member(project, Role.LABELER, "chat-labeler")
    ensure_base_model_from_folder(name="tiny-chat-model", path=tiny_model_dir)
    url = live_server.url
    page = new_page()
    log_in(page, url, labeler.username, PASSWORD)

    # Start: the model is preselected; N starts the chat.
    page.goto(f"{url}/p/{project.slug}/chat/")
    page.keyboard.press("n")
    page.wait_for_url(f"{url}/p/{project.slug}/chat/*/")
    page.evaluate("window.__samePage = 'yes'")

    # Turn 1: the cursor is in the box; Enter sends; the page polls while the model thinks.
    page.keyboard.type("Hello, model!")
    page.keyboard.press("Enter")
    page.locator("[data-thinking]").wait_for()
    first_shown = _wait_for_two_replies(page)
    page.keyboard.press("2")

    # Turn 2: the box has the focus again after the pick.
    page.locator("#chat-input").wait_for()
    page.wait_for_function("document.activeElement?.id === 'chat-input'")
    page.keyboard.type("Tell me more.")
    page.keyboard.press("Enter")
    second_shown = _wait_for_two_replies(page)
    page.keyboard.press("t")

    # Finish: Ctrl+Enter from the box, a comment, Escape, then a rating key.
    page.locator("#chat-input").wait_for()
    page.keyboard.press("Control+Enter")
    page.locator("form.chat-finish").wait_for()
    page.keyboard.press("c")
    page.keyboard.type("Odd but polite.")
    page.keyboard.press("Escape")
    page.keyboard.press("5")
    page.locator("[data-rating]").wait_for()

    assert page.evaluate("window.__samePage") == "yes"  # every step was an in-place swap
    session = ChatSession.objects.get(labeler=labeler)
    assert (session.finished, session.rating, session.comment) == (True, 5, "Odd but polite.")
    first, second = Judgment.objects.filter(chat_session=session).order_by("id")
    assert [str(pk) for pk in first.shown_order] == first_shown
    assert [str(pk) for pk in second.shown_order] == second_shown
    right_of_first = first.shown_order[1]
    assert first.chosen_and_rejected[0].pk == right_of_first
    assert first.context == []
    assert second.context == [
        {"role": "user", "content": "Hello, model!"},
        {"role": "assistant", "content": first.chosen_and_rejected[0].text},
    ]
    assert second.choice == "tie"
    assert [m["content"] for m in session.messages[::2]] == ["Hello, model!", "Tell me more."]
    # A tie continues with the reply shown on the left.
    left_of_second = Response.objects.get(pk=second.shown_order[0])
    assert session.messages[3] == {"role": "assistant", "content": left_of_second.text}
