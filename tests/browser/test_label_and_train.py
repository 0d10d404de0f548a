"""A labeler votes with the keyboard and an admin trains DPO, in real headless Chromium."""

import pytest

from annotation.candidates.models import GenerationJob
from annotation.models import Assignment, Judgment, Role
from models_registry.models import ModelVersion
from models_registry.services import ensure_base_model_from_folder
from tests.browser.conftest import log_in
from tests.factories import PASSWORD, make_member, make_project, make_task
from tests.worker_fixtures import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.browser, pytest.mark.timeout(600)]


def _current_assignment_id(page) -> str:
    return page.locator("form[data-keyboard-form] input[name=assignment_id]").get_attribute("value")


def _pick_method(page, method: str) -> None:
    """Choose a training method and wait until htmx has swapped in and settled its form."""
    page.evaluate(
        "() => { window.__settled = false; document.body.addEventListener("
        "'htmx:afterSettle', () => { window.__settled = true; }, {once: true}); }"
    )
    page.select_option("select[name=method]", method)
    page.wait_for_function("window.__settled === true")


def test_keyboard_labeling_then_browser_training_closes_the_loop(
    live_server, celery_worker_process, tiny_model_dir, new_page, settings
):
    project = make_project("browser-loop")
    admin = make_member(project, Role.ADMIN, "browser-admin")
    labeler = make_member(project, Role.LABELER, "browser-labeler")
    base = ensure_base_model_from_folder(name="tiny-base", path=tiny_model_dir)
    for number in range(3):
        make_task(project, texts=(f"Short answer {number}.", f"A much longer answer {number}."))
    url = live_server.url

    # Step 3: the labeler votes with keys only; each vote swaps in the next task in place.
    page = new_page()
    log_in(page, url, labeler.username, PASSWORD)
    page.goto(f"{url}/p/{project.slug}/label/")
    page.evaluate("window.__samePage = 'yes'")
    for key in ["1", "8", "t"]:
        before = _current_assignment_id(page)
        page.keyboard.press(key)
        if key == "t":
            page.get_by_text("Nothing to label right now").wait_for()
        else:
            page.wait_for_function(
                "old => document.querySelector('input[name=assignment_id]')?.value !== old",
                arg=before,
            )
    page.locator("#answer-status", has_text="Saved.").wait_for()
    assert page.evaluate("window.__samePage") == "yes"  # no full page load happened
    judgments = list(Judgment.objects.filter(labeler=labeler).order_by("id"))
    assert [j.choice for j in judgments][2] == "tie"
    assert all(j.time_spent_ms >= 0 and len(j.shown_order) == 2 for j in judgments)
    first_left = Assignment.objects.get(task=judgments[0].task).shown_order[0]
    assert judgments[0].choice == ("a" if first_left == judgments[0].response_a_id else "b")

    # Step 5: the admin starts DPO from the browser and watches it finish live.
    admin_page = new_page()
    log_in(admin_page, url, admin.username, PASSWORD)
    # Picking a method swaps in its own settings without a page load.
    admin_page.goto(f"{url}/p/{project.slug}/training/")
    admin_page.evaluate("window.__samePage = 'yes'")
    _pick_method(admin_page, "ppo")
    assert admin_page.locator("select[name=reward_version]").count() == 1
    assert admin_page.locator("input[name=beta]").count() == 0
    _pick_method(admin_page, "dpo")
    assert admin_page.locator("input[name=beta]").count() == 1
    assert admin_page.evaluate("window.__samePage") == "yes"
    assert not admin_page.locator("input[name=sft_first]").is_checked()  # DPO alone: default
    admin_page.select_option("select[name=base_version]", str(base.pk))
    admin_page.fill("input[name=max_steps]", "3")
    admin_page.click("button:has-text('Start training')")
    admin_page.wait_for_url(f"{url}/p/{project.slug}/training/*/")
    admin_page.locator("#run-status[data-status=succeeded]").wait_for(timeout=240_000)
    dpo_chart = admin_page.locator("figure[data-metric=dpo_loss] polyline")
    assert dpo_chart.get_attribute("data-points") == "3"
    assert "Registered model version" in admin_page.locator("#run-status").inner_text()

    # The new version's answers reach the labeler's queue.
    version = ModelVersion.objects.get(parent=base)

    def generated():
        job = GenerationJob.objects.filter(model_version=version).first()
        return job and job.status == GenerationJob.Status.SUCCEEDED

    wait_for(generated, timeout=180, what="candidates from the trained version")
    page.goto(f"{url}/p/{project.slug}/label/")
    assignment = Assignment.objects.get(pk=_current_assignment_id(page))
    shown = {response.model_version_id for response in assignment.shown_responses()}
    assert version.pk in shown
    assert page.locator("article.response").count() == 2
