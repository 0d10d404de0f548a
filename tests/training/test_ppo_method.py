"""training.methods.ppo: every PPO detail on exact small tensors, then whole runs on a
tiny random Llama (CPU only, no Django)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models_registry.engine.ml import (
    GenerationParams,
    generate_replies,
    load_policy,
    verify_artifact,
)
from training.methods.common import (
    Hooks,
    chat_prompt_ids,
    load_causal_lm_for_training,
    read_prompts,
)
from training.methods.ppo import (
    VALUE_HEAD_FILE,
    PolicyWithValueHead,
    PPOConfig,
    TrainingCancelled,
    ValueHead,
    check_scores,
    clipped_policy_loss,
    clipped_value_loss,
    gae_advantages,
    kl_penalty_rewards,
    left_pad,
    masked_mean,
    masked_whiten,
    next_kl_coef,
    pack_batch,
    penalize_missing_eos,
    reply_mask,
    rollout_prompts,
    sampling_kwargs,
    token_logprobs,
    total_rollouts,
    train_ppo,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
T, F = True, False


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """PPO runs many tiny matrix products; on a CPU shared with other jobs, torch's
    worker threads spin-waiting for each other made these tests 5-10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- (1) + (2) KL penalty per token, score on the last reply token -----------------------


def test_kl_penalty_rewards_put_the_score_on_the_last_reply_token_only():
    # given: two replies, the second one token shorter (padding at the end)
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, 9.0]])
    ref_logprobs = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -1.0, -9.0]])
    mask = torch.tensor([[T, T, T], [T, T, F]])
    scores = torch.tensor([2.0, -1.0])

    # when
    rewards, kl = kl_penalty_rewards(logprobs, ref_logprobs, scores, mask, kl_coef=0.1)

    # then: -0.1 * (logp - ref) on every reply token, the score added on the last one
    assert torch.allclose(kl, torch.tensor([[0.5, -1.0, 0.0], [1.0, 0.0, 0.0]]))
    expected = torch.tensor([[-0.05, 0.1, 0.0 + 2.0], [-0.1, 0.0 - 1.0, 0.0]])
    assert torch.allclose(rewards, expected)


# --- (3) replies that never end --------------------------------------------------------


def test_missing_eos_penalty_lowers_only_replies_that_never_ended():
    scores = torch.tensor([0.5, 0.5, -2.0])
    finished = torch.tensor([T, F, F])

    penalized = penalize_missing_eos(scores, finished, penalty=1.0)

    assert penalized.tolist() == [0.5, -0.5, -3.0]


def test_reply_mask_keeps_tokens_up_to_and_including_the_first_eos():
    # given: EOS ids 2 and 7; the first row stops at its first EOS, the last never does
    responses = torch.tensor([[5, 2, 9, 2], [7, 0, 0, 0], [4, 4, 4, 4]])

    mask, finished = reply_mask(responses, eos_ids=[2, 7])

    assert mask.tolist() == [[T, T, F, F], [T, F, F, F], [T, T, T, T]]
    assert finished.tolist() == [T, T, F]


# --- (4) adaptive KL controller --------------------------------------------------------


def test_adaptive_kl_coef_moves_by_the_clipped_proportional_error():
    # error = 9/6 - 1 = 0.5, clipped to 0.2: coef * (1 + 0.2 * 100 / 10000)
    assert next_kl_coef(0.1, kl=9.0, target=6.0, horizon=10000, n_steps=100) == pytest.approx(
        0.1 * 1.002
    )
    # error = 5.4/6 - 1 = -0.1, inside the clip
    assert next_kl_coef(0.1, kl=5.4, target=6.0, horizon=10000, n_steps=100) == pytest.approx(
        0.1 * (1 - 0.1 * 0.01)
    )
    # error = 0/6 - 1 = -1, clipped to -0.2
    assert next_kl_coef(0.1, kl=0.0, target=6.0, horizon=1000, n_steps=10) == pytest.approx(
        0.1 * (1 - 0.2 * 0.01)
    )
    assert next_kl_coef(0.1, kl=6.0, target=6.0, horizon=10, n_steps=10) == 0.1


# --- (5) value head starts at zero -----------------------------------------------------


def test_value_head_starts_with_zero_weights_and_outputs_exactly_zero():
    torch.manual_seed(0)
    head = ValueHead(hidden_size=8)

    values = head(torch.randn(2, 5, 8) * 100)

    assert values.shape == (2, 5)
    assert torch.equal(values, torch.zeros(2, 5))
    assert torch.count_nonzero(head.summary.weight) == 0
    assert torch.count_nonzero(head.summary.bias) == 0


# --- (6) GAE ---------------------------------------------------------------------------


def test_gae_matches_a_hand_computation():
    # given: one 3-token reply and one 2-token reply (padding holds junk)
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, -1.0, 7.0]])
    values = torch.tensor([[0.5, 0.2, 0.1], [0.3, 0.4, 9.0]])
    mask = torch.tensor([[T, T, T], [T, T, F]])

    advantages, returns = gae_advantages(rewards, values, mask, gamma=1.0, lam=0.95)

    # row 0: d2 = 1 - 0.1 = 0.9; d1 = 0 + 0.1 - 0.2 = -0.1; d0 = 0 + 0.2 - 0.5 = -0.3
    #        A2 = 0.9, A1 = -0.1 + 0.95 * 0.9 = 0.755, A0 = -0.3 + 0.95 * 0.755 = 0.41725
    # row 1: d1 = -1 + 0 - 0.4 = -1.4; d0 = 0.5 + 0.4 - 0.3 = 0.6
    #        A1 = -1.4, A0 = 0.6 + 0.95 * -1.4 = -0.73
    expected = torch.tensor([[0.41725, 0.755, 0.9], [-0.73, -1.4, 0.0]])
    assert torch.allclose(advantages, expected)
    assert torch.allclose(returns, torch.tensor([[0.91725, 0.955, 1.0], [-0.43, -1.0, 0.0]]))


def test_gae_with_gamma_and_lambda_one_is_returns_to_go_minus_values():
    rewards = torch.tensor([[0.1, -0.2, 0.3, 1.0]])
    values = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    mask = torch.ones(1, 4, dtype=torch.bool)

    advantages, returns = gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0)

    returns_to_go = torch.tensor([[1.2, 1.1, 1.3, 1.0]])
    assert torch.allclose(returns, returns_to_go)
    assert torch.allclose(advantages, returns_to_go - values)


# --- (7) clipped policy loss -----------------------------------------------------------


def test_clipped_policy_loss_takes_the_pessimistic_term_per_token():
    # given: ratios 1.0, 1.5 and 0.5 (the last masked out in the second case)
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.0, 1.5, 0.5]]))
    advantages = torch.tensor([[1.0, 1.0, -1.0]])

    # when
    loss, clipfrac = clipped_policy_loss(new, old, advantages, torch.ones(1, 3), cliprange=0.2)
    masked_loss, masked_clipfrac = clipped_policy_loss(
        new, old, advantages, torch.tensor([[T, T, F]]), cliprange=0.2
    )

    # then: per token max(-A r, -A clip(r)) = [-1, -1.2, 0.8]; the last two are clipped
    assert loss.item() == pytest.approx((-1.0 - 1.2 + 0.8) / 3)
    assert clipfrac.item() == pytest.approx(2 / 3)
    assert masked_loss.item() == pytest.approx((-1.0 - 1.2) / 2)
    assert masked_clipfrac.item() == pytest.approx(1 / 2)


@pytest.mark.parametrize(
    ("advantage", "ratio", "clipped"),
    [
        (1.0, 1.199, False),
        (1.0, 1.201, True),
        (-1.0, 0.801, False),
        (-1.0, 0.799, True),
        (1.0, 0.5, False),  # a bad step for a good token is never clipped
        (-1.0, 1.5, False),  # nor a good step for a bad one
    ],
)
def test_policy_clipping_engages_exactly_past_the_boundary(advantage, ratio, clipped):
    logprobs = torch.tensor([[math.log(ratio)]], requires_grad=True)

    loss, clipfrac = clipped_policy_loss(
        logprobs, torch.zeros(1, 1), torch.tensor([[advantage]]), torch.ones(1, 1), 0.2
    )
    loss.backward()

    assert clipfrac.item() == (1.0 if clipped else 0.0)
    if clipped:
        assert logprobs.grad.item() == 0.0
    else:
        assert logprobs.grad.item() == pytest.approx(-advantage * ratio)


# --- (8) clipped value loss ------------------------------------------------------------


def test_clipped_value_loss_clips_only_past_the_range_and_only_when_worse():
    # given: old value 0, cliprange 0.2; predictions at, past and past-but-better
    values = torch.tensor([[0.2, 0.3, 0.3]], requires_grad=True)
    old_values = torch.zeros(1, 3)
    returns = torch.tensor([[1.0, 1.0, -1.0]])

    # when
    loss, clipfrac = clipped_value_loss(values, old_values, returns, torch.ones(1, 3), 0.2)
    loss.backward()

    # then: [0.2 at the boundary: (0.8)^2, 0.3 clipped to 0.2: (0.8)^2 > (0.7)^2,
    #        0.3 vs -1: unclipped (1.3)^2 > clipped (1.2)^2]
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.64 + 1.69) / 3)
    assert clipfrac.item() == pytest.approx(1 / 3)
    grads = values.grad[0].tolist()
    assert grads[0] == pytest.approx(0.5 * 2 * (0.2 - 1.0) / 3)
    assert grads[1] == 0.0
    assert grads[2] == pytest.approx(0.5 * 2 * (0.3 + 1.0) / 3)


# --- (9) whitening and masking ---------------------------------------------------------


def test_masked_whiten_gives_mean_zero_std_one_over_valid_tokens_and_zero_padding():
    values = torch.tensor([[1.0, 2.0, 3.0, 99.0], [2.0, 1000.0, -5.0, 7.0]])
    mask = torch.tensor([[T, T, T, F], [T, F, F, F]])

    whitened = masked_whiten(values, mask)

    # valid values [1, 2, 3, 2]: mean 2, unbiased std sqrt(2/3)
    scale = math.sqrt(3 / 2)
    expected = [[-scale, 0.0, scale, 0.0], [0.0, 0.0, 0.0, 0.0]]
    assert torch.allclose(whitened, torch.tensor(expected), atol=1e-6)
    valid = whitened[mask]
    assert valid.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert valid.std().item() == pytest.approx(1.0, abs=1e-6)


def test_masked_mean_ignores_nan_and_inf_in_padding():
    values = torch.tensor([[1.0, float("nan")], [3.0, float("inf")]])
    mask = torch.tensor([[T, F], [T, F]])

    assert masked_mean(values, mask).item() == 2.0
    assert masked_mean(values, mask, dim=1).tolist() == [1.0, 3.0]


# --- (10) + (11) sampling and log-probs at the sampling temperature ----------------------


def test_sampling_kwargs_sample_at_the_temperature_without_top_k_or_top_p():
    kwargs = sampling_kwargs(max_new_tokens=12, temperature=0.7, eos_ids=[2, 5], pad_id=2)

    assert kwargs == {
        "do_sample": True,
        "temperature": 0.7,
        "top_k": 0,
        "top_p": 1.0,
        "max_new_tokens": 12,
        "eos_token_id": [2, 5],
        "pad_token_id": 2,
    }


def test_token_logprobs_divide_the_logits_by_the_temperature():
    logits = torch.tensor([[[0.0, 2.0, 4.0]]])
    tokens = torch.tensor([[1]])

    at_one = token_logprobs(logits, tokens, temperature=1.0)
    at_two = token_logprobs(logits, tokens, temperature=2.0)

    assert at_one.item() == pytest.approx(2.0 - math.log(1 + math.exp(2) + math.exp(4)))
    assert at_two.item() == pytest.approx(1.0 - math.log(1 + math.exp(1) + math.exp(2)))


def test_log_probs_of_a_rollout_equal_those_generate_sampled_from(tiny_model_dir):
    # given: the policy samples with left-padded prompts of different lengths
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    config = PPOConfig(lora_r=4)
    model = PolicyWithValueHead(load_causal_lm_for_training(tiny_model_dir, config, device="cpu"))
    prompts = [[{"role": "user", "content": text}] for text in ("Hi", "Tell me a long story.")]
    queries = [chat_prompt_ids(tokenizer, messages) for messages in prompts]
    input_ids, attention_mask = left_pad(queries, pad_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    output = model.policy.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        output_scores=True,
        return_dict_in_generate=True,
        **sampling_kwargs(
            max_new_tokens=5,
            temperature=0.3,
            eos_ids=[tokenizer.eos_token_id],
            pad_id=tokenizer.pad_token_id,
        ),
    )
    replies = output.sequences[:, input_ids.shape[1] :]
    sampled_from = torch.stack([torch.log_softmax(s.float(), -1) for s in output.scores], dim=1)
    expected = sampled_from.gather(-1, replies.unsqueeze(-1)).squeeze(-1)

    # when: the same replies go through the training forward pass
    batch = pack_batch(queries, replies.tolist(), pad_id=tokenizer.pad_token_id, device="cpu")
    with torch.no_grad():
        logits, values = model(batch)
    logprobs = token_logprobs(logits, batch.response_ids, temperature=0.3)

    # then
    assert torch.allclose(logprobs, expected, atol=1e-5)
    assert torch.equal(values, torch.zeros_like(values))


# --- Prompts and schedule --------------------------------------------------------------


def test_rollout_prompts_walk_shuffled_passes_over_the_prompts():
    steps = [rollout_prompts(step, prompts=5, batch=3, seed=0) for step in range(5)]
    stream = [i for step in steps for i in step]

    # every pass of 5 is a permutation; step 1 straddles the first two passes
    assert sorted(stream[:5]) == [0, 1, 2, 3, 4]
    assert sorted(stream[5:10]) == [0, 1, 2, 3, 4]
    assert steps[1] == rollout_prompts(1, prompts=5, batch=3, seed=0)
    assert rollout_prompts(0, prompts=5, batch=5, seed=1) != steps[0] + steps[1][:2]


def test_total_rollouts_counts_epochs_over_prompts_capped_by_max_steps():
    assert total_rollouts(PPOConfig(epochs=3, rollout_batch_size=16), 40) == 8
    assert total_rollouts(PPOConfig(epochs=3, rollout_batch_size=16, max_steps=5), 40) == 5
    assert total_rollouts(PPOConfig(epochs=1, rollout_batch_size=16), 3) == 1


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_read_prompts_takes_prompt_or_messages_without_the_last_reply(tmp_path):
    hello = [{"role": "user", "content": "Hello"}]
    path = _write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"prompt": hello, "chosen": [{"role": "assistant", "content": "Hi"}]},
            {"messages": [*hello, {"role": "assistant", "content": "Hey"}]},
            {"messages": [{"role": "user", "content": "Bye"}], "extra": 1},
        ],
    )

    prompts = read_prompts(path)

    assert prompts == [(1, hello), (3, [{"role": "user", "content": "Bye"}])]


def test_check_scores_rejects_a_wrong_count_or_non_finite_values():
    assert check_scores([1, 2.5], 2).tolist() == [1.0, 2.5]
    with pytest.raises(ValueError, match="score returned 1 values for 2 replies"):
        check_scores([1.0], 2)
    with pytest.raises(ValueError, match="not a finite number"):
        check_scores([1.0, float("nan")], 2)
    with pytest.raises(ValueError, match="must return a list of numbers"):
        check_scores(["a", 1.0], 2)


# --- Whole runs ------------------------------------------------------------------------

WORDS = ["cats", "dogs", "rain", "music", "trees", "bread", "snow", "ships", "maps", "tea"]


@pytest.fixture
def prompt_file(tmp_path: Path) -> Path:
    rows = [{"prompt": [{"role": "user", "content": f"Tell me about {w}."}]} for w in WORDS]
    return _write_jsonl(tmp_path / "prompts.jsonl", rows)


def no_leading_line_break(prompts: list, replies: list[str]) -> list[float]:
    """Rule-based reward: 0 for a reply that starts with a line break, else 1.

    The tiny random model's most likely first token is the line break that ends the
    generation prompt (its tied embeddings make repeating the last token the argmax)."""
    assert len(prompts) == len(replies)
    return [0.0 if reply.startswith("\n") else 1.0 for reply in replies]


def tiny_config(**overrides) -> PPOConfig:
    # The random model's logits are nearly flat (entropy ~10.8 nats at temperature 1, so
    # nothing a LoRA does changes a sample much); at temperature 0.04 the line break is
    # sampled first about a third of the time, which gives the reward something to move.
    values = {
        "learning_rate": 5e-3,
        "warmup_ratio": 0.0,
        "epochs": 100,
        "max_steps": 5,
        "rollout_batch_size": 16,
        "mini_batch_size": 8,
        "max_new_tokens": 2,
        "temperature": 0.04,
        "lora_r": 8,
        "lora_alpha": 16,
        "eval_fraction": 0.2,
        "max_length": 128,
        "max_prompt_length": 64,
    }
    values.update(overrides)
    return PPOConfig(**values)


def test_ppo_raises_a_rule_based_score_and_saves_a_loadable_adapter(
    tiny_model_dir, prompt_file, tmp_path
):
    # given
    steps = []
    output_dir = tmp_path / "adapter"

    # when
    result = train_ppo(
        tiny_config(),
        dataset_path=prompt_file,
        base_model_path=tiny_model_dir,
        output_dir=output_dir,
        score=no_leading_line_break,
        hooks=Hooks(on_step=lambda step, total, metrics: steps.append((step, total, metrics))),
    )

    # then: progress per rollout with every metric finite
    assert result.steps == 5
    assert [(step, total) for step, total, _ in steps] == [(i, 5) for i in range(1, 6)]
    history = [metrics for _, _, metrics in steps]
    expected_keys = {
        "score",
        "reward",
        "kl",
        "kl_coef",
        "entropy",
        "policy_loss",
        "value_loss",
        "clipfrac",
        "approx_kl",
        "reply_length",
        "eos_rate",
        "learning_rate",
    }
    for metrics in history:
        assert expected_keys <= metrics.keys()
        assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    # The adapter starts at zero: the first rollout's policy is the reference exactly.
    assert history[0]["kl"] == 0.0
    assert history[0]["kl_coef"] == 0.05
    # Reported figures (seed 0): scores 0.81, 0.81, 1.0, 1.0, 1.0; held out 0.75 -> 1.0.
    scores = [m["score"] for m in history]
    assert sum(scores[-2:]) / 2 > sum(scores[:2]) / 2 + 0.1
    assert scores[-1] >= 0.9
    assert result.metrics["eval_score_after"] > result.metrics["eval_score_before"]
    assert result.metrics["eval_prompts"] == 2.0

    verify_artifact(output_dir)
    assert (output_dir / VALUE_HEAD_FILE).is_file()
    record = json.loads((output_dir / "training_result.json").read_text())
    assert record["method"] == "ppo"
    assert record["steps"] == 5
    assert [m["score"] for m in record["history"]] == scores
    assert record["config"]["temperature"] == 0.04
    assert set(record["library_versions"]) == {"torch", "transformers", "peft"}

    model, tokenizer = load_policy(tiny_model_dir, output_dir)
    [reply] = generate_replies(
        model,
        tokenizer,
        [[{"role": "user", "content": "Tell me about clouds."}]],
        GenerationParams(max_new_tokens=3, temperature=0.04, top_p=1.0, seed=1),
    )
    assert 1 <= reply.completion_tokens <= 3
    assert isinstance(reply.text, str)


def test_resumed_run_matches_an_uninterrupted_one(tiny_model_dir, prompt_file, tmp_path):
    # given: a short run, and the same run stopped after two rollouts then resumed
    config = tiny_config(
        max_steps=3, rollout_batch_size=4, mini_batch_size=2, eval_fraction=0.0, checkpoint_every=1
    )
    full = []
    train_ppo(
        config,
        dataset_path=prompt_file,
        base_model_path=tiny_model_dir,
        output_dir=tmp_path / "full",
        score=no_leading_line_break,
        hooks=Hooks(on_step=lambda s, t, m: full.append(m)),
    )
    checkpoints = tmp_path / "checkpoints"
    first = []
    with pytest.raises(TrainingCancelled):
        train_ppo(
            config,
            dataset_path=prompt_file,
            base_model_path=tiny_model_dir,
            output_dir=tmp_path / "resumed",
            score=no_leading_line_break,
            hooks=Hooks(
                on_step=lambda s, t, m: first.append(m),
                should_stop=lambda: len(first) >= 2,
                checkpoint_dir=checkpoints,
            ),
        )

    # when
    second = []
    result = train_ppo(
        config,
        dataset_path=prompt_file,
        base_model_path=tiny_model_dir,
        output_dir=tmp_path / "resumed",
        score=no_leading_line_break,
        hooks=Hooks(on_step=lambda s, t, m: second.append((s, m)), checkpoint_dir=checkpoints),
    )

    # then: the resumed run did only the third rollout, and did it exactly as before
    assert [s for s, _ in second] == [3]

    def comparable(metrics: dict) -> dict:
        return {k: v for k, v in metrics.items() if k != "step_seconds"}

    assert [comparable(m) for m in first] == [comparable(m) for m in full[:2]]
    assert comparable(second[0][1]) == comparable(full[2])
    assert result.steps == 3
    from safetensors.torch import load_file

    full_weights = load_file(str(tmp_path / "full" / "adapter_model.safetensors"))
    resumed_weights = load_file(str(tmp_path / "resumed" / "adapter_model.safetensors"))
    assert full_weights.keys() == resumed_weights.keys()
    assert all(torch.equal(full_weights[k], resumed_weights[k]) for k in full_weights)


def test_should_stop_cancels_and_saves_nothing(tiny_model_dir, prompt_file, tmp_path):
    steps = []

    with pytest.raises(TrainingCancelled):
        train_ppo(
            tiny_config(max_steps=3, rollout_batch_size=4, mini_batch_size=4),
            dataset_path=prompt_file,
            base_model_path=tiny_model_dir,
            output_dir=tmp_path / "out",
            score=no_leading_line_break,
            hooks=Hooks(on_step=lambda s, t, m: steps.append(s), should_stop=lambda: bool(steps)),
        )

    assert steps == [1]
    assert not (tmp_path / "out").exists()


def test_a_score_function_returning_the_wrong_count_stops_the_run(
    tiny_model_dir, prompt_file, tmp_path
):
    with pytest.raises(ValueError, match="score returned 1 values for 4 replies"):
        train_ppo(
            tiny_config(max_steps=1, rollout_batch_size=4, mini_batch_size=4, eval_fraction=0.0),
            dataset_path=prompt_file,
            base_model_path=tiny_model_dir,
            output_dir=tmp_path / "out",
            score=lambda prompts, replies: [1.0],
        )
    assert not (tmp_path / "out").exists()


def test_config_from_dict_round_trips():
    config = PPOConfig.from_dict({"temperature": 1.0, "adaptive_kl": False, "max_steps": 10})
    assert (config.temperature, config.adaptive_kl, config.max_steps) == (1.0, False, 10)
    assert PPOConfig.from_dict(config.to_dict()) == config
    assert PPOConfig.method_name == "PPO"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kl_coef": 0.1}, "unknown PPO config key(s): kl_coef"),
        ({"temperature": 0}, "temperature must be > 0"),
        ({"mini_batch_size": 32}, "mini_batch_size must be >= 1 and <= rollout_batch_size"),
        ({"ppo_epochs": 0}, "ppo_epochs must be >= 1"),
        ({"cliprange": 0.0}, "cliprange must be > 0"),
        ({"cliprange_value": -1.0}, "cliprange_value must be > 0"),
        ({"lam": 1.5}, "lam must be in [0, 1]"),
        ({"gamma": -0.1}, "gamma must be in [0, 1]"),
        ({"init_kl_coef": -0.1}, "init_kl_coef must be >= 0"),
        ({"kl_target": 0}, "kl_target must be > 0"),
        ({"kl_horizon": 0}, "kl_horizon must be >= 1"),
        ({"vf_coef": -1}, "vf_coef must be >= 0"),
        ({"missing_eos_penalty": -1}, "missing_eos_penalty must be >= 0"),
        ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
        ({"max_new_tokens": 300}, "max_prompt_length + max_new_tokens must be <= max_length"),
        ({"lora_r": 0}, "lora_r must be >= 1"),
        ({"gradient_accumulation_steps": 2}, "gradient_accumulation_steps must be 1 for PPO"),
        ({"curriculum": "length"}, "curriculum must be null for PPO"),
        ({"adaptive_kl": 1}, "adaptive_kl must be true or false"),
        ({"eval_samples": 0}, "eval_samples must be >= 1"),
        ({"lora_dropout": 0.1}, "lora_dropout must be 0 for PPO"),
    ],
)
def test_config_from_dict_rejects_bad_input(data, message):
    with pytest.raises(ValueError) as excinfo:
        PPOConfig.from_dict(data)
    assert message in str(excinfo.value)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "line 2: invalid JSON"),
        (json.dumps({"chosen": []}), "line 2: missing 'prompt' (or 'messages')"),
        (json.dumps({"prompt": "hi"}), "line 2: 'prompt' must be a non-empty list"),
        (
            json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}),
            "line 2: 'messages' holds no prompt before its reply",
        ),
    ],
)
def test_bad_dataset_line_names_the_line(tiny_model_dir, tmp_path, bad_line, message):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"prompt": [{"role": "user", "content": "ok"}]})
    path.write_text(good + "\n" + bad_line + "\n", encoding="utf-8")

    with pytest.raises(ValueError) as excinfo:
        train_ppo(
            PPOConfig(),
            dataset_path=path,
            base_model_path=tiny_model_dir,
            output_dir=tmp_path / "out",
            score=no_leading_line_break,
        )
    assert message in str(excinfo.value)
    assert not (tmp_path / "out").exists()


def test_empty_dataset_is_rejected(tiny_model_dir, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no prompts"):
        train_ppo(
            PPOConfig(),
            dataset_path=path,
            base_model_path=tiny_model_dir,
            output_dir=tmp_path / "out",
            score=no_leading_line_break,
        )


@pytest.mark.smoke
def test_one_ppo_step_on_smollm2(smollm2_model_dir, tmp_path):
    # given: real chat prompts and a reward for short replies
    questions = ["What is 2+2?", "Name a fruit.", "Say hello in Spanish.", "Name a colour."]
    path = _write_jsonl(
        tmp_path / "questions.jsonl",
        [{"prompt": [{"role": "user", "content": q}]} for q in questions],
    )
    config = PPOConfig(
        max_steps=1,
        rollout_batch_size=4,
        mini_batch_size=4,
        batch_size=4,
        max_new_tokens=24,
        eval_fraction=0.0,
    )
    steps = []

    # when
    train_ppo(
        config,
        dataset_path=path,
        base_model_path=smollm2_model_dir,
        output_dir=tmp_path / "adapter",
        score=lambda prompts, replies: [1.0 - len(reply) / 100 for reply in replies],
        hooks=Hooks(on_step=lambda s, t, m: steps.append(m)),
    )

    # then: the instruct model ends some replies with its EOS (<|im_end|>) in 24 tokens
    [metrics] = steps
    assert metrics["kl"] == 0.0
    assert metrics["eos_rate"] > 0.0
    assert all(math.isfinite(value) for value in metrics.values())
    model, tokenizer = load_policy(smollm2_model_dir, tmp_path / "adapter")
    [reply] = generate_replies(
        model,
        tokenizer,
        [[{"role": "user", "content": "What is 3+3?"}]],
        GenerationParams(max_new_tokens=16, do_sample=False),
    )
    assert reply.text


def test_ppo_imports_without_django():
    code = "import sys; sys.modules['django'] = None; import training.methods.ppo"
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
