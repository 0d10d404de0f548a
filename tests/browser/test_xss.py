"""Prompts and responses are data, never code: hostile text stays inert in real Chromium
on every page that shows it, and in the REST payload's rendered `html`."""

from html.parser import HTMLParser

import pytest

from annotation.models import Role
from tests.browser.conftest import log_in
from tests.factories import PASSWORD, make_member, make_project, make_prompt, make_task

pytestmark = [pytest.mark.postgres, pytest.mark.browser, pytest.mark.timeout(300)]

SCRIPT = "<script>window.__xss=1</script>"
IMG = '<img src=x onerror="window.__xss=2">'
MARKDOWN_LINK = "[x](javascript:window.__xss=3)"
IFRAME = '<iframe src="javascript:window.__xss=4"></iframe>'
SRCDOC = '<iframe srcdoc="<script>parent.__xss=5</script>"></iframe>'
HTMX = '<div hx-get="/logout/" hx-trigger="load">htmx</div>'
RAW_LINK = '<a href="javascript:window.__xss=6">raw link</a>'
PAYLOADS = (SCRIPT, IMG, MARKDOWN_LINK, IFRAME, SRCDOC, HTMX, RAW_LINK)
# Each payload on its own paragraph, the script first so truncated listings show it too.
HOSTILE = "\n\n".join(PAYLOADS)

# Every element that could run the data, in the page and in <template> contents (the
# prefetched next task): inline scripts, event handlers, frames, javascript: links, htmx.
FIND_ACTIVE_CONTENT = """
() => {
  const roots = [document, ...[...document.querySelectorAll("template")].map(t => t.content)];
  const found = [];
  for (const root of roots) {
    for (const el of root.querySelectorAll("*")) {
      const tag = el.tagName.toLowerCase();
      if (tag === "script" && !(el.getAttribute("src") || "").startsWith("/static/")) {
        found.push(el.outerHTML);
      }
      if (["iframe", "frame", "object", "embed"].includes(tag)) found.push(el.outerHTML);
      if (tag === "img" && el.hasAttribute("onerror")) found.push(el.outerHTML);
      for (const attr of el.attributes) {
        const value = attr.value.trim().toLowerCase();
        if (attr.name.startsWith("on") || attr.name === "srcdoc") found.push(el.outerHTML);
        if (value.startsWith("javascript:")) found.push(el.outerHTML);
        if (attr.name.startsWith("hx-") && el.closest(".markdown")) found.push(el.outerHTML);
      }
    }
  }
  return found;
}
"""


class _TagCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, list]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))


def _tags(html: str) -> list[tuple[str, list]]:
    collector = _TagCollector()
    collector.feed(html)
    collector.close()
    return collector.tags


def _assert_inert(page) -> None:
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.evaluate("typeof window.parent.__xss") == "undefined"
    assert page.evaluate(FIND_ACTIVE_CONTENT) == []


def _click_the_links(page, scope: str) -> None:
    """Click whatever the markdown and raw links became (anchors or plain text)."""
    for text in ("javascript:window.__xss=3", "raw link"):
        page.locator(scope).get_by_text(text).first.click()
    for anchor in page.locator(f"{scope} a").all():
        anchor.click()
    page.wait_for_timeout(100)


def _visible_text(page, selector: str) -> str:
    return " ".join(page.locator(selector).all_inner_texts())


@pytest.fixture
def hostile_project(live_server):
    project = make_project("hostile")
    project.description = HOSTILE
    project.gold_rate = 0
    project.save(update_fields=["description", "gold_rate"])
    admin = make_member(project, Role.ADMIN, "xss-admin")
    for number in range(2):
        prompt = make_prompt(project, f"{HOSTILE}\n\nprompt {number}")
        make_task(project, prompt=prompt, texts=(f"{HOSTILE}\n\nleft", f"{HOSTILE}\n\nright"))
    return project, admin


def test_hostile_prompts_and_responses_stay_text_on_the_label_page(
    live_server, hostile_project, new_page
):
    project, admin = hostile_project
    page = new_page()
    log_in(page, live_server.url, admin.username, PASSWORD)

    page.goto(f"{live_server.url}/p/{project.slug}/label/")
    page.wait_for_load_state("load")

    _assert_inert(page)
    for selector in ("#task .prompt", "#task article.response"):
        shown = _visible_text(page, selector)
        for payload in PAYLOADS:
            assert payload in shown, (selector, payload)
    assert page.locator("#task article.response").count() == 2
    _click_the_links(page, "#task")
    _assert_inert(page)
    assert page.url == f"{live_server.url}/p/{project.slug}/label/"

    # The prefetched task swaps in from its <template>: still text.
    before = page.locator("#task input[name=assignment_id]").first.get_attribute("value")
    page.keyboard.press("1")
    page.wait_for_function(
        "old => document.querySelector('#task input[name=assignment_id]')?.value !== old",
        arg=before,
    )
    _assert_inert(page)
    assert SCRIPT in _visible_text(page, "#task .prompt")
    _click_the_links(page, "#task")
    _assert_inert(page)


def test_hostile_text_stays_text_on_the_project_and_prompts_pages(
    live_server, hostile_project, new_page, client
):
    project, admin = hostile_project
    # A judgment, so the project page lists the hostile prompt among recent judgments.
    client.force_login(admin)
    task = client.get(f"/api/projects/{project.slug}/tasks/next/").json()
    posted = client.post(
        f"/api/projects/{project.slug}/judgments/",
        {"assignment_id": task["assignment_id"], "choice": "left",
         "client_id": "0b3f2d0e-7d5e-4a51-9d0e-2f1b7f0f5a11"},
        content_type="application/json",
    )  # fmt: skip
    assert posted.status_code == 201, posted.content
    page = new_page()
    log_in(page, live_server.url, admin.username, PASSWORD)

    page.goto(f"{live_server.url}/p/{project.slug}/")
    _assert_inert(page)
    assert SCRIPT in _visible_text(page, "main")  # the description and the judged prompt
    assert page.locator("main table tbody tr").count() == 1

    page.goto(f"{live_server.url}/p/{project.slug}/prompts/")
    _assert_inert(page)
    assert _visible_text(page, "main table tbody").count(SCRIPT) == 2


def test_the_rest_payload_html_is_inert_even_when_put_into_a_page(
    live_server, hostile_project, new_page, client
):
    project, admin = hostile_project
    client.force_login(admin)

    answer = client.get(f"/api/projects/{project.slug}/tasks/next/")

    assert answer.status_code == 200
    task = answer.json()
    assert task["prompt"]["text"].startswith(SCRIPT)  # the raw text, as JSON data
    fragments = [response["html"] for response in task["responses"]]
    for html in fragments:
        assert _tags(html) == [("p", [])] * (len(PAYLOADS) + 1)  # paragraphs of text only
        assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html

    # A client that drops the html straight into its page gets text, not code.
    page = new_page()
    page.set_content("<main>" + "".join(f"<article>{html}</article>" for html in fragments))
    page.wait_for_load_state("load")
    _assert_inert(page)
    shown = _visible_text(page, "main")
    for payload in PAYLOADS:
        assert payload in shown
    _click_the_links(page, "main")
    _assert_inert(page)
