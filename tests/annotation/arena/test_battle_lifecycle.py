"""An arena battle's lifecycle (config/jobs.py): a battle left by a dead worker is queued
again and writes only the reply still missing, a redelivery does not write a reply twice,
and after its last attempt it is failed with the reason and a "Try again"."""

import random
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from annotation.arena import services
from annotation.models import ArenaBattle, Response
from config import jobs
from models_registry.services import ensure_base_model_from_folder
from tests.factories import make_prompt

Status = ArenaBattle.Status
FAST = {"max_new_tokens": 3}
LOST = "The worker stopped reporting (no heartbeat for 60 s)"


def _silent_for(seconds: int):
    return timezone.now() - timedelta(seconds=seconds)


@pytest.fixture
def crashed(project, labeler, tiny_model_dir, settings):
    """A battle whose worker was killed after writing model A's reply: running, silent."""
    settings.ARENA_STALE_AFTER_SECONDS = 60
    for name in ("tiny-alpha", "tiny-beta"):
        ensure_base_model_from_folder(name=name, path=tiny_model_dir)
    make_prompt(project, "What is RLHF?")
    battle = services.arena_battle_start(
        project=project, labeler=labeler, params=FAST, rng=random.Random(0)
    )
    jobs.job_claim(ArenaBattle, battle.pk, stale_after=60)
    Response.objects.create(
        prompt=battle.prompt, model_version=battle.version_a, sample_index=0, text="dead A"
    )
    ArenaBattle.objects.filter(pk=battle.pk).update(heartbeat_at=_silent_for(61))
    return battle


def _replies(battle) -> list[tuple[int, str]]:
    return sorted(
        Response.objects.filter(prompt=battle.prompt).values_list("model_version_id", "text")
    )


def test_a_redelivery_after_a_crash_resumes_and_writes_only_the_missing_reply(crashed):
    services.arena_replies_generate(battle_id=crashed.pk)  # the dead attempt's message

    battle = ArenaBattle.objects.get(pk=crashed.pk)
    assert (battle.status, battle.attempts, battle.error) == (Status.READY, 2, "")
    assert f"{LOST}. Resuming." in battle.log
    replies = _replies(battle)
    assert len(replies) == 2
    assert (battle.version_a_id, "dead A") in replies
    assert battle.response_a.text == "dead A"
    assert battle.response_b.model_version_id == battle.version_b_id

    services.arena_replies_generate(battle_id=crashed.pk)  # delivered once more

    assert _replies(battle) == replies
    assert ArenaBattle.objects.get(pk=crashed.pk).attempts == 2


def test_a_redelivery_while_the_worker_still_reports_changes_nothing(crashed):
    ArenaBattle.objects.filter(pk=crashed.pk).update(heartbeat_at=timezone.now())

    services.arena_replies_generate(battle_id=crashed.pk)

    battle = ArenaBattle.objects.get(pk=crashed.pk)
    assert (battle.status, battle.attempts) == (Status.RUNNING, 1)
    assert len(_replies(battle)) == 1


def test_the_sweep_queues_a_silent_battle_again_and_it_resumes(
    crashed, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as sent:
        assert services.arena_battles_fail_stale(project=crashed.project) == 1

    assert len(sent) == 1
    battle = ArenaBattle.objects.get(pk=crashed.pk)
    assert battle.status == Status.QUEUED
    assert f"{LOST}. Queued again to resume." in battle.log

    services.arena_replies_generate(battle_id=crashed.pk)

    battle.refresh_from_db()
    assert (battle.status, battle.attempts) == (Status.READY, 2)
    assert len(_replies(battle)) == 2


def test_a_battle_lost_on_its_last_attempt_fails_with_the_reason_and_try_again(crashed):
    ArenaBattle.objects.filter(pk=crashed.pk).update(attempts=ArenaBattle.max_attempts)

    assert services.arena_battles_fail_stale(project=crashed.project) == 1

    battle = ArenaBattle.objects.get(pk=crashed.pk)
    assert battle.status == Status.FAILED
    assert battle.error == (f'{LOST} on attempt 3. Press "Try again" to ask both models once more.')
    retried = services.arena_battle_retry(
        project=battle.project, labeler=battle.labeler, battle_id=battle.pk
    )
    assert (retried.status, retried.attempts, retried.error) == (Status.QUEUED, 0, "")
    services.arena_replies_generate(battle_id=battle.pk)
    battle.refresh_from_db()
    assert (battle.status, battle.attempts) == (Status.READY, 1)
    assert len(_replies(battle)) == 2


def test_a_redelivery_on_the_last_attempt_fails_the_battle_with_the_reason(crashed):
    ArenaBattle.objects.filter(pk=crashed.pk).update(attempts=ArenaBattle.max_attempts)

    services.arena_replies_generate(battle_id=crashed.pk)

    battle = ArenaBattle.objects.get(pk=crashed.pk)
    assert battle.status == Status.FAILED
    assert battle.error.startswith(f"{LOST} on attempt 3.")
    assert len(_replies(battle)) == 1


def test_reading_the_battle_page_fails_a_silent_battle_on_its_last_attempt(
    client, crashed, django_capture_on_commit_callbacks
):
    ArenaBattle.objects.filter(pk=crashed.pk).update(attempts=ArenaBattle.max_attempts)
    client.force_login(crashed.labeler)
    slug = crashed.project.slug

    page = client.get(reverse("arena_battle", args=[slug, crashed.pk]))

    assert page.status_code == 200
    assert "Try again" in page.content.decode()
    assert ArenaBattle.objects.get(pk=crashed.pk).status == Status.FAILED


def test_the_battles_api_sweeps_a_silent_battle_and_queues_it_again(
    client, crashed, django_capture_on_commit_callbacks
):
    client.force_login(crashed.labeler)

    with django_capture_on_commit_callbacks() as sent:
        answer = client.get(reverse("api_battles", args=[crashed.project.slug]))

    assert answer.status_code == 200
    assert len(sent) == 1
    assert [b["status"] for b in answer.json()] == ["queued"]
