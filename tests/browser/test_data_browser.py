"""The data browser in real headless Chromium: a researcher filters judgments by labeler
(htmx swaps only the table) and opens one, shown in the order its labeler saw it; an admin
deletes a prompt with a reason (its pending assignment expires), finds it again with Show
deleted and restores it."""

import pytest
from playwright.sync_api import expect

from annotation.labeling.services import assignment_next
from annotation.models import Assignment, Judgment, Prompt, Role
from tests.browser.conftest import log_in
from tests.factories import PASSWORD, judge, make_member, make_project, make_task

pytestmark = [pytest.mark.postgres, pytest.mark.browser, pytest.mark.timeout(120)]


def _by_column(page):
    return page.locator("#browse-table tbody tr td:nth-child(4)")


def test_a_researcher_filters_by_labeler_and_opens_a_judgment(live_server, new_page):
    project = make_project("browse-judgments")
    researcher = make_member(project, Role.RESEARCHER, "browse-researcher")
    ann = make_member(project, Role.LABELER, "browse-ann")
    bob = make_member(project, Role.LABELER, "browse-bob")
    tasks = [make_task(project, texts=(f"First {n}.", f"Second {n}.")) for n in range(3)]
    judge(tasks[0], bob)
    judge(tasks[1], bob)
    mine = judge(tasks[2], ann)
    judge(tasks[0], ann)
    first, second = mine.response_a_id, mine.response_b_id
    Judgment.objects.filter(pk=mine.pk).update(shown_order=[second, first])

    page = new_page()
    log_in(page, live_server.url, researcher.username, PASSWORD)
    page.goto(f"{live_server.url}/p/{project.slug}/data/browse/")
    expect(_by_column(page)).to_have_count(4)
    page.evaluate("window.notReloaded = true")

    page.get_by_label("Labeler (username)").fill(ann.username)
    page.get_by_role("button", name="Filter").click()
    expect(_by_column(page)).to_have_text([ann.username, ann.username])
    page.wait_for_url("**labeler=browse-ann**")
    assert page.evaluate("window.notReloaded") is True  # only the table was swapped
    ids = page.locator("#browse-table tbody tr td:first-child").all_inner_texts()
    expected = Judgment.objects.filter(labeler=ann).order_by("-id").values_list("pk", flat=True)
    assert [int(pk) for pk in ids] == list(expected)

    page.get_by_role("link", name=str(mine.pk), exact=True).click()
    page.wait_for_url(f"**/p/{project.slug}/data/judgments/{mine.pk}/")
    shown = page.locator("ol.shown-order article.response")
    expect(shown).to_have_count(2)
    assert [shown.nth(i).get_attribute("data-response") for i in range(2)] == [
        str(second),
        str(first),
    ]
    expect(shown.nth(0).locator("h3")).to_contain_text(f"1. Response {second} (B)")
    expect(shown.nth(0)).to_contain_text("Second 2.")
    expect(shown.nth(1)).to_contain_text("First 2.")


def test_an_admin_deletes_a_prompt_finds_it_with_show_deleted_and_restores_it(
    live_server, new_page
):
    project = make_project("browse-delete")
    admin = make_member(project, Role.ADMIN, "browse-admin")
    labeler = make_member(project, Role.LABELER, "browse-labeler")
    doomed = make_task(project, texts=("Doomed one.", "Doomed two."))
    kept = make_task(project, texts=("Kept one.", "Kept two."))
    Prompt.objects.filter(pk=doomed.prompt_id).update(text="Spam prompt to delete")
    held = assignment_next(project=project, labeler=labeler)
    assert held.task_id == doomed.pk  # the older task is handed first

    page = new_page()
    log_in(page, live_server.url, admin.username, PASSWORD)
    page.goto(f"{live_server.url}/p/{project.slug}/data/browse/?tab=prompts")
    row = page.locator("#browse-table tbody tr", has_text="Spam prompt to delete")
    row.get_by_label("Reason").fill("Spam, not a real question")
    row.get_by_role("button", name="Delete").click()

    page.get_by_text(f"Prompt {doomed.prompt_id} deleted").wait_for()
    expect(row).to_have_count(0)
    expect(page.locator("#browse-table tbody tr")).to_have_count(1)
    prompt = Prompt.objects.get(pk=doomed.prompt_id)
    assert prompt.deleted_at is not None and prompt.deleted_by == admin
    assert prompt.delete_reason == "Spam, not a real question"
    held.refresh_from_db()
    assert held.status == Assignment.Status.EXPIRED
    handed = assignment_next(project=project, labeler=labeler)
    assert handed.task_id == kept.pk  # the queue no longer hands the deleted prompt's task

    page.get_by_label("Show deleted").check()
    page.get_by_role("button", name="Filter").click()
    expect(row).to_have_count(1)
    expect(row).to_have_class("deleted")
    expect(row).to_contain_text("Spam, not a real question")
    expect(row).to_contain_text(f"by {admin.username}")

    row.get_by_role("button", name="Restore").click()
    page.get_by_text(f"Prompt {doomed.prompt_id} restored.").wait_for()
    expect(row).to_have_count(1)
    expect(row).not_to_have_class("deleted")
    expect(row.get_by_role("button", name="Delete")).to_be_visible()
    prompt.refresh_from_db()
    assert (prompt.deleted_at, prompt.deleted_by, prompt.delete_reason) == (None, None, "")
