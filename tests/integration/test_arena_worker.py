"""An arena battle through a real Celery worker process on PostgreSQL and Redis: killed
with SIGKILL between the two replies, the battle is queued again once silent and a new
worker writes only the missing reply."""

import random
import time

import pytest

from annotation.arena import services
from annotation.models import ArenaBattle, Response, Role
from models_registry.services import ensure_base_model_from_folder
from tests.factories import make_member, make_project, make_prompt
from tests.worker_fixtures import start_worker, stop_worker, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(600)]

# Long replies, so that the worker is still writing the second one when it is killed.
SLOW = {"max_new_tokens": 2048, "temperature": 1.0}


def _replies(battle_id):
    battle = ArenaBattle.objects.get(pk=battle_id)
    return Response.objects.filter(prompt_id=battle.prompt_id)


def test_a_worker_killed_between_the_replies_leaves_a_battle_a_new_worker_finishes(
    client, celery_worker_process, tiny_model_dir, settings, tmp_path
):
    # given: two contestants and a battle on a pool prompt, started for real (on commit)
    project = make_project("arena-kill")
    labeler = make_member(project, Role.LABELER, "arena-kill-labeler")
    make_prompt(project, "Tell me a long story.")
    for name in ("tiny-alpha", "tiny-beta"):
        ensure_base_model_from_folder(name=name, path=tiny_model_dir)
    battle = services.arena_battle_start(
        project=project, labeler=labeler, params=SLOW, rng=random.Random(0)
    )
    log = tmp_path / "worker.log"

    # when: the worker is killed outright once the first reply is stored
    wait_for(lambda: _replies(battle.pk).count() >= 1, timeout=180, what="the first reply", log=log)
    celery_worker_process.kill()
    celery_worker_process.wait()
    killed_at = ArenaBattle.objects.get(pk=battle.pk)
    assert killed_at.status == ArenaBattle.Status.RUNNING
    stored_by_the_dead = set(_replies(battle.pk).values_list("pk", flat=True))
    assert len(stored_by_the_dead) == 1

    # then: once silent long enough, reading the battle queues it again to resume
    client.force_login(labeler)
    url = f"/api/projects/{project.slug}/battles/{battle.pk}/"
    settings.ARENA_STALE_AFTER_SECONDS = 1
    time.sleep(1.5)
    wait_for(
        lambda: client.get(url).json()["status"] == "queued",
        timeout=15,
        what="the silent battle to be queued again",
        log=log,
    )
    settings.ARENA_STALE_AFTER_SECONDS = 60

    # and: a new worker writes only the missing reply and opens the battle for the vote
    worker, worker_log = start_worker(settings, tmp_path / "worker-2.log")
    try:
        ready = wait_for(
            lambda: client.get(url).json()["status"] == "ready",
            timeout=300,
            what="the resumed battle",
            log=log,
        )
    finally:
        stop_worker(worker)
        worker_log.close()
    assert ready
    battle = ArenaBattle.objects.get(pk=battle.pk)
    assert (battle.status, battle.attempts, battle.error) == ("ready", 2, "")
    assert "Queued again to resume." in battle.log
    replies = _replies(battle.pk)
    assert replies.count() == 2
    assert stored_by_the_dead <= set(replies.values_list("pk", flat=True))
    assert {battle.response_a.model_version_id, battle.response_b.model_version_id} == {
        battle.version_a_id,
        battle.version_b_id,
    }
