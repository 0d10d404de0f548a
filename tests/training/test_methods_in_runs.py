"""Every method through a training run: snapshot, train, evaluate, register (tiny models)."""

import pytest

from annotation.candidates.models import GenerationJob
from annotation.models import Role
from models_registry.engine.ml import GenerationParams, generate_replies, load_policy
from models_registry.models import ModelVersion
from models_registry.services import ensure_base_model_from_folder
from tests.factories import make_member, make_preferences, make_version
from training.models import TrainingRun
from training.services import training_run_execute, training_run_start

SMALL = {"max_steps": 2, "batch_size": 2, "lora_r": 4, "lora_alpha": 8, "seed": 1}
SMALL_REWARD = {**SMALL, "normalization_prompts": 2, "normalization_max_new_tokens": 4}
SMALL_RAFT = {
    **SMALL,
    "iterations": 1,
    "samples_per_prompt": 2,
    "max_new_tokens": 4,
    "eval_fraction": 0.0,
}
SMALL_PPO = {
    "max_steps": 2,
    "rollout_batch_size": 2,
    "mini_batch_size": 2,
    "ppo_epochs": 1,
    "max_new_tokens": 4,
    "lora_r": 4,
    "lora_alpha": 8,
    "eval_fraction": 0.0,
}


@pytest.fixture
def project_with_feedback(project, labeler):
    make_preferences(project, labeler, 6)
    return project


@pytest.fixture
def base(tiny_model_dir, db):
    return ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)


def _train(project, base_version, method, config, **extra) -> TrainingRun:
    run = training_run_start(
        project=project, base_version=base_version, method=method, config=config, **extra
    )
    training_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    return run


def _generates(version: ModelVersion) -> bool:
    model, tokenizer = load_policy(version.base_path, version.adapter_path or None)
    [reply] = generate_replies(
        model,
        tokenizer,
        [[{"role": "user", "content": "Hello"}]],
        GenerationParams(max_new_tokens=3, do_sample=False),
    )
    return reply.completion_tokens >= 1


def test_sft_then_reward_then_dpo_on_top_with_a_win_rate(project_with_feedback, base):
    project = project_with_feedback

    # SFT on the chosen replies: no reward model yet, so no win rate
    sft = _train(project, base, "sft", SMALL, filters={"include_chosen": True})
    sft_version = sft.model_version
    assert (sft_version.kind, sft_version.method, sft_version.parent) == ("policy", "sft", base)
    assert sft.snapshot.format == "sft" and sft.snapshot.row_count == 6
    assert sft.evaluation == {"skipped": "no reward model yet: train one to get a win rate"}
    assert "eval_loss" in sft.final_metrics
    assert _generates(sft_version)

    # A reward model: registered as one, generates nothing
    reward = _train(project, base, "reward", SMALL_REWARD)
    judge = reward.model_version
    assert (judge.kind, judge.method) == ("reward", "reward")
    assert 0 <= reward.final_metrics["eval_accuracy"] <= 1
    assert judge.generation_jobs.count() == 0

    # DPO starts from the SFT policy: lineage base -> SFT -> DPO, judged against its parent
    dpo = _train(project, sft_version, "dpo", SMALL)
    version = dpo.model_version
    assert [v.method for v in version.lineage()] == ["base", "sft", "dpo"]
    assert version.base_path != base.base_path  # trains on the SFT weights merged in
    assert dpo.evaluation["judge"] == judge.name
    assert (
        dpo.evaluation["wins"] + dpo.evaluation["ties"] + dpo.evaluation["losses"]
        == (dpo.evaluation["prompts"])
    )
    assert 0 <= dpo.evaluation["win_rate"] <= 1
    assert version.metrics["win_rate_vs_parent"] == dpo.evaluation["win_rate"]
    assert _generates(version)


def test_the_win_rate_judge_is_the_newest_reward_model_that_is_not_retired(
    project_with_feedback, base, tiny_model_dir, tiny_reward_dir
):
    from models_registry.services import model_version_register, model_version_retire

    kept = model_version_register(
        name="tiny-reward",
        kind="reward",
        method="reward",
        base_path=str(tiny_model_dir),
        adapter_path=str(tiny_reward_dir),
    )
    newer = make_version(
        "retired-reward", kind="reward", method="reward", state=ModelVersion.State.CANDIDATE
    )
    model_version_retire(version=newer, project=project_with_feedback)

    sft = _train(project_with_feedback, base, "sft", SMALL, filters={"include_chosen": True})

    assert sft.reward_version is None
    assert sft.evaluation["judge"] == kept.name
    assert 0 <= sft.evaluation["win_rate"] <= 1


def test_raft_and_ppo_optimise_against_a_reward_model(project_with_feedback, base):
    project = project_with_feedback
    judge = _train(project, base, "reward", SMALL_REWARD).model_version

    raft = _train(project, base, "raft", SMALL_RAFT, reward_version=judge)
    ppo = _train(project, base, "ppo", SMALL_PPO, reward_version=judge)

    for run in (raft, ppo):
        assert run.snapshot.format == "prompts"
        assert run.reward_version == judge
        assert run.model_version.method == run.method
        assert run.evaluation["judge"] == judge.name
        assert _generates(run.model_version)
    assert {"score", "kl", "kl_coef"} <= set(ppo.steps.last().metrics)
    assert "reward_mean" in raft.steps.last().metrics


def test_a_soup_mixes_two_runs_into_a_new_version(project_with_feedback, base):
    project = project_with_feedback
    first = _train(project, base, "dpo", SMALL).model_version
    second = _train(project, base, "dpo", {**SMALL, "loss_type": "ipo", "seed": 2}).model_version

    soup = _train(project, first, "soup", {"weight": 0.3}, mix_with=second)

    version = soup.model_version
    assert (version.method, version.parent, soup.mix_with) == ("soup", first, second)
    assert soup.snapshot is None
    assert version.base_path == base.base_path
    assert _generates(version)


@pytest.mark.parametrize(
    ("method", "extra", "message"),
    [
        ("ppo", {}, "PPO needs a reward model: train one first."),
        ("soup", {}, "A soup mixes two different versions: pick the second one."),
        ("dpo", {"config": {"curriculum": "vibes"}}, "curriculum must be null or one of"),
        ("rlhf", {}, "unknown method 'rlhf'"),
    ],
)
def test_runs_that_cannot_work_are_refused_and_store_nothing(
    project_with_feedback, base, method, extra, message
):
    from config.errors import ServiceError

    with pytest.raises(ServiceError) as error:
        training_run_start(project=project_with_feedback, base_version=base, method=method, **extra)
    assert message in error.value.message
    assert TrainingRun.objects.count() == 0


def test_a_reward_model_cannot_be_a_base_or_a_policy_a_judge(project_with_feedback, base):
    from config.errors import ServiceError

    member = make_member(project_with_feedback, Role.ADMIN)
    with pytest.raises(ServiceError, match="is not a reward model"):
        training_run_start(
            project=project_with_feedback,
            base_version=base,
            method="raft",
            reward_version=base,
            user=member,
        )
    assert TrainingRun.objects.count() == 0


def test_dpo_with_an_sft_stage_first_chains_two_runs(project_with_feedback, base):
    # given
    run = training_run_start(
        project=project_with_feedback,
        base_version=base,
        method="dpo",
        config={**SMALL, "beta": 0.2},
        sft_first=True,
    )
    assert (run.method, run.follow_up["method"]) == ("sft", "dpo")
    assert run.snapshot.filters == {"include_chosen": True, "ai": "exclude"}  # project default

    # when: the SFT stage succeeds
    training_run_execute(run_id=run.pk)

    # then: the DPO run was started from the SFT model with the DPO settings
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    dpo = run.follow_ups.get()
    assert (dpo.method, dpo.base_version, dpo.config["beta"]) == ("dpo", run.model_version, 0.2)
    assert f"started the follow-up dpo run #{dpo.pk}" in run.log
    training_run_execute(run_id=dpo.pk)
    dpo.refresh_from_db()
    assert [v.method for v in dpo.model_version.lineage()] == ["base", "sft", "dpo"]


def test_the_sft_stage_trains_with_the_settings_asked_for_the_run(project_with_feedback, base):
    # given: a short DPO run (2 steps, batch 2, LoRA r 4, seed 1) with an SFT stage first
    asked = {**SMALL, "learning_rate": 3e-4, "beta": 0.2}
    run = training_run_start(
        project=project_with_feedback, base_version=base, method="dpo", config=asked, sft_first=True
    )

    # when: both stages train
    training_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    dpo = run.follow_ups.get()
    training_run_execute(run_id=dpo.pk)
    dpo.refresh_from_db()

    # then: the SFT stage recorded and ran what was asked, as the DPO stage did
    shared = ("max_steps", "batch_size", "lora_r", "lora_alpha", "seed", "learning_rate")
    assert {name: run.config[name] for name in shared} == {name: asked[name] for name in shared}
    assert "beta" not in run.config  # DPO's own settings stay DPO's
    assert run.model_version.config == run.config
    for stage in (run, dpo):
        assert list(stage.steps.values_list("step", flat=True)) == [1, 2]
        assert stage.total_steps == 2
    assert (dpo.config["max_steps"], dpo.config["beta"]) == (2, 0.2)


def test_the_sft_stage_is_an_intermediate_version_that_makes_no_candidates(
    project_with_feedback, base
):
    from annotation.arena.selectors import arena_versions
    from annotation.chat.selectors import chat_versions
    from models_registry.selectors import newest_policy, servable_versions

    run = training_run_start(
        project=project_with_feedback, base_version=base, method="dpo", config=SMALL, sft_first=True
    )

    # when: the SFT stage succeeds
    training_run_execute(run_id=run.pk)

    # then: its model is an intermediate version: no generation job, in no model list
    run.refresh_from_db()
    stage = run.model_version
    assert stage.intermediate
    assert stage.generation_jobs.count() == 0
    here = {"project": project_with_feedback}
    assert list(servable_versions(**here, kind="policy")) == [base]
    assert list(arena_versions(**here)) == list(chat_versions(**here)) == [base]
    assert newest_policy(project=project_with_feedback) == base  # the training form default

    # when: the DPO stage succeeds
    dpo = run.follow_ups.get()
    training_run_execute(run_id=dpo.pk)

    # then: the final version is a candidate like any other, trained from the SFT stage
    dpo.refresh_from_db()
    final = dpo.model_version
    assert not final.intermediate
    assert final.parent == stage
    assert [v.method for v in final.lineage()] == ["base", "sft", "dpo"]
    job = GenerationJob.objects.get()
    assert (job.model_version, job.status) == (final, GenerationJob.Status.QUEUED)
    assert f"generation job #{job.pk} makes candidates" in dpo.log
    assert list(servable_versions(**here, kind="policy")) == [final, base]
