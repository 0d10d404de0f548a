"""Chat labeling: services, the interactive task on a tiny model, pages and API, permissions."""

import uuid

import pytest

from annotation.chat import selectors, services
from annotation.chat.tasks import chat_replies_generate_task
from annotation.models import ChatSession, ChatTurn, Judgment, Prompt, Response, Role
from config.celery import QueueUnavailable
from config.errors import Conflict, ServiceError
from models_registry.models import ModelVersion
from models_registry.services import ensure_base_model_from_folder
from tests.factories import make_member, make_version

FAST = {"max_new_tokens": 4}


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def tiny_version(db, tiny_model_dir):
    return ensure_base_model_from_folder(name="tiny-chat", path=tiny_model_dir)


@pytest.fixture
def session(project, labeler, tiny_version):
    return services.chat_start(project=project, labeler=labeler, model_version_id=tiny_version.pk)


def _send(session, text="Hello there", **extra):
    return services.chat_message_send(
        project=session.project,
        labeler=session.labeler,
        session_id=session.pk,
        text=text,
        params=FAST,
        **extra,
    )


def _say_and_answer(session, text="Hello there"):
    """The labeler's message, then the worker's job run in this process."""
    turn = _send(session, text)
    services.chat_replies_generate(turn_id=turn.pk)
    session.refresh_from_db()
    return selectors.chat_turn_open(session=session)


def _pick(session, choice, client_id=None, **extra):
    return services.chat_reply_pick(
        project=session.project,
        labeler=session.labeler,
        session_id=session.pk,
        choice=choice,
        client_id=client_id or uuid.uuid4(),
        **extra,
    )


def _finish(session, rating, comment=""):
    return services.chat_finish(
        project=session.project,
        labeler=session.labeler,
        session_id=session.pk,
        rating=rating,
        comment=comment,
    )


# --- services -------------------------------------------------------------------------


def test_start_opens_an_empty_chat_with_the_chosen_model(project, labeler, tiny_version):
    session = services.chat_start(
        project=project, labeler=labeler, model_version_id=tiny_version.pk
    )

    assert (session.labeler, session.model_version, session.messages) == (
        labeler,
        tiny_version,
        [],
    )
    assert not session.finished


@pytest.mark.parametrize("raw", [None, "", "abc", 999_999, "reward", "retired"])
def test_start_refuses_anything_but_a_live_policy(project, labeler, raw):
    reward = ModelVersion.objects.create(
        name="rm", model_id="rm", method="base", kind=ModelVersion.Kind.REWARD, base_path="/x"
    )
    retired = ModelVersion.objects.create(
        name="old", model_id="old", method="base", state=ModelVersion.State.RETIRED, base_path="/x"
    )
    model_version_id = {"reward": reward.pk, "retired": retired.pk}.get(raw, raw)

    with pytest.raises(ServiceError, match="Choose a model"):
        services.chat_start(project=project, labeler=labeler, model_version_id=model_version_id)
    assert ChatSession.objects.count() == 0


def test_a_message_opens_a_turn_and_queues_its_replies_after_commit(
    session, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        sent = _send(session, "  What is DPO?  ")

    session.refresh_from_db()
    assert session.messages == [{"role": "user", "content": "What is DPO?"}]
    assert len(callbacks) == 1
    prompt = sent.prompt
    assert prompt.project == session.project
    assert prompt.text == "What is DPO?"
    assert prompt.metadata == {"chat_session": session.pk}
    assert (sent.session, sent.message_index, sent.status) == (session, 0, "queued")
    assert sent.generation_params["max_new_tokens"] == 4
    turn = selectors.chat_turn_open(session=session)
    assert (turn.prompt, turn.status, turn.replies) == (prompt, "queued", [])


def test_the_task_writes_two_replies_with_a_tiny_model(session, tiny_version):
    sent = _send(session)
    prompt = sent.prompt

    chat_replies_generate_task.apply(args=[sent.pk])
    chat_replies_generate_task.apply(args=[sent.pk])  # a redelivered message does nothing

    replies = list(Response.objects.filter(prompt=prompt).order_by("sample_index"))
    assert [r.sample_index for r in replies] == [0, 1]
    assert all(r.model_version == tiny_version for r in replies)
    assert all(r.generation_params["max_new_tokens"] == 4 for r in replies)
    assert all(0 < r.completion_tokens <= 4 for r in replies)
    session.refresh_from_db()
    turn = selectors.chat_turn_open(session=session)
    assert turn.status == "ready"
    assert sorted(r.pk for r in turn.replies) == [r.pk for r in replies]


def test_picks_store_comparisons_with_the_conversation_so_far(session):
    first = _say_and_answer(session, "Hi")
    left, right = first.replies
    picked_first = _pick(session, "right", time_spent_ms=1200)

    second = _say_and_answer(session, "Tell me more")
    picked_second = _pick(session, "left")

    session.refresh_from_db()
    assert session.messages == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": right.text},
        {"role": "user", "content": "Tell me more"},
        {"role": "assistant", "content": second.replies[0].text},
    ]
    assert picked_first.kind == "comparison"
    assert picked_first.chat_session == session
    assert picked_first.task is None
    assert picked_first.labeler == session.labeler
    assert picked_first.prompt == first.prompt
    assert picked_first.context == []
    assert picked_first.shown_order == [left.pk, right.pk]
    assert (picked_first.response_a.sample_index, picked_first.response_b.sample_index) == (0, 1)
    assert picked_first.choice == ("a" if right.sample_index == 0 else "b")
    assert picked_first.chosen_and_rejected == (right, left)
    assert picked_first.time_spent_ms == 1200
    assert picked_second.context == session.messages[:2]
    assert picked_second.chosen_and_rejected[0] == second.replies[0]
    assert selectors.chat_turn_open(session=session) is None


@pytest.mark.parametrize("choice", ["tie", "both_bad"])
def test_tie_and_both_bad_are_stored_and_continue_with_the_left_reply(session, choice):
    turn = _say_and_answer(session)

    judgment = _pick(session, choice)

    session.refresh_from_db()
    assert judgment.choice == choice
    assert judgment.chosen_and_rejected is None
    assert session.messages[-1] == {"role": "assistant", "content": turn.replies[0].text}


def test_the_same_client_id_twice_stores_one_judgment(session):
    _say_and_answer(session)
    client_id = uuid.uuid4()

    first = _pick(session, "left", client_id=client_id)
    second = _pick(session, "left", client_id=str(client_id))

    assert first.pk == second.pk
    assert Judgment.objects.count() == 1
    session.refresh_from_db()
    assert len(session.messages) == 2


def test_a_second_pick_of_the_same_turn_is_a_conflict(session):
    _say_and_answer(session)
    _pick(session, "left")

    with pytest.raises(Conflict, match="no reply to pick"):
        _pick(session, "right")
    assert Judgment.objects.count() == 1


def test_picking_before_the_replies_exist_is_refused(session):
    with pytest.raises(Conflict, match="write a message first"):
        _pick(session, "left")
    _send(session)
    with pytest.raises(Conflict, match="not there yet"):
        _pick(session, "left")

    assert Judgment.objects.count() == 0
    session.refresh_from_db()
    assert len(session.messages) == 1


BAD_PICKS = [
    ("middle", uuid.uuid4(), 0, "choice must be one of"),
    ("", uuid.uuid4(), 0, "choice must be one of"),
    ("left", "not-a-uuid", 0, "client_id must be a UUID"),
    ("left", None, 0, "client_id must be a UUID"),
    ("left", uuid.uuid4(), -1, "time_spent_ms"),
    ("left", uuid.uuid4(), "5", "time_spent_ms"),
]


def test_a_bad_pick_is_refused_and_stores_nothing(session):
    _say_and_answer(session)

    for choice, client_id, time_spent_ms, message in BAD_PICKS:
        with pytest.raises(ServiceError, match=message):
            services.chat_reply_pick(
                project=session.project,
                labeler=session.labeler,
                session_id=session.pk,
                choice=choice,
                client_id=client_id,
                time_spent_ms=time_spent_ms,
            )
    assert Judgment.objects.count() == 0
    session.refresh_from_db()
    assert len(session.messages) == 1


@pytest.mark.parametrize(
    ("text", "params", "message"),
    [
        ("", None, "Write a message"),
        ("   \n ", None, "Write a message"),
        (None, None, "Write a message"),
        (["hi"], None, "Write a message"),
        ("x" * (services.MAX_MESSAGE_CHARS + 1), None, "under 8000 characters"),
        ("hi", {"temperature": 0}, "Bad generation parameters"),
        ("hi", {"top_z": 1}, "Bad generation parameters"),
    ],
)
def test_a_bad_message_is_refused_and_stores_nothing(session, text, params, message):
    with pytest.raises(ServiceError, match=message):
        services.chat_message_send(
            project=session.project,
            labeler=session.labeler,
            session_id=session.pk,
            text=text,
            params=params,
        )
    session.refresh_from_db()
    assert session.messages == []
    assert Prompt.objects.count() == 0


def test_a_second_message_waits_for_the_pick(session):
    _send(session, "one")

    with pytest.raises(Conflict, match="Pick one of the model's replies"):
        _send(session, "two")
    session.refresh_from_db()
    assert [m["content"] for m in session.messages] == ["one"]
    assert Prompt.objects.count() == 1


def test_finishing_stores_the_rating_and_comment_and_closes_the_chat(session):
    _say_and_answer(session)
    _pick(session, "left")

    finished = _finish(session, "6", "  Friendly but vague.  ")

    session.refresh_from_db()
    assert (session.finished, session.rating, session.comment) == (
        True,
        6,
        "Friendly but vague.",
    )
    assert finished.pk == session.pk
    with pytest.raises(Conflict, match="finished"):
        _send(session, "one more")
    with pytest.raises(Conflict, match="finished"):
        _finish(session, 7)
    session.refresh_from_db()
    assert (len(session.messages), session.rating) == (2, 6)


def test_a_rating_outside_1_to_7_is_refused(session):
    _say_and_answer(session)
    _pick(session, "left")

    for rating in (0, 8, -1, "x", "", None, 3.5, "3.5", True):
        with pytest.raises(ServiceError, match="from 1 .bad. to 7"):
            _finish(session, rating)
    session.refresh_from_db()
    assert (session.finished, session.rating) == (False, None)


def test_finishing_needs_a_picked_reply_and_a_short_comment(session):
    with pytest.raises(ServiceError, match="Pick at least one reply"):
        _finish(session, 5)
    _say_and_answer(session)
    _pick(session, "left")
    with pytest.raises(ServiceError, match="under 5000 characters"):
        _finish(session, 5, "x" * 5001)

    session.refresh_from_db()
    assert (session.finished, session.rating, session.comment) == (False, None, "")


def test_another_labelers_chat_is_refused_everywhere(project, session):
    _say_and_answer(session)
    other = make_member(project, Role.LABELER, "other-labeler")
    admin = make_member(project, Role.ADMIN, "other-admin")
    where = {"project": project, "session_id": session.pk}

    for intruder in (other, admin):
        with pytest.raises(selectors.ChatNotFound):
            selectors.chat_session_for(labeler=intruder, **where)
        with pytest.raises(selectors.ChatNotFound):
            services.chat_message_send(labeler=intruder, text="hi", **where)
        with pytest.raises(selectors.ChatNotFound):
            services.chat_reply_pick(
                labeler=intruder, choice="left", client_id=uuid.uuid4(), **where
            )
        with pytest.raises(selectors.ChatNotFound):
            services.chat_finish(labeler=intruder, rating=3, **where)
        with pytest.raises(selectors.ChatNotFound):
            services.chat_replies_retry(labeler=intruder, **where)
    session.refresh_from_db()
    assert len(session.messages) == 1
    assert Judgment.objects.count() == 0
    assert not session.finished


def test_a_chat_of_another_project_is_not_found(session, other_project):
    make_member(other_project, Role.LABELER, "lab-beta")

    with pytest.raises(selectors.ChatNotFound):
        selectors.chat_session_for(
            project=other_project, labeler=session.labeler, session_id=session.pk
        )


def test_a_broken_model_fails_the_turn_and_a_retry_queues_it_again(
    project, labeler, tmp_path, django_capture_on_commit_callbacks
):
    broken = make_version("broken", path=str(tmp_path))
    session = services.chat_start(project=project, labeler=labeler, model_version_id=broken.pk)
    sent = _send(session)

    services.chat_replies_generate(turn_id=sent.pk)

    session.refresh_from_db()
    turn = selectors.chat_turn_open(session=session)
    assert turn.status == "failed"
    assert turn.error
    assert Response.objects.count() == 0
    with pytest.raises(Conflict, match="not there yet"):
        _pick(session, "left")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.chat_replies_retry(project=project, labeler=labeler, session_id=session.pk)
    assert len(callbacks) == 1
    turn = selectors.chat_turn_open(session=session)
    assert (turn.status, turn.error) == ("queued", "")
    with pytest.raises(Conflict, match="Only a failed turn"):
        services.chat_replies_retry(project=project, labeler=labeler, session_id=session.pk)


def test_an_unreachable_broker_is_reported_on_the_turn(
    session, unreachable_broker, django_capture_on_commit_callbacks
):
    with (
        pytest.raises(QueueUnavailable, match="task queue could not be reached"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        _send(session)

    session.refresh_from_db()
    turn = selectors.chat_turn_open(session=session)
    assert turn.status == "failed"
    assert "task queue could not be reached" in turn.error
    assert Response.objects.count() == 0


# --- pages ----------------------------------------------------------------------------

CALLERS = ("anonymous", "outsider", "owner", "labeler", "researcher", "admin")


@pytest.fixture
def caller(request, project, labeler, researcher, admin_member, outsider):
    """Users by name; `owner` is the labeler who owns `session`, `labeler` another one."""
    return {
        "anonymous": None,
        "outsider": outsider,
        "owner": labeler,
        "labeler": make_member(project, Role.LABELER, "second-labeler"),
        "researcher": researcher,
        "admin": admin_member,
    }


@pytest.mark.parametrize("name", CALLERS)
def test_the_start_page_is_for_project_members(login, project, caller, session, name):
    client = login(caller[name])

    response = client.get(f"/p/{project.slug}/chat/")

    expected = {"anonymous": 302, "outsider": 403}.get(name, 200)
    assert response.status_code == expected
    if name == "anonymous":
        assert response["Location"].startswith("/login/")
    if expected == 200:
        html = response.content.decode()
        assert "tiny-chat" in html
        # Each member sees only their own chats.
        assert (f"/p/{project.slug}/chat/{session.pk}/" in html) == (name == "owner")


@pytest.mark.parametrize("name", CALLERS)
def test_starting_a_chat_from_the_page(login, project, caller, tiny_version, name):
    client = login(caller[name])

    response = client.post(f"/p/{project.slug}/chat/", {"model_version": tiny_version.pk})

    if name == "anonymous":
        assert response.status_code == 302
        assert response["Location"].startswith("/login/")
        assert ChatSession.objects.count() == 0
    elif name == "outsider":
        assert response.status_code == 403
        assert ChatSession.objects.count() == 0
    else:
        created = ChatSession.objects.get()
        assert created.labeler == caller[name]
        assert response["Location"] == f"/p/{project.slug}/chat/{created.pk}/"


def test_starting_without_a_model_shows_the_error(login, project, labeler):
    response = login(labeler).post(f"/p/{project.slug}/chat/", {"model_version": "nope"})

    assert response.status_code == 400
    assert "Choose a model" in response.content.decode()
    assert ChatSession.objects.count() == 0


def _session_urls(project, session) -> dict:
    """The routes of one chat by URL name (the finish form is a second GET of the chat's
    page): (method, url, body)."""
    base = f"/p/{project.slug}/chat/{session.pk}/"
    api = f"/api/projects/{project.slug}/chats/{session.pk}/"
    pick = {"choice": "left", "client_id": str(uuid.uuid4())}
    return {
        "chat_session": ("get", base, None),
        "chat_session?finish=1": ("get", f"{base}?finish=1", None),
        "chat_message": ("post", f"{base}message/", {"text": "Hello"}),
        "chat_pick": ("post", f"{base}pick/", pick),
        "chat_retry": ("post", f"{base}retry/", {}),
        "chat_finish": ("post", f"{base}finish/", {"rating": "4"}),
        "api_chat": ("get", api, None),
        "api_chat_message": ("post_json", f"{api}messages/", {"text": "Hello"}),
        "api_chat_pick": ("post_json", f"{api}picks/", pick),
        "api_chat_retry": ("post_json", f"{api}retry/", {}),
        "api_chat_finish": ("post_json", f"{api}finish/", {"rating": 4}),
    }


SESSION_ROUTES = [
    "chat_session",
    "chat_session?finish=1",
    "chat_message",
    "chat_pick",
    "chat_retry",
    "chat_finish",
    "api_chat",
    "api_chat_message",
    "api_chat_pick",
    "api_chat_retry",
    "api_chat_finish",
]
# Every chat route, each checked here for every caller (tests/annotation/test_permissions.py
# holds the annotation table and checks this set against the chat URLs): the start page and
# its form, the chat list API, and the routes of one chat.
CHAT_ROUTES_FOR_EVERY_CALLER = {"chat", "api_chats"} | {
    name.split("?")[0] for name in SESSION_ROUTES
}


@pytest.mark.parametrize("url_name", SESSION_ROUTES)
@pytest.mark.parametrize("name", CALLERS)
def test_a_chat_is_open_to_its_owner_only(login, project, caller, session, name, url_name):
    _send(session)
    method, url, data = _session_urls(project, session)[url_name]
    client = login(caller[name])

    if method == "get":
        response = client.get(url)
    elif method == "post_json":
        response = client.post(url, data, content_type="application/json")
    else:
        response = client.post(url, data)

    is_api = url.startswith("/api/")
    expected = {"anonymous": 401 if is_api else 302, "outsider": 403, "owner": None}.get(name, 404)
    if expected is None:
        # The owner is let in: a page, a redirect after a POST, or an answer about the
        # chat's state (the first message waits for its replies), never a refusal.
        if is_api:
            assert response.status_code not in (401, 403, 404)
        else:
            assert response.status_code in (200, 302)
    else:
        assert response.status_code == expected
        session.refresh_from_db()
        assert len(session.messages) == 1
        assert not session.finished
        assert Judgment.objects.count() == 0


def test_the_pick_page_flow_with_htmx(login, project, labeler, session, monkeypatch):
    monkeypatch.setitem(services.DEFAULT_PARAMS, "max_new_tokens", 4)
    client = login(labeler)
    base = f"/p/{project.slug}/chat/{session.pk}/"
    htmx = {"HTTP_HX_REQUEST": "true"}

    compose = client.get(base).content.decode()
    sent = client.post(f"{base}message/", {"text": "Hi *there*"}, **htmx)
    services.chat_replies_generate(turn_id=ChatTurn.objects.get(session=session).pk)
    ready = client.get(base, **htmx)
    picked = client.post(
        f"{base}pick/", {"choice": "right", "client_id": str(uuid.uuid4())}, **htmx
    )

    assert 'name="text"' in compose and "<kbd>Enter</kbd>" in compose
    assert sent.status_code == 200
    sent_html = sent.content.decode().strip()
    assert sent_html.startswith('<section id="task"')
    assert 'hx-trigger="every 1s"' in sent_html and "thinking" in sent_html
    assert "<em>there</em>" in sent_html
    ready_html = ready.content.decode()
    assert "every 1s" not in ready_html
    for key in ("1", "2", "t", "x"):
        assert f'data-key="{key}"' in ready_html
    assert ready_html.count('class="response"') == 2
    assert picked.status_code == 200
    assert 'name="text"' in picked.content.decode()
    judgment = Judgment.objects.get()
    assert (judgment.chat_session, judgment.context) == (session, [])


def test_a_refused_pick_shows_the_error_in_the_fragment(login, project, labeler, session):
    _send(session)
    client = login(labeler)

    response = client.post(
        f"/p/{project.slug}/chat/{session.pk}/pick/",
        {"choice": "left", "client_id": str(uuid.uuid4())},
        HTTP_HX_REQUEST="true",
    )

    assert response.status_code == 409
    assert "The replies are not there yet." in response.content.decode()
    assert Judgment.objects.count() == 0


def test_an_empty_message_without_javascript_redirects_with_the_error(
    login, project, labeler, session
):
    client = login(labeler)

    response = client.post(f"/p/{project.slug}/chat/{session.pk}/message/", {"text": " "})
    page = client.get(response["Location"])

    assert response.status_code == 302
    assert "Write a message first." in page.content.decode()
    assert Prompt.objects.count() == 0


def test_finishing_from_the_page_with_rating_keys(login, project, labeler, session):
    _say_and_answer(session)
    _pick(session, "left")
    client = login(labeler)
    base = f"/p/{project.slug}/chat/{session.pk}/"
    htmx = {"HTTP_HX_REQUEST": "true"}

    form = client.get(f"{base}?finish=1", **htmx).content.decode()
    refused = client.post(f"{base}finish/", {"rating": "9"}, **htmx)
    done = client.post(f"{base}finish/", {"rating": "2", "comment": "<b>meh</b>"}, **htmx)

    for key in range(1, 8):
        assert f'data-key="{key}"' in form
    assert refused.status_code == 400
    refused_html = refused.content.decode()
    assert "from 1 (bad) to 7" in refused_html and 'name="rating"' in refused_html
    html = done.content.decode()
    assert "<strong data-rating>2</strong>" in html
    assert "<b>meh</b>" not in html and "&lt;b&gt;meh&lt;/b&gt;" in html
    session.refresh_from_db()
    assert (session.finished, session.rating, session.comment) == (True, 2, "<b>meh</b>")


def test_a_failed_turn_shows_the_error_and_the_retry_key(login, project, labeler, tmp_path):
    broken = make_version("broken", path=str(tmp_path))
    session = services.chat_start(project=project, labeler=labeler, model_version_id=broken.pk)
    services.chat_replies_generate(turn_id=_send(session).pk)

    html = login(labeler).get(f"/p/{project.slug}/chat/{session.pk}/").content.decode()

    assert "The replies could not be written" in html
    assert 'data-key="r"' in html


# --- API ------------------------------------------------------------------------------


def test_a_whole_chat_through_the_api(login, project, labeler, tiny_version):
    client = login(labeler)
    api = f"/api/projects/{project.slug}/chats/"

    started = client.post(api, {"model_version": tiny_version.pk}, content_type="application/json")
    session_id = started.json()["id"]
    sent = client.post(
        f"{api}{session_id}/messages/",
        {"text": "Hi", "params": FAST},
        content_type="application/json",
    )
    services.chat_replies_generate(turn_id=ChatTurn.objects.get().pk)
    detail = client.get(f"{api}{session_id}/").json()
    pick = {"choice": "left", "client_id": str(uuid.uuid4()), "time_spent_ms": 900}
    picked = client.post(f"{api}{session_id}/picks/", pick, content_type="application/json")
    again = client.post(f"{api}{session_id}/picks/", pick, content_type="application/json")
    finished = client.post(
        f"{api}{session_id}/finish/", {"rating": 7}, content_type="application/json"
    )
    listed = client.get(api).json()

    assert started.status_code == 201
    assert sent.status_code == 202
    assert sent.json()["turn"]["status"] == "queued"
    assert detail["turn"]["status"] == "ready"
    left = detail["turn"]["replies"][0]
    assert (picked.status_code, again.status_code) == (201, 200)
    assert picked.json()["id"] == again.json()["id"]
    assert picked.json()["shown_order"][0] == left["id"]
    assert picked.json()["context"] == []
    assert finished.status_code == 200
    assert finished.json()["messages"][-1] == {"role": "assistant", "content": left["text"]}
    assert (finished.json()["finished"], finished.json()["rating"]) == (True, 7)
    assert [s["id"] for s in listed] == [session_id]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("messages/", {"text": ""}, 400, "Write a message first."),
        ("messages/", {"text": "hi", "params": [1]}, 400, "params must be an object"),
        ("picks/", {"choice": "left", "client_id": "x"}, 400, "client_id must be a UUID"),
        ("finish/", {"rating": 0}, 400, "from 1 (bad) to 7"),
        ("retry/", {}, 409, "Only a failed turn"),
    ],
)
def test_bad_api_input_gets_a_clear_error(login, labeler, session, path, body, status, message):
    response = login(labeler).post(
        f"/api/projects/{session.project.slug}/chats/{session.pk}/{path}",
        body,
        content_type="application/json",
    )

    assert response.status_code == status
    assert message in response.json()["detail"]
    session.refresh_from_db()
    assert (session.messages, session.finished) == ([], False)


@pytest.mark.parametrize("name", CALLERS)
def test_the_chat_api_is_open_to_the_owner_only(login, project, caller, session, name):
    client = login(caller[name])
    api = f"/api/projects/{project.slug}/chats/"

    listed = client.get(api)
    detail = client.get(f"{api}{session.pk}/")
    sent = client.post(
        f"{api}{session.pk}/messages/", {"text": "hi"}, content_type="application/json"
    )

    expected_list = {"anonymous": 401, "outsider": 403}.get(name, 200)
    expected_detail = {"anonymous": 401, "outsider": 403, "owner": 200}.get(name, 404)
    expected_send = {"anonymous": 401, "outsider": 403, "owner": 202}.get(name, 404)
    assert (listed.status_code, detail.status_code, sent.status_code) == (
        expected_list,
        expected_detail,
        expected_send,
    )
    if expected_list == 200:
        assert [s["id"] for s in listed.json()] == ([session.pk] if name == "owner" else [])
    session.refresh_from_db()
    assert len(session.messages) == (1 if name == "owner" else 0)
