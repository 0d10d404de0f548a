"""A project's guidelines: versions published by admins, read by every member, shown beside
each task (open on the first visit to a version) and recorded on each human judgment."""

import uuid

import pytest

from annotation.chat.services import chat_start
from annotation.models import Guidelines, Judgment, Membership, Role
from annotation.projects.guidelines import (
    MAX_GUIDELINES_CHARS,
    guidelines_mark_seen,
    guidelines_publish,
)
from annotation.projects.selectors import guidelines_history, latest_guidelines
from config.errors import ServiceError
from models_registry.services import ensure_base_model_from_folder
from tests.annotation.arena.test_arena import NAMES, _ready, _vote
from tests.annotation.chat.test_chat import _pick, _say_and_answer
from tests.factories import judge, make_member, make_prompt, make_task

# --- publishing ---------------------------------------------------------------------------


def test_each_publish_adds_the_next_version(project, admin_member):
    first = guidelines_publish(
        project=project, text="Prefer *honest* replies.", author=admin_member
    )
    second = guidelines_publish(
        project=project, text="Prefer honest replies.\r\nThen helpful.\n", author=admin_member
    )

    assert (first.version, second.version) == (1, 2)
    assert second.text == "Prefer honest replies.\nThen helpful."
    assert second.created_by == admin_member
    assert latest_guidelines(project) == second


def test_history_is_newest_first_with_a_diff_to_the_previous_version(project, admin_member):
    guidelines_publish(project=project, text="Rule one.\nRule two.", author=admin_member)
    guidelines_publish(project=project, text="Rule one.\nRule three.", author=admin_member)

    history = guidelines_history(project)

    assert [entry["guidelines"].version for entry in history] == [2, 1]
    changed = [pair for pair in history[0]["diff"] if pair[0] in {"add", "remove"}]
    assert changed == [("remove", "-Rule two."), ("add", "+Rule three.")]
    assert ("add", "+Rule one.") in history[1]["diff"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "The guidelines are empty"),
        ("  \n\t ", "The guidelines are empty"),
        ("Be kind.\x00", "NUL character"),
        ("x" * (MAX_GUIDELINES_CHARS + 1), "too long"),
        (None, "must be text"),
        (["Be kind."], "must be text"),
        ("Be kind.", "Nothing changed since version 1"),
        ("Be kind.\r\n", "Nothing changed since version 1"),
    ],
)
def test_bad_or_unchanged_text_is_refused_and_nothing_is_stored(
    project, admin_member, text, message
):
    guidelines_publish(project=project, text="Be kind.", author=admin_member)

    with pytest.raises(ServiceError, match=message):
        guidelines_publish(project=project, text=text, author=admin_member)

    assert list(Guidelines.objects.values_list("version", "text")) == [(1, "Be kind.")]


def test_seen_never_moves_back(project, labeler):
    assert guidelines_mark_seen(project=project, user=labeler, version=3) is True
    assert guidelines_mark_seen(project=project, user=labeler, version=3) is False
    assert guidelines_mark_seen(project=project, user=labeler, version=2) is False
    assert Membership.objects.get(user=labeler).guidelines_seen == 3


# --- the page and the API -----------------------------------------------------------------


def test_an_admin_publishes_from_the_page_and_sees_the_history(login, project, admin_member):
    client = login(admin_member)

    published = client.post(
        f"/p/{project.slug}/guidelines/", {"action": "publish", "text": "# Rules\nBe **brief**."}
    )
    page = client.get(f"/p/{project.slug}/guidelines/")

    assert published.status_code == 302
    html = page.content.decode()
    assert "<strong>brief</strong>" in html
    assert 'data-version="1"' in html
    assert "Publish as version 2" in html


def test_a_refused_publish_from_the_page_says_why_and_stores_nothing(login, project, admin_member):
    answer = login(admin_member).post(
        f"/p/{project.slug}/guidelines/", {"action": "publish", "text": "   "}
    )

    assert answer.status_code == 400
    assert "The guidelines are empty" in answer.content.decode()
    assert not Guidelines.objects.exists()


def test_the_preview_renders_safe_html_and_stores_nothing(login, project, admin_member):
    answer = login(admin_member).post(
        f"/p/{project.slug}/guidelines/",
        {"action": "preview", "text": "Be *kind* <script>alert(1)</script>"},
        HTTP_HX_REQUEST="true",
    )

    html = answer.content.decode()
    assert answer.status_code == 200
    assert html.strip().startswith('<div id="guidelines-preview"')
    assert "<em>kind</em>" in html
    assert "<script>" not in html
    assert not Guidelines.objects.exists()


def test_a_labeler_reads_the_current_version_but_sees_no_editor(
    login, project, admin_member, labeler
):
    guidelines_publish(project=project, text="Old rule.", author=admin_member)
    guidelines_publish(project=project, text="New rule.", author=admin_member)

    html = login(labeler).get(f"/p/{project.slug}/guidelines/").content.decode()

    assert "New rule." in html
    assert "Old rule." not in html
    assert "<textarea" not in html


def test_the_api_gives_the_current_version_and_publishes_for_admins(
    login, project, admin_member, labeler
):
    url = f"/api/projects/{project.slug}/guidelines/"
    client = login(admin_member)

    empty = client.get(url)
    created = client.post(url, {"text": "Be brief."}, content_type="application/json")
    refused = client.post(url, {"text": "Be brief."}, content_type="application/json")
    listed = login(labeler).get(url)

    assert empty.json() == {"current": None, "versions": []}
    assert created.status_code == 201
    assert created.json()["version"] == 1
    assert refused.status_code == 400
    assert "Nothing changed since version 1" in refused.json()["detail"]
    assert listed.json()["current"]["text"] == "Be brief."
    assert listed.json()["current"]["created_by"] == "adm"
    assert [item["version"] for item in listed.json()["versions"]] == [1]


def test_a_labeler_cannot_publish_through_the_api(login, project, labeler):
    answer = login(labeler).post(
        f"/api/projects/{project.slug}/guidelines/",
        {"text": "Mine."},
        content_type="application/json",
    )

    assert answer.status_code == 403
    assert not Guidelines.objects.exists()


# --- beside the task ----------------------------------------------------------------------


def _panel(client, project) -> str:
    html = client.get(f"/p/{project.slug}/label/").content.decode()
    start = html.find('<details class="guidelines')
    return html[start : html.find(">", start) + 1] if start >= 0 else ""


def test_the_label_page_opens_a_new_version_once_then_collapses_it(
    login, project, admin_member, labeler
):
    make_task(project)
    client = login(labeler)
    assert _panel(client, project) == ""  # no guidelines yet

    guidelines_publish(project=project, text="Rule one.", author=admin_member)
    first, second = _panel(client, project), _panel(client, project)
    guidelines_publish(project=project, text="Rule two.", author=admin_member)
    after_new_version = _panel(client, project)

    assert 'data-version="1" open>' in first
    assert second.endswith('data-version="1">')
    assert 'data-version="2" open>' in after_new_version
    assert Membership.objects.get(user=labeler).guidelines_seen == 2


def test_a_judgment_records_the_version_it_was_made_under(login, project, admin_member, labeler):
    make_task(project)
    make_task(project)
    client = login(labeler)
    before = judge(make_task(project), labeler)  # no guidelines then
    guidelines_publish(project=project, text="Rule one.", author=admin_member)
    current = client.get(f"/p/{project.slug}/label/").context["assignment"]

    client.post(
        f"/p/{project.slug}/label/",
        {"assignment_id": current.pk, "choice": "left", "client_id": str(uuid.uuid4())},
    )

    made = Judgment.objects.exclude(pk=before.pk).get(labeler=labeler)
    assert made.guidelines.version == 1
    assert Judgment.objects.get(pk=before.pk).guidelines is None


@pytest.fixture
def chat_session(project, labeler, tiny_model_dir):
    version = ensure_base_model_from_folder(name="tiny-chat", path=tiny_model_dir)
    return chat_start(project=project, labeler=labeler, model_version_id=version.pk)


@pytest.fixture
def battle(project, labeler, tiny_model_dir):
    for name in NAMES:
        ensure_base_model_from_folder(name=name, path=tiny_model_dir)
    make_prompt(project, "What is RLHF?")
    return _ready(project, labeler)


def test_a_chat_pick_records_the_version(project, admin_member, chat_session):
    published = guidelines_publish(project=project, text="Rule one.", author=admin_member)
    _say_and_answer(chat_session)

    judgment = _pick(chat_session, "left")

    assert judgment.guidelines == published


def test_an_arena_vote_records_the_version(project, admin_member, battle):
    published = guidelines_publish(project=project, text="Rule one.", author=admin_member)

    judgment = _vote(battle, "a")

    assert judgment.guidelines == published


def test_a_member_of_another_project_cannot_read_these_guidelines(
    login, project, other_project, admin_member
):
    guidelines_publish(project=project, text="Secret rule.", author=admin_member)
    stranger = make_member(other_project, Role.ADMIN, "stranger")

    page = login(stranger).get(f"/p/{project.slug}/guidelines/")

    assert page.status_code == 403
    assert "Secret rule." not in page.content.decode()


def test_the_project_page_shows_each_judgment_s_guidelines_version(
    login, project, admin_member, labeler
):
    judge(make_task(project), labeler)
    published = guidelines_publish(project=project, text="Rule one.", author=admin_member)
    judge(make_task(project), labeler, guidelines=published)

    html = login(admin_member).get(f"/p/{project.slug}/").content.decode()

    assert html.count("<td>v1</td>") == 1
    assert "<th>Guidelines</th>" in html
