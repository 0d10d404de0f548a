"""Do answers move? SmolLM2-135M-Instruct, CPU, each training method at its defaults.

A synthetic preference set with a learnable signal: the preferred reply to "What is the
capital of X?" opens with "Certainly!", the rejected one is the same sentence without it.
A quarter of the prompts are held out. For each recipe the script trains with the method's
default settings and prints the held-out pair accuracy (where the method has one) and the
fraction of held-out greedy answers that open with "Certainly", before and after.

    .venv/bin/python bench/behaviour_shift.py

Last line: RESULT base=F dpo_only=F sft=F sft_then_dpo=F dpo_only_pair_accuracy=F
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from models_registry.engine.ml import (  # noqa: E402
    GenerationParams,
    convert_gguf_to_safetensors,
    generate_replies,
    load_policy,
    merge_adapter_into_base,
    smollm2_gguf_path,
)
from training.methods.common import holdout_split, prompt_key  # noqa: E402
from training.methods.dpo import DPOConfig, train_dpo  # noqa: E402
from training.methods.sft import SFTConfig, train_sft  # noqa: E402

CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Poland", "Warsaw"), ("Greece", "Athens"),
    ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"), ("Ireland", "Dublin"), ("Belgium", "Brussels"),
    ("Hungary", "Budapest"), ("Egypt", "Cairo"), ("Japan", "Tokyo"), ("China", "Beijing"),
    ("Russia", "Moscow"), ("Canada", "Ottawa"), ("Peru", "Lima"), ("Chile", "Santiago"),
    ("Kenya", "Nairobi"), ("Cuba", "Havana"),
]  # fmt: skip
HOLD_OUT = 0.25


def _rows() -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": f"What is the capital of {country}?"}],
            "chosen": [
                {"role": "assistant", "content": f"Certainly! The capital of {country} is {city}."}
            ],
            "rejected": [{"role": "assistant", "content": f"The capital of {country} is {city}."}],
        }
        for country, city in CAPITALS
    ]


def _certainly(base: Path, adapter: Path | None, prompts: list) -> float:
    load_policy.cache_clear()
    model, tokenizer = load_policy(base, adapter)
    replies = generate_replies(
        model, tokenizer, prompts, GenerationParams(max_new_tokens=16, do_sample=False)
    )
    return sum(r.text.startswith("Certainly") for r in replies) / len(replies)


def main() -> None:
    base = convert_gguf_to_safetensors(
        smollm2_gguf_path(), REPO_ROOT / "var" / "test-models" / "SmolLM2-135M-Instruct"
    )
    rows = _rows()
    _, held = holdout_split([prompt_key(r["prompt"]) for r in rows], fraction=HOLD_OUT, seed=0)
    held_prompts = [rows[i]["prompt"] for i in held]
    work = Path(tempfile.mkdtemp(prefix="behaviour-shift-"))
    data = work / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    results: list[tuple[str, float | None, float, float]] = []

    def record(name, started, accuracy, base_path, adapter):
        results.append((name, accuracy, _certainly(base_path, adapter, held_prompts),
                        time.perf_counter() - started))  # fmt: skip
        print(f"  {name}: done in {results[-1][3]:.0f} s", flush=True)

    results.append(("base model", None, _certainly(base, None, held_prompts), 0.0))
    started = time.perf_counter()
    dpo = train_dpo(DPOConfig(eval_fraction=HOLD_OUT), dataset_path=data,
                    base_model_path=base, output_dir=work / "dpo")  # fmt: skip
    record("DPO alone (defaults, NLL 1.0)", started, dpo.metrics["eval_reward_accuracy"],
           base, work / "dpo")  # fmt: skip
    started = time.perf_counter()
    train_sft(SFTConfig(eval_fraction=HOLD_OUT), dataset_path=data,
              base_model_path=base, output_dir=work / "sft")  # fmt: skip
    record("SFT on chosen (defaults)", started, None, base, work / "sft")
    started = time.perf_counter()
    merged = merge_adapter_into_base(base, work / "sft", work / "sft-merged")
    both = train_dpo(DPOConfig(eval_fraction=HOLD_OUT), dataset_path=data,
                     base_model_path=merged, output_dir=work / "sft-dpo")  # fmt: skip
    record("SFT then DPO (the form's default)", started, both.metrics["eval_reward_accuracy"],
           merged, work / "sft-dpo")  # fmt: skip

    print(f"\n{len(rows)} preference pairs, {len(held_prompts)} held-out prompts, CPU")
    print(f"{'recipe':36} {'pair acc':>8} {'Certainly':>9} {'seconds':>8}")
    for name, accuracy, fraction, seconds in results:
        shown = "-" if accuracy is None else f"{accuracy:.2f}"
        print(f"{name:36} {shown:>8} {fraction:>9.2f} {seconds:>8.0f}")
    fractions = [fraction for _, _, fraction, _ in results]
    print(
        f"RESULT base={fractions[0]:.2f} dpo_only={fractions[1]:.2f} sft={fractions[2]:.2f} "
        f"sft_then_dpo={fractions[3]:.2f} dpo_only_pair_accuracy={results[1][1]:.2f}"
    )


if __name__ == "__main__":
    main()
