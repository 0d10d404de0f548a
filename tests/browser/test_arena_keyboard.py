"""A labeler fights an arena battle through the real gpu worker, with the keyboard only."""

import re

import pytest

from annotation.models import ArenaBattle, Judgment, Role
from models_registry.services import ensure_base_model_from_folder
from tests.browser.conftest import log_in
from tests.factories import PASSWORD, make_member, make_project, make_prompt, make_version

pytestmark = [pytest.mark.postgres, pytest.mark.browser, pytest.mark.timeout(600)]

# The worker writes two replies of up to 128 tokens, one per model, on CPU.
REPLY_TIMEOUT_MS = 240_000
NAMES = ("tiny-arena-alpha", "tiny-arena-beta")


def test_a_labeler_votes_in_a_battle_with_the_keyboard_and_sees_the_names(
    live_server, celery_worker_process, tiny_model_dir, new_page
):
    project = make_project("browser-arena")
    labeler = make_member(project, Role.LABELER, "arena-labeler")
    make_prompt(project, "What is a reward model?")
    for name in NAMES:
        ensure_base_model_from_folder(name=name, path=tiny_model_dir)
    url = live_server.url
    page = new_page()
    log_in(page, url, labeler.username, PASSWORD)

    # N starts a battle on a pool prompt; the page polls while both models write.
    page.goto(f"{url}/p/{project.slug}/arena/")
    page.keyboard.press("n")
    page.wait_for_url(f"{url}/p/{project.slug}/arena/*/")
    page.evaluate("window.__samePage = 'yes'")
    page.locator("#task[data-battle-status=ready]").wait_for(timeout=REPLY_TIMEOUT_MS)
    task = page.locator("#task")
    assert task.locator("article.response").count() == 2
    assert "What is a reward model?" in task.inner_text()
    for name in NAMES:
        assert name not in page.content()

    # 2 votes for Model B; the answer swaps in place and reveals both names.
    page.keyboard.press("2")
    page.locator("[data-revealed]").wait_for()

    assert page.evaluate("window.__samePage") == "yes"
    battle = ArenaBattle.objects.select_related("version_a", "version_b").get(labeler=labeler)
    revealed = page.locator("[data-revealed]").inner_text()
    assert f"Model A was {battle.version_a.name}" in revealed
    assert f"Model B was {battle.version_b.name}" in revealed
    assert battle.status == "voted"
    judgment = Judgment.objects.get(labeler=labeler)
    assert (judgment.kind, judgment.choice) == ("arena", "b")
    assert judgment.shown_order == [battle.response_a_id, battle.response_b_id]
    assert battle.judgment == judgment
    assert judgment.time_spent_ms > 0


def test_while_typing_a_prompt_no_one_key_hint_is_offered(live_server, new_page):
    project = make_project("browser-arena-hints")
    labeler = make_member(project, Role.LABELER, "arena-hint-labeler")
    make_prompt(project, "What is a reward model?")
    for name in NAMES:
        make_version(name)
    page = new_page()
    log_in(page, live_server.url, labeler.username, PASSWORD)
    page.goto(f"{live_server.url}/p/{project.slug}/arena/")
    one_key_hints = page.locator("#task kbd", has_text=re.compile(r"^[NP]$"))
    ctrl_hint = page.locator("#task kbd", has_text="Ctrl")
    typing_hint = page.get_by_text("Typing your prompt")
    assert one_key_hints.count() == 2
    assert all(hint.is_visible() for hint in one_key_hints.all())
    assert typing_hint.is_hidden()

    # P puts the cursor in the prompt box: N and P would be typed, so they are not offered.
    page.keyboard.press("p")
    page.wait_for_function("document.activeElement?.id === 'arena-prompt'")
    page.keyboard.type("Name a planet.")
    assert not any(hint.is_visible() for hint in one_key_hints.all())
    assert ctrl_hint.is_visible() and typing_hint.is_visible()
    # Escape gives the keys and their hints back; nothing was started meanwhile.
    page.keyboard.press("Escape")
    assert all(hint.is_visible() for hint in one_key_hints.all())
    assert typing_hint.is_hidden()
    assert page.locator("#arena-prompt").input_value() == "Name a planet."
    assert not ArenaBattle.objects.filter(labeler=labeler).exists()
