"""Memory of N LoRA versions of one base: merged copies against one shared base.

SmolLM2-135M-Instruct (float32, CPU or CUDA when present) with N LoRA adapters (r=16,
alpha=32, every attention and MLP projection: the SFT default), each with different
random non-zero weights. The same N versions are loaded two ways:

1. merged copies, as ``load_policy`` did before: per version a full base with its adapter
   merged in (``merge_and_unload``);
2. one shared base, as ``load_policy`` does now: the base once, the adapters attached to
   it as named peft adapters, the right one activated per call.

Resident parameter bytes count every distinct tensor storage held by the loaded models
(parameters and buffers), so weights two versions share are counted once. The table also
shows the time of one greedy batch per version (unmerged LoRA adds two small matmuls per
adapted projection, so the shared base may be slower per token) and how many versions
give the same greedy replies both ways.

    .venv/bin/python bench/lora_memory.py          # about a minute

Last line: RESULT lora_shared_memory_ratio=X (merged bytes / shared bytes) versions=N ...
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL_DIRS = (
    REPO / "var" / "test-models" / "SmolLM2-135M-Instruct",  # the test suite's cache
    REPO / "var" / "bench-models" / "SmolLM2-135M-Instruct",
)
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PROMPTS = [
    "Explain photosynthesis in two sentences.",
    "Write a haiku about the sea.",
    "What is compound interest?",
    "Give me three tips for sleeping well.",
]


def model_path() -> Path:
    """The SmolLM2 safetensors folder, converted from the packaged GGUF file once."""
    from models_registry.engine import ml

    for folder in MODEL_DIRS:
        if (folder / "config.json").is_file():
            return folder
    return ml.convert_gguf_to_safetensors(ml.smollm2_gguf_path(), MODEL_DIRS[-1])


def save_random_adapters(base: Path, folder: Path, count: int) -> list[Path]:
    """``count`` LoRA adapters on ``base`` with random non-zero weights, scaled down so
    the replies stay words."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapters = []
    for index in range(count):
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
        config = LoraConfig(
            r=16, lora_alpha=32, target_modules=TARGET_MODULES, init_lora_weights=False
        )
        torch.manual_seed(index + 1)
        peft_model = get_peft_model(model, config)
        with torch.no_grad():
            for name, parameter in peft_model.named_parameters():
                if "lora_B" in name:
                    parameter.mul_(0.05)
        path = folder / f"version-{index + 1}"
        peft_model.save_pretrained(str(path))
        adapters.append(path)
        del model, peft_model
    return adapters


def resident_bytes(modules) -> int:
    """Bytes of the distinct storages behind the modules' parameters and buffers."""
    storages: dict[tuple[str, int], int] = {}
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            storage = tensor.untyped_storage()
            storages[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())


def merged_copy(base: Path, adapter: Path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from models_registry.engine import ml

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return model.to(ml.pick_device()).eval()


def greedy(model, tokenizer, max_new_tokens: int) -> tuple[list[str], float]:
    from models_registry.engine import ml

    conversations = [[{"role": "user", "content": prompt}] for prompt in PROMPTS]
    params = ml.GenerationParams(max_new_tokens=max_new_tokens, do_sample=False)
    started = time.perf_counter()
    replies = ml.generate_replies(model, tokenizer, conversations, params)
    return [reply.text for reply in replies], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--versions", type=int, default=4, help="LoRA versions of the base")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()

    import torch

    from models_registry.engine import ml

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    base = model_path()
    device = ml.pick_device()
    print(
        f"LoRA memory on {device}: SmolLM2-135M-Instruct (float32) from "
        f"{base.relative_to(REPO)}, {args.versions} LoRA versions (r=16 on "
        f"{', '.join(TARGET_MODULES)}); greedy timing: {len(PROMPTS)} prompts in one batch, "
        f"{args.max_new_tokens} new tokens at most.\n",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="lora-memory-") as folder:
        adapters = save_random_adapters(base, Path(folder), args.versions)
        plain, tokenizer = ml.load_policy(base)
        greedy(plain, tokenizer, 4)  # warm-up: first calls allocate and pick kernels

        copies = [merged_copy(base, adapter) for adapter in adapters]
        merged_bytes = resident_bytes(copies)
        merged_runs = [greedy(model, tokenizer, args.max_new_tokens) for model in copies]
        del copies
        gc.collect()

        ml.load_policy.cache_clear()
        base_bytes = resident_bytes([ml.load_policy(base)[0]])
        views = [ml.load_policy(base, adapter) for adapter in adapters]
        shared_bytes = resident_bytes([view for view, _ in views])
        shared_runs = [
            greedy(view, view_tokenizer, args.max_new_tokens) for view, view_tokenizer in views
        ]
        loaded = ml.loaded_bases()

    same = sum(m[0] == s[0] for m, s in zip(merged_runs, shared_runs, strict=True))
    merged_seconds = sum(run[1] for run in merged_runs) / len(merged_runs)
    shared_seconds = sum(run[1] for run in shared_runs) / len(shared_runs)

    mib = 1024 * 1024
    print(f"{'way':<34}{'bases loaded':>14}{'param MiB':>12}{'s/batch':>10}")
    print(
        f"{'merged copies (before)':<34}{args.versions:>14}{merged_bytes / mib:>12.1f}"
        f"{merged_seconds:>10.2f}"
    )
    print(
        f"{'one shared base, named adapters':<34}{len(loaded):>14}{shared_bytes / mib:>12.1f}"
        f"{shared_seconds:>10.2f}"
    )
    print(
        f"\nAdapters attached to the shared base: {sum(len(a) for a in loaded.values())}; "
        f"the {args.versions} adapters add {(shared_bytes - base_bytes) / mib:.1f} MiB to the "
        f"base's {base_bytes / mib:.1f} MiB. Greedy replies equal both ways for {same} of "
        f"{args.versions} versions."
    )
    ratio = merged_bytes / shared_bytes
    print(
        f"RESULT lora_shared_memory_ratio={ratio:.2f} versions={args.versions} "
        f"merged_mib={merged_bytes / mib:.1f} shared_mib={shared_bytes / mib:.1f} "
        f"shared_generation_time_ratio={shared_seconds / merged_seconds:.2f}"
    )


if __name__ == "__main__":
    main()
