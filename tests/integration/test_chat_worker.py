"""A chat turn through a real Celery worker process on PostgreSQL and Redis: killed with
SIGKILL while it generates the two replies, the turn is queued again once silent and a
new worker writes the two replies once."""

import time

import pytest

from annotation.models import ChatSession, ChatTurn, Response, Role
from models_registry.services import ensure_base_model_from_folder
from tests.factories import make_member, make_project
from tests.worker_fixtures import start_worker, stop_worker, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(600)]

# Long replies, so that the worker is still generating when it is killed (the tiny model
# writes 512 tokens in seconds on a quiet machine, in about a minute on a busy one).
SLOW = {"max_new_tokens": 512, "temperature": 1.0}


def test_a_worker_killed_mid_generation_leaves_a_turn_a_new_worker_finishes(
    client, celery_worker_process, tiny_model_dir, settings, tmp_path
):
    # given: a labeler's chat with a tiny model, and a message sent through the API
    project = make_project("chat-kill")
    labeler = make_member(project, Role.LABELER, "chat-kill-labeler")
    version = ensure_base_model_from_folder(name="tiny-chat-kill", path=tiny_model_dir)
    client.force_login(labeler)
    api = f"/api/projects/{project.slug}/chats/"
    session_id = client.post(api, {"model_version": version.pk}, "application/json").json()["id"]
    url = f"{api}{session_id}/"
    sent = client.post(
        f"{url}messages/", {"text": "Tell me a long story.", "params": SLOW}, "application/json"
    )
    assert sent.status_code == 202
    turn = ChatTurn.objects.get(session_id=session_id)
    log = tmp_path / "worker.log"

    # when: the worker is killed outright while it generates
    wait_for(
        lambda: "generating both replies" in ChatTurn.objects.get(pk=turn.pk).log,
        timeout=120,
        what="the worker to start generating",
        log=log,
    )
    time.sleep(0.5)
    celery_worker_process.kill()
    celery_worker_process.wait()
    killed_at = ChatTurn.objects.get(pk=turn.pk)
    assert (killed_at.status, killed_at.attempts) == ("running", 1)
    assert Response.objects.filter(prompt_id=turn.prompt_id).count() == 0

    # then: once silent long enough, reading the chat queues the turn again to resume
    settings.CHAT_STALE_AFTER_SECONDS = 1
    time.sleep(1.5)
    wait_for(
        lambda: client.get(url).json()["turn"]["status"] == "queued",
        timeout=15,
        what="the silent turn to be queued again",
        log=log,
    )
    settings.CHAT_STALE_AFTER_SECONDS = 60

    # and: a new worker writes the two replies once and opens the turn for the pick
    worker, worker_log = start_worker(settings, tmp_path / "worker-2.log")
    try:
        ready = wait_for(
            lambda: client.get(url).json()["turn"]["status"] == "ready",
            timeout=300,
            what="the resumed turn",
            log=tmp_path / "worker-2.log",
        )
    finally:
        stop_worker(worker)
        worker_log.close()
    assert ready
    turn = ChatTurn.objects.get(pk=turn.pk)
    assert (turn.status, turn.attempts, turn.error, turn.done) == ("succeeded", 2, "", 2)
    assert "Queued again to resume." in turn.log
    replies = Response.objects.filter(prompt_id=turn.prompt_id)
    assert sorted(replies.values_list("sample_index", flat=True)) == [0, 1]
    assert sorted(turn.shown_order) == sorted(replies.values_list("pk", flat=True))
    assert ChatTurn.objects.filter(session_id=session_id).count() == 1
    session = ChatSession.objects.get(pk=session_id)
    assert session.messages == [{"role": "user", "content": "Tell me a long story."}]
    shown = client.get(url).json()["turn"]["replies"]
    assert [reply["id"] for reply in shown] == turn.shown_order
