"""A labeler chats with a model through the real gpu worker, with the keyboard only."""

import re

import pytest

from annotation.chat.services import chat_start
from annotation.models import ChatSession, ChatTurn, Judgment, Prompt, Response, Role
from models_registry.services import ensure_base_model_from_folder
from tests.browser.conftest import log_in
from tests.factories import PASSWORD, make_member, make_project, make_version

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


def _session_with_replies(project, labeler, message: str, replies: tuple[str, str]):
    """A chat whose first turn already has its two replies, as the worker leaves it."""
    version = make_version("chat-hints-model")
    session = chat_start(project=project, labeler=labeler, model_version_id=version.pk)
    session.messages = [{"role": "user", "content": message}]
    session.save(update_fields=["messages"])
    prompt = Prompt.objects.create(
        project=project, text=message, metadata={"chat_session": session.pk}
    )
    made = [
        Response.objects.create(prompt=prompt, model_version=version, sample_index=i, text=text)
        for i, text in enumerate(replies)
    ]
    ChatTurn.objects.create(
        session=session,
        prompt=prompt,
        message_index=0,
        model_version=version,
        status=ChatTurn.Status.SUCCEEDED,
        shown_order=[r.pk for r in made],
    )
    return session


def test_the_finish_key_is_never_offered_while_it_would_be_typed(live_server, new_page):
    project = make_project("browser-chat-hints")
    labeler = make_member(project, Role.LABELER, "chat-hint-labeler")
    session = _session_with_replies(project, labeler, "Hello!", ("Hi there.", "Good day."))
    url = live_server.url
    page = new_page()
    log_in(page, url, labeler.username, PASSWORD)
    page.goto(f"{url}/p/{project.slug}/chat/{session.pk}/")
    page.locator("#task[data-turn-status=ready]").wait_for()
    page.evaluate(
        """() => { window.__samePage = 'yes'; window.__typed = [];
             document.addEventListener('input', (event) => {
               const box = event.target.closest('[data-chat-input]');
               if (box) window.__typed.push(box.value);
             }); }"""
    )
    finish = page.locator("#task [data-chat-finish]")
    f_hint = finish.locator("kbd", has_text=re.compile(r"^F$"))
    ctrl_hint = finish.locator("kbd", has_text="Ctrl")

    # A pick puts the cursor in the message box: F would be typed there, so it is not
    # offered; Ctrl+Enter is, and it finishes from the box.
    page.keyboard.press("1")
    page.wait_for_function("document.activeElement?.id === 'chat-input'")
    assert f_hint.is_hidden()
    assert ctrl_hint.is_visible()
    page.keyboard.press("Control+Enter")
    page.locator("form.chat-finish").wait_for()
    # Back to the chat (B): the box has the cursor again. Escape, then F finishes.
    page.keyboard.press("b")
    page.wait_for_function("document.activeElement?.id === 'chat-input'")
    assert f_hint.is_hidden()
    page.keyboard.press("Escape")
    assert f_hint.is_visible()
    page.keyboard.press("f")
    page.locator("form.chat-finish").wait_for()
    page.keyboard.press("6")
    page.locator("[data-rating]").wait_for()

    assert page.evaluate("window.__samePage") == "yes"
    assert page.evaluate("window.__typed") == []  # nothing was ever typed into the box
    session.refresh_from_db()
    assert (session.finished, session.rating, session.comment) == (True, 6, "")
    left = Response.objects.get(prompt__metadata__chat_session=session.pk, sample_index=0)
    assert session.messages == [
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": left.text},
    ]
    assert Judgment.objects.get(chat_session=session).choice == "a"
