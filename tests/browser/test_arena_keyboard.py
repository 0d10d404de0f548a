"""A labeler fights an arena battle through the real gpu worker, with the keyboard only."""

import pytest

from annotation.models import ArenaBattle, Judgment, Role
from models_registry.services import ensure_base_model_from_folder
from tests.browser.conftest import log_in
from tests.factories import PASSWORD, make_member, make_project, make_prompt

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
