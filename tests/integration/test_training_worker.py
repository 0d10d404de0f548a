"""Training through a real Celery worker process on PostgreSQL and Redis."""

import time

import pytest

from annotation.models import Role
from models_registry.models import ModelVersion
from models_registry.services import ensure_base_model_from_folder
from tests.factories import make_member, make_preferences, make_project
from tests.worker_fixtures import start_worker, stop_worker, wait_for
from training.models import TrainingRun

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(600)]


def _finished(run_id):
    run = TrainingRun.objects.get(pk=run_id)
    return run if run.status not in {"queued", "running"} else None


def _start(client, slug, **body):
    answer = client.post(
        f"/api/projects/{slug}/training-runs/", body, content_type="application/json"
    )
    assert answer.status_code == 201, answer.content
    return answer.json()["id"]


def test_a_worker_that_dies_mid_run_leaves_it_failed_and_it_resumes_from_its_checkpoint(
    client, celery_worker_process, tiny_model_dir, settings, tmp_path
):
    # given: a long DPO run that checkpoints every step
    project = make_project("resume")
    admin = make_member(project, Role.ADMIN, "resume-admin")
    make_preferences(project, make_member(project, Role.LABELER, "resume-lab"), 12)
    base = ensure_base_model_from_folder(name="tiny-base", path=tiny_model_dir)
    client.force_login(admin)
    config = {"max_steps": 300, "epochs": 100, "batch_size": 1, "checkpoint_every": 1}
    run_id = _start(client, project.slug, method="dpo", base_version=base.pk, config=config)
    log = tmp_path / "worker.log"

    # when: the worker is killed outright a few steps in
    wait_for(
        lambda: TrainingRun.objects.get(pk=run_id).checkpoint_step >= 3,
        timeout=180,
        what="three checkpointed steps",
        log=log,
    )
    celery_worker_process.kill()
    celery_worker_process.wait()
    killed_at = TrainingRun.objects.get(pk=run_id)
    assert killed_at.status == TrainingRun.Status.RUNNING
    assert killed_at.step < 300

    # then: once it has been silent long enough the run is failed with the reason
    settings.TRAINING_STALE_AFTER_SECONDS = 1
    time.sleep(1.5)
    url = f"/api/projects/{project.slug}/training-runs/{run_id}/"
    # Reading the run fails it once it is silent; a loaded machine may need a second look.
    detail = wait_for(
        lambda: (answer := client.get(url).json())["status"] == "failed" and answer,
        timeout=15,
        what="the silent run to be failed",
        log=log,
    )
    checkpoint = detail["checkpoint_step"]
    assert checkpoint >= 3
    assert detail["error"] == (
        f"The worker stopped reporting at step {killed_at.step} of 300 (it died or lost its "
        f"connection); resume to continue from the checkpoint at step {checkpoint}."
    )
    assert detail["can_resume"] is True
    assert ModelVersion.objects.filter(training_run_id=run_id).count() == 0

    # and: a new worker resumes it from that checkpoint to the end
    settings.TRAINING_STALE_AFTER_SECONDS = 180
    worker, worker_log = start_worker(settings, tmp_path / "worker-2.log")
    try:
        resumed = client.post(f"/api/projects/{project.slug}/training-runs/{run_id}/resume/")
        assert resumed.status_code == 200, resumed.content
        run = wait_for(lambda: _finished(run_id), timeout=300, what="the resumed run", log=log)
    finally:
        stop_worker(worker)
        worker_log.close()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.attempts == 2
    assert f"resuming from checkpoint-{checkpoint}" in run.log  # TRL's DPOTrainer resumed it
    assert list(run.steps.values_list("step", flat=True)) == list(range(1, 301))
    assert ModelVersion.objects.get(training_run=run).parent == base


def test_a_reward_model_then_ppo_against_it_through_the_worker(
    client, celery_worker_process, tiny_model_dir, tmp_path
):
    # given: judged comparisons and a base model
    project = make_project("ppo")
    admin = make_member(project, Role.ADMIN, "ppo-admin")
    make_preferences(project, make_member(project, Role.LABELER, "ppo-lab"), 6)
    base = ensure_base_model_from_folder(name="tiny-base", path=tiny_model_dir)
    client.force_login(admin)
    log = tmp_path / "worker.log"
    small = {"max_steps": 2, "batch_size": 2, "lora_r": 4, "lora_alpha": 8}

    # when: the worker trains a reward model, then PPO against it
    reward_config = {**small, "normalization_prompts": 2, "normalization_max_new_tokens": 4}
    reward_id = _start(
        client, project.slug, method="reward", base_version=base.pk, config=reward_config
    )
    reward = wait_for(lambda: _finished(reward_id), timeout=300, what="the reward run", log=log)
    assert reward.status == TrainingRun.Status.SUCCEEDED, reward.error
    judge = ModelVersion.objects.get(training_run=reward)
    ppo_config = {
        "max_steps": 2,
        "rollout_batch_size": 2,
        "mini_batch_size": 2,
        "ppo_epochs": 1,
        "max_new_tokens": 4,
        "lora_r": 4,
        "lora_alpha": 8,
    }
    ppo_id = _start(
        client,
        project.slug,
        method="ppo",
        base_version=base.pk,
        reward_version=judge.pk,
        config=ppo_config,
    )
    ppo = wait_for(lambda: _finished(ppo_id), timeout=300, what="the PPO run", log=log)

    # then: a PPO policy judged by that reward model against its parent
    assert ppo.status == TrainingRun.Status.SUCCEEDED, ppo.error
    assert judge.kind == "reward"
    assert list(ppo.steps.values_list("step", flat=True)) == [1, 2]
    assert {"score", "kl", "kl_coef", "value_loss"} <= set(ppo.steps.last().metrics)
    version = ModelVersion.objects.get(training_run=ppo)
    assert [v.method for v in version.lineage()] == ["base", "ppo"]
    assert ppo.evaluation["judge"] == judge.name
    assert 0 <= ppo.evaluation["win_rate"] <= 1
    detail = client.get(f"/api/projects/{project.slug}/training-runs/{ppo_id}/").json()
    assert detail["model_version"] == version.pk
    assert "registered" in detail["log"]


SMALL = {"batch_size": 2, "lora_r": 4, "lora_alpha": 8, "seed": 1}


def _rank_processes() -> list[str]:
    from pathlib import Path

    found = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"training.methods.launch" in command:
            found.append(proc.name)
    return found


def test_the_worker_trains_sft_then_dpo_in_two_processes_each(
    client, celery_worker_process, tiny_model_dir, settings, tmp_path
):
    # given: a worker machine with 2 CPU cores, preferences, a base model
    settings.TRAINING_DEVICES = "cpu:2"
    project = make_project("two-processes")
    admin = make_member(project, Role.ADMIN, "two-admin")
    make_preferences(project, make_member(project, Role.LABELER, "two-lab"), 4)
    base = ensure_base_model_from_folder(name="tiny-base", path=tiny_model_dir)
    client.force_login(admin)
    log = tmp_path / "worker.log"

    # when: the default recipe (an SFT stage, then DPO) is asked for in 2 processes
    sft_id = _start(
        client, project.slug, method="dpo", base_version=base.pk, sft_first=True,
        processes=2, config={**SMALL, "max_steps": 3},
    )  # fmt: skip
    sft = wait_for(lambda: _finished(sft_id), timeout=300, what="the SFT stage", log=log)
    assert sft.status == TrainingRun.Status.SUCCEEDED, sft.error
    dpo = wait_for(
        lambda: (run := sft.follow_ups.first()) and _finished(run.pk),
        timeout=300,
        what="the DPO stage",
        log=log,
    )

    # then: both stages trained in 2 processes, each step recorded once
    assert dpo.status == TrainingRun.Status.SUCCEEDED, dpo.error
    for run in (sft, dpo):
        assert (run.processes, run.strategy) == (2, "ddp")
        assert list(run.steps.values_list("step", flat=True)) == [1, 2, 3]
        assert "launching 2 processes (ddp)" in run.log
    assert ModelVersion.objects.get(training_run=dpo).parent == ModelVersion.objects.get(
        training_run=sft
    )
    assert _rank_processes() == []


def test_a_cancel_stops_every_process_of_a_run_on_the_worker(
    client, celery_worker_process, tiny_model_dir, settings, tmp_path
):
    # given: a long 2-process run on the worker, a few steps in
    settings.TRAINING_DEVICES = "cpu:2"
    project = make_project("two-cancel")
    admin = make_member(project, Role.ADMIN, "cancel-admin")
    make_preferences(project, make_member(project, Role.LABELER, "cancel-lab"), 4)
    base = ensure_base_model_from_folder(name="tiny-base", path=tiny_model_dir)
    client.force_login(admin)
    log = tmp_path / "worker.log"
    config = {**SMALL, "max_steps": 500, "epochs": 500}
    run_id = _start(
        client, project.slug, method="dpo", base_version=base.pk, processes=2, config=config
    )
    wait_for(
        lambda: TrainingRun.objects.get(pk=run_id).step >= 2, timeout=300, what="2 steps", log=log
    )

    # when
    answer = client.post(f"/api/projects/{project.slug}/training-runs/{run_id}/cancel/")
    assert answer.status_code == 200, answer.content
    run = wait_for(lambda: _finished(run_id), timeout=120, what="the cancel", log=log)

    # then: cancelled, nothing registered, no rank left running
    assert run.status == TrainingRun.Status.CANCELLED
    assert run.step < 500
    assert ModelVersion.objects.filter(training_run=run).count() == 0
    assert _rank_processes() == []
