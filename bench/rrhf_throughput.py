"""RRHF training throughput and peak memory on SmolLM2-135M-Instruct (CPU; CUDA when present).

No library ships RRHF, so there is nothing to compare against (``train_throughput.py``
compares our SFT, reward and DPO trainers with TRL's); this prints our figures alone:
``training.methods.rrhf.train_rrhf`` with the default LoRA (r 16, alpha 32), 16 prompts
of k=3 scored responses (a helpful reply, a half-helpful one, a vague one: the synthetic
data of ``train_throughput.py``), 2 prompts (6 sequences) per step, one epoch, max
length 512. Tokens are the non-padding tokens of every response sequence (prompt +
reply) fed to training; the time runs from the first ``should_stop`` poll to the last
``on_step`` hook, so loading, the before/after ranking evaluation and saving fall
outside. Peak memory is the process's peak resident set (CPU) or CUDA's peak allocation.
Ends with

    RESULT rrhf_tokens_per_s=N rrhf_peak_mib=N
"""

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from train_throughput import BAD, GOOD, MODEL_DIRS, TOPICS, synthetic_rows  # noqa: E402


def ranked_rows(count: int, seed: int) -> list[dict]:
    """Per prompt: the chosen reply (score 2), a half-helpful one (1), the vague one (0)."""
    pick = random.Random(seed + 1)
    rows = []
    for index, row in enumerate(synthetic_rows(count, seed)):
        topic = TOPICS[index % len(TOPICS)]
        middle = " ".join([pick.choice(GOOD).format(t=topic), pick.choice(BAD).format(t=topic)])
        rows.append(
            {
                "prompt": row["prompt"],
                "responses": [row["chosen"][0]["content"], middle, row["rejected"][0]["content"]],
                "scores": [2, 1, 0],
            }
        )
    return rows


def peak_memory_mib() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args()
    model_dir = next((d for d in MODEL_DIRS if (d / "config.json").is_file()), None)
    if model_dir is None:
        sys.exit("SmolLM2-135M-Instruct not found: run the smoke tests once to convert it")

    from transformers import AutoTokenizer

    from training.methods.common import Hooks, pick_device, prepare_tokenizer
    from training.methods.rrhf import RRHFConfig, load_ranked_prompts, train_rrhf

    config = RRHFConfig(batch_size=args.batch_size, epochs=1, eval_fraction=0.0, seed=0)
    times: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "ranked.jsonl"
        data.write_text(
            "".join(json.dumps(row) + "\n" for row in ranked_rows(args.prompts, seed=0)),
            encoding="utf-8",
        )
        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(str(model_dir)))
        tokens = sum(p.tokens for p in load_ranked_prompts(data, tokenizer, config))

        def poll() -> bool:
            if not times:
                times.append(time.perf_counter())
            return False

        def stepped(step: int, total: int, metrics: dict) -> None:
            times.append(time.perf_counter())
            print(
                f"step {step}/{total} loss {metrics['loss']:.3f} "
                f"rank {metrics['rank_loss']:.3f} sft {metrics['sft_loss']:.3f} "
                f"acc {metrics['ranking_accuracy']:.2f}",
                flush=True,
            )

        result = train_rrhf(
            config,
            dataset_path=data,
            base_model_path=model_dir,
            output_dir=Path(folder) / "out",
            hooks=Hooks(on_step=stepped, should_stop=poll),
        )
    seconds = times[-1] - times[0]
    tokens_per_s = tokens / seconds
    peak = peak_memory_mib()
    print(
        f"device {pick_device()}  prompts {args.prompts} x k=3  steps {result.steps}  "
        f"tokens {tokens}  seconds {seconds:.1f}  ranking accuracy "
        f"{result.metrics['initial_train_ranking_accuracy']:.2f} -> "
        f"{result.metrics['final_train_ranking_accuracy']:.2f}"
    )
    print(f"RESULT rrhf_tokens_per_s={tokens_per_s:.1f} rrhf_peak_mib={peak:.0f}")


if __name__ == "__main__":
    main()
