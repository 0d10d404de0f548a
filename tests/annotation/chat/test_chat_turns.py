"""Chat turns on the one job lifecycle: a row per turn, claimed once, finished or failed
with a reason; a turn whose worker went silent is queued again and resumes, then fails
after its last attempt; a redelivered message stores nothing twice; the data migration
moves the old Prompt.metadata state into turn rows."""

import importlib
import uuid
from datetime import timedelta

import pytest
from django.apps import apps as django_apps
from django.utils import timezone

from annotation.chat import selectors, services
from annotation.models import ChatTurn, Prompt, Response
from config import jobs
from models_registry.services import ensure_base_model_from_folder
from tests.factories import make_version

FAST = {"max_new_tokens": 4}
migration = importlib.import_module("annotation.migrations.0007_chat_turns")


@pytest.fixture
def tiny_version(db, tiny_model_dir):
    return ensure_base_model_from_folder(name="tiny-chat-turns", path=tiny_model_dir)


def _chat(project, labeler, version):
    return services.chat_start(project=project, labeler=labeler, model_version_id=version.pk)


def _send(session, text="Hello there"):
    return services.chat_message_send(
        project=session.project,
        labeler=session.labeler,
        session_id=session.pk,
        text=text,
        params=FAST,
    )


def _worker_dies_holding(turn: ChatTurn, settings) -> None:
    """A worker claims the turn, then goes silent for longer than the limit."""
    claimed = jobs.job_claim(ChatTurn, turn.pk, stale_after=settings.CHAT_STALE_AFTER_SECONDS)
    assert claimed is not None
    silent_since = timezone.now() - timedelta(seconds=settings.CHAT_STALE_AFTER_SECONDS + 1)
    ChatTurn.objects.filter(pk=turn.pk).update(heartbeat_at=silent_since)


def test_a_message_creates_a_queued_turn_and_the_worker_finishes_it(project, labeler, tiny_version):
    session = _chat(project, labeler, tiny_version)

    sent = _send(session)
    queued = ChatTurn.objects.get()
    services.chat_replies_generate(turn_id=sent.pk)

    assert (queued.pk, queued.status, queued.total, queued.attempts) == (sent.pk, "queued", 2, 0)
    assert (queued.session, queued.model_version, queued.message_index) == (
        session,
        tiny_version,
        0,
    )
    turn = ChatTurn.objects.get()
    assert (turn.status, turn.error, turn.done, turn.attempts) == ("succeeded", "", 2, 1)
    assert turn.started_at and turn.finished_at and turn.heartbeat_at
    replies = Response.objects.filter(prompt=turn.prompt)
    assert sorted(turn.shown_order) == sorted(replies.values_list("pk", flat=True))
    assert replies.count() == 2
    assert "both replies written" in turn.log


def test_each_turn_of_a_chat_is_its_own_row(project, labeler, tiny_version):
    session = _chat(project, labeler, tiny_version)

    for text in ("one", "two"):
        services.chat_replies_generate(turn_id=_send(session, text).pk)
        services.chat_reply_pick(
            project=project,
            labeler=labeler,
            session_id=session.pk,
            choice="left",
            client_id=uuid.uuid4(),
        )

    turns = list(ChatTurn.objects.filter(session=session))
    assert [(t.message_index, t.prompt.text, t.status) for t in turns] == [
        (0, "one", "succeeded"),
        (2, "two", "succeeded"),
    ]


def test_a_silent_turn_is_queued_again_then_failed_with_the_reason_after_three_attempts(
    project, labeler, tiny_version, settings, django_capture_on_commit_callbacks, login
):
    settings.CHAT_STALE_AFTER_SECONDS = 30
    session = _chat(project, labeler, tiny_version)
    turn = _send(session)

    resumed = []
    for _ in range(ChatTurn.max_attempts - 1):
        _worker_dies_holding(turn, settings)
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            resumed.append(services.chat_turns_fail_stale(project=project))
        assert len(callbacks) == 1  # the message that resumes it
        assert ChatTurn.objects.get().status == "queued"
    _worker_dies_holding(turn, settings)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        ended = services.chat_turns_fail_stale(project=project)

    assert (resumed, ended, callbacks) == ([1, 1], 1, [])
    turn = ChatTurn.objects.get()
    assert (turn.status, turn.attempts) == ("failed", 3)
    assert turn.error == (
        "The worker stopped reporting (no heartbeat for 30 s) on attempt 3. "
        'Press "Try again" to ask the model once more.'
    )
    assert turn.log.count("Queued again to resume.") == 2
    page = login(labeler).get(f"/p/{project.slug}/chat/{session.pk}/").content.decode()
    assert "The replies could not be written: The worker stopped reporting" in page
    assert 'data-key="r"' in page
    assert Response.objects.count() == 0


def test_the_retry_after_a_lost_turn_gets_fresh_attempts_and_finishes(
    project, labeler, tiny_version, settings, login, django_capture_on_commit_callbacks
):
    session = _chat(project, labeler, tiny_version)
    turn = _send(session)
    ChatTurn.objects.filter(pk=turn.pk).update(
        status="failed", attempts=3, error="The worker stopped reporting."
    )
    client = login(labeler)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        retried = client.post(f"/api/projects/{project.slug}/chats/{session.pk}/retry/")
    queued = ChatTurn.objects.get()
    services.chat_replies_generate(turn_id=turn.pk)

    assert retried.status_code == 202
    assert retried.json()["turn"] | {"replies": []} == {
        "status": "queued",
        "error": "",
        "replies": [],
    }
    assert len(callbacks) == 1
    assert (queued.status, queued.attempts, queued.error) == ("queued", 0, "")
    assert ChatTurn.objects.get().status == "succeeded"
    assert Response.objects.filter(prompt=turn.prompt).count() == 2


def test_reading_the_chat_takes_up_a_silent_turn(project, labeler, tiny_version, settings, login):
    session = _chat(project, labeler, tiny_version)
    turn = _send(session)
    _worker_dies_holding(turn, settings)
    client = login(labeler)

    detail = client.get(f"/api/projects/{project.slug}/chats/{session.pk}/").json()

    assert detail["turn"]["status"] == "queued"
    assert "Queued again to resume." in ChatTurn.objects.get().log


def test_the_redelivered_message_of_a_dead_attempt_resumes_the_turn(
    project, labeler, tiny_version, settings
):
    session = _chat(project, labeler, tiny_version)
    turn = _send(session)
    _worker_dies_holding(turn, settings)

    services.chat_replies_generate(turn_id=turn.pk)

    turn = ChatTurn.objects.get()
    assert (turn.status, turn.attempts) == ("succeeded", 2)
    assert "Resuming." in turn.log
    assert Response.objects.filter(prompt=turn.prompt).count() == 2


def test_a_turn_whose_dead_worker_stored_both_replies_resumes_without_generating(
    project, labeler, tmp_path, settings
):
    # A model that cannot load: the resumed turn must not need it.
    broken = make_version("broken-chat", path=str(tmp_path))
    session = _chat(project, labeler, broken)
    turn = _send(session)
    _worker_dies_holding(turn, settings)
    stored = [
        Response.objects.create(prompt=turn.prompt, model_version=broken, sample_index=i, text=t)
        for i, t in enumerate(("first", "second"))
    ]

    services.chat_replies_generate(turn_id=turn.pk)

    turn = ChatTurn.objects.get()
    assert (turn.status, turn.error) == ("succeeded", "")
    assert sorted(turn.shown_order) == [r.pk for r in stored]
    assert Response.objects.count() == 2
    assert "generating" not in turn.log


def test_the_redelivered_message_of_a_finished_turn_stores_nothing_twice(
    project, labeler, tiny_version
):
    session = _chat(project, labeler, tiny_version)
    turn = _send(session)
    services.chat_replies_generate(turn_id=turn.pk)
    finished = ChatTurn.objects.get()
    replies = set(Response.objects.values_list("pk", "text"))

    services.chat_replies_generate(turn_id=turn.pk)
    services.chat_replies_generate(turn_id=turn.pk)

    again = ChatTurn.objects.get()
    assert set(Response.objects.values_list("pk", "text")) == replies
    assert (again.status, again.attempts, again.shown_order, again.finished_at) == (
        "succeeded",
        1,
        finished.shown_order,
        finished.finished_at,
    )


def test_a_running_turn_with_a_live_worker_is_left_alone(project, labeler, tiny_version, settings):
    session = _chat(project, labeler, tiny_version)
    turn = _send(session)
    jobs.job_claim(ChatTurn, turn.pk, stale_after=settings.CHAT_STALE_AFTER_SECONDS)

    swept = services.chat_turns_fail_stale(project=project)
    services.chat_replies_generate(turn_id=turn.pk)  # a duplicate message

    turn = ChatTurn.objects.get()
    assert (swept, turn.status, turn.attempts) == (0, "running", 1)
    assert Response.objects.count() == 0


def test_another_projects_silent_turns_are_not_touched_by_this_projects_reads(
    project, other_project, labeler, tiny_version, settings
):
    session = _chat(project, labeler, tiny_version)
    turn = _send(session)
    _worker_dies_holding(turn, settings)

    swept = services.chat_turns_fail_stale(project=other_project)

    assert (swept, ChatTurn.objects.get().status) == (0, "running")


# --- the data migration (annotation/migrations/0007_chat_turns.py) ---------------------


def _old_turn(session, message_index, **state):
    """A chat prompt as the code before ChatTurn left it: the state in its metadata."""
    return Prompt.objects.create(
        project=session.project,
        text=f"message {message_index}",
        metadata={"chat_session": session.pk, "turn": message_index, **state},
    )


def test_the_migration_moves_each_turns_metadata_into_a_turn_row(project, labeler):
    version = make_version("old-chat-model")
    session = _chat(project, labeler, version)
    ready = _old_turn(
        session,
        0,
        status="ready",
        error="",
        shown_order=[],
        generation_params={"max_new_tokens": 4, "seed": 7},
    )
    replies = [
        Response.objects.create(prompt=ready, model_version=version, sample_index=i, text="r")
        for i in range(2)
    ]
    ready.metadata["shown_order"] = [replies[1].pk, replies[0].pk]
    ready.save(update_fields=["metadata"])
    failed = _old_turn(session, 2, status="failed", error="Boom", generation_params={})
    waiting = _old_turn(session, 4, status="queued", generation_params={"seed": 1})
    session.messages = [{"role": "user", "content": "m"}] * 5
    session.save(update_fields=["messages"])
    pool_prompt = Prompt.objects.create(project=project, text="pool", metadata={"x": 1})

    migration.turns_from_metadata(django_apps, None)

    turns = {t.message_index: t for t in ChatTurn.objects.all()}
    assert sorted(turns) == [0, 2, 4]
    assert (turns[0].prompt, turns[0].status, turns[0].shown_order, turns[0].done) == (
        ready,
        "succeeded",
        [replies[1].pk, replies[0].pk],
        2,
    )
    assert turns[0].generation_params == {"max_new_tokens": 4, "seed": 7}
    assert turns[0].model_version == version
    assert (turns[2].status, turns[2].error) == ("failed", "Boom")
    # Its message (if any) names the prompt, not the turn: it is left for the sweep to resend.
    assert (turns[4].status, turns[4].started_at, turns[4].heartbeat_at) == (
        "running",
        waiting.created_at,
        None,
    )
    for prompt in (ready, failed, waiting):
        prompt.refresh_from_db()
        assert prompt.metadata == {"chat_session": session.pk}
    pool_prompt.refresh_from_db()
    assert pool_prompt.metadata == {"x": 1}
    # The chat page reads the moved turn as before.
    session.refresh_from_db()
    open_turn = selectors.chat_turn_open(session=session)
    assert (open_turn.prompt, open_turn.status) == (waiting, "running")


def test_the_migration_is_safe_to_run_twice_and_goes_back(project, labeler):
    version = make_version("old-chat-model")
    session = _chat(project, labeler, version)
    prompt = _old_turn(session, 0, status="failed", error="", generation_params={"seed": 3})
    before = dict(prompt.metadata)

    migration.turns_from_metadata(django_apps, None)
    migration.turns_from_metadata(django_apps, None)
    moved = ChatTurn.objects.get()
    migration.metadata_from_turns(django_apps, None)

    assert moved.error == "This turn's replies were not written; try again."
    prompt.refresh_from_db()
    assert prompt.metadata == {**before, "error": moved.error, "shown_order": []}


def test_the_migration_skips_chat_prompts_without_turn_state(project, labeler):
    session = _chat(project, labeler, make_version("old-chat-model"))
    Prompt.objects.create(project=project, text="hi", metadata={"chat_session": session.pk})
    Prompt.objects.create(
        project=project,
        text="gone",
        metadata={"chat_session": 999_999, "turn": 0, "status": "ready"},
    )

    migration.turns_from_metadata(django_apps, None)

    assert ChatTurn.objects.count() == 0


def test_the_conversion_of_one_metadata_dict():
    fields = migration.turn_fields_from_metadata(
        {"chat_session": 1, "turn": 6, "status": "ready", "shown_order": [5, 4]}
    )

    assert fields == {
        "message_index": 6,
        "status": "succeeded",
        "error": "",
        "shown_order": [5, 4],
        "generation_params": {},
        "done": 2,
        "total": 2,
    }
