"""Learning, not just fitting: on a preference set with a learnable signal, the trained
policy's greedy answers to held-out prompts move towards the preferred behaviour.

Pair accuracy alone proves little (DPO can separate chosen from rejected while its
generations stay the same), so these tests read the generations. Tiny random model, CPU.
"""

import json

import pytest

from models_registry.engine.ml import (
    GenerationParams,
    generate_replies,
    load_policy,
    merge_adapter_into_base,
)
from training.methods.common import holdout_split, prompt_key
from training.methods.dpo import DPOConfig, train_dpo
from training.methods.evaluation import behaviour_fraction
from training.methods.sft import SFTConfig, train_sft

FAST = {"lora_r": 8, "lora_alpha": 16, "batch_size": 8, "eval_fraction": 0.25, "seed": 0}


@pytest.fixture(scope="module")
def preferences(tmp_path_factory):
    """Varied questions; the preferred reply opens with "yes", the rejected with "no"."""
    topics = ["cats", "rain", "music", "tea", "maps", "boats", "stars", "bread"]
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Do you like {topic}, question {i}?"}],
            "chosen": [{"role": "assistant", "content": f"yes, {topic}"}],
            "rejected": [{"role": "assistant", "content": f"no, {topic}"}],
        }
        for i in range(4)
        for topic in topics
    ]
    path = tmp_path_factory.mktemp("learning") / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    _, held = holdout_split([prompt_key(r["prompt"]) for r in rows], fraction=0.25, seed=0)
    return path, [rows[i]["prompt"] for i in held]


def _says_yes(base, adapter, prompts) -> float:
    load_policy.cache_clear()
    model, tokenizer = load_policy(base, adapter)
    params = GenerationParams(max_new_tokens=4, do_sample=False)
    replies = generate_replies(model, tokenizer, prompts, params)
    return behaviour_fraction([r.text for r in replies], lambda text: text.startswith("yes"))


def test_sft_then_dpo_moves_held_out_answers_while_plain_dpo_only_fits_pairs(
    tiny_model_dir, preferences, tmp_path
):
    dataset, held_out = preferences
    before = _says_yes(tiny_model_dir, None, held_out)

    # Plain DPO (no NLL term): the pairs separate ...
    plain = train_dpo(
        DPOConfig(**FAST, learning_rate=5e-3, max_steps=12, nll_weight=0.0),
        dataset_path=dataset,
        base_model_path=tiny_model_dir,
        output_dir=tmp_path / "dpo-plain",
    )
    plain_after = _says_yes(tiny_model_dir, tmp_path / "dpo-plain", held_out)

    # ... the default pipeline: SFT on the chosen replies, then DPO with its NLL term.
    train_sft(
        SFTConfig(**FAST, learning_rate=5e-3, max_steps=12),
        dataset_path=dataset,
        base_model_path=tiny_model_dir,
        output_dir=tmp_path / "sft",
    )
    after_sft = _says_yes(tiny_model_dir, tmp_path / "sft", held_out)
    merged = merge_adapter_into_base(tiny_model_dir, tmp_path / "sft", tmp_path / "sft-merged")
    dpo = train_dpo(
        DPOConfig(**FAST, learning_rate=5e-3, max_steps=12),
        dataset_path=dataset,
        base_model_path=merged,
        output_dir=tmp_path / "dpo",
    )
    after_dpo = _says_yes(merged, tmp_path / "dpo", held_out)

    print(
        f"held-out answers opening with 'yes' ({len(held_out)} prompts): before {before:.2f}, "
        f"plain DPO {plain_after:.2f} (eval reward accuracy "
        f"{plain.metrics['eval_reward_accuracy']:.2f}), SFT {after_sft:.2f}, "
        f"SFT+DPO {after_dpo:.2f} (eval reward accuracy {dpo.metrics['eval_reward_accuracy']:.2f})"
    )
    assert before <= 0.25
    assert after_dpo >= 0.75
    assert dpo.metrics["eval_reward_accuracy"] >= 0.75
    # Plain DPO separates the held-out pairs as well, yet its answers moved less.
    assert plain.metrics["eval_reward_accuracy"] >= 0.75
    assert plain_after < after_dpo
