"""Training throughput: our SFT, reward and DPO trainers against plain TRL scripts.

Runs with no arguments on CPU (CUDA when present). Each of SFT, reward-model and DPO
training runs twice on SmolLM2-135M-Instruct with the same LoRA adapter, data, batch
size, maximum length, learning rate, seed and number of optimizer steps: once through
``training.methods.<method>.train_<method>`` and once through a plain TRL script
(``SFTTrainer``, ``RewardTrainer``, ``DPOTrainer`` with a peft ``LoraConfig``) that keeps
TRL's defaults for everything else (gradient checkpointing, bf16 autocast, a reference
forward pass every DPO step, ...). Every one of the six trainings runs in its own
subprocess so its peak memory is its own. It prints a table and ends with

    RESULT sft_ratio_vs_trl=N reward_ratio_vs_trl=N dpo_ratio_vs_trl=N

where N is our tokens/s divided by TRL's. Tokens are the non-padding tokens of the
sequences fed to training (prompt + reply for SFT; chosen + rejected for reward and
DPO), counted on each side from what that side fed; a pass of the frozen reference
model is not counted again. The time is the training alone, on both sides from the
moment the model is loaded and the data tokenized to the end of the last optimizer
step: TRL's ``on_train_begin`` to its last ``on_step_end`` callback, and our first
``should_stop`` poll (which comes before DPO's one-off reference pass, so that pass is
included) to our last ``on_step`` hook. Loading, evaluation, the reward model's
normalisation and saving fall outside on both sides.
"""

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL_DIRS = (
    REPO / "var" / "test-models" / "SmolLM2-135M-Instruct",  # the test suite's cache
    REPO / "var" / "bench-models" / "SmolLM2-135M-Instruct",
)
METHODS = ("sft", "reward", "dpo")
SIDES = ("ours", "trl")
# Other processes using more than this many cores on average make a run's figures noise.
NOISY_CORES = 0.3
WORKER_MARK = "WORKER_RESULT "

# What both sides share. LoRA as our TrainingConfig defaults it (r 16, alpha 32, no
# dropout, every linear layer but the LM head), our learning rate; the rest sized so the
# six runs fit the 10-minute budget on 2 cores.
SHARED = {
    "rows": 24,
    "batch_size": 8,
    "epochs": 2,
    "max_length": 512,
    "learning_rate": 1e-4,
    "lora_r": 16,
    "lora_alpha": 32.0,
    "seed": 0,
}


# --- Data -------------------------------------------------------------------------------

TOPICS = (
    "photosynthesis", "compound interest", "the water cycle", "recursion", "plate tectonics",
    "vaccines", "binary search", "inflation", "black holes", "the French revolution",
    "supply and demand", "neural networks", "climate change", "the immune system",
    "public key cryptography", "evolution", "gravity", "the stock market", "volcanoes",
    "sleep", "democracy", "electric cars", "the internet", "tides", "rainbows",
    "memory in the brain", "bread baking", "composting", "the moon landing", "earthquakes",
    "bees", "coffee",
)  # fmt: skip
ASKS = (
    "Explain {} in simple terms.",
    "What should a beginner know about {}?",
    "Give me a short overview of {}.",
    "Why does {} matter?",
)
GOOD = (
    "At its core, {t} is easier to grasp than it first seems.",
    "A useful way to picture {t} is to follow one small example from start to finish.",
    "The key idea is that small causes add up over time into large effects.",
    "Scientists and teachers usually start with the simplest case and then add detail.",
    "It helps to separate what is observed from the explanation behind it.",
    "Most misunderstandings come from mixing up the cause with the result.",
    "In everyday life you can see traces of {t} if you know where to look.",
    "A good next step is to read one introductory chapter and try a small experiment.",
    "Remember that the details change, but the underlying principle stays the same.",
    "If you keep those points in mind, the rest of {t} falls into place naturally.",
)
BAD = (
    "I am not sure about {t}.",
    "That is a complicated question and people disagree about it.",
    "You could search the web for {t}.",
    "There are many things to say, but it depends.",
    "Some say one thing and others say another.",
)


def synthetic_rows(count: int, seed: int) -> list[dict]:
    """Conversational preference rows (prompt, chosen, rejected): one user turn, a helpful
    chosen reply of 55-115 tokens and a vague rejected one of 15-45."""
    pick = random.Random(seed)
    rows = []
    for index in range(count):
        topic = TOPICS[index % len(TOPICS)]
        ask = ASKS[(index // len(TOPICS)) % len(ASKS)].format(topic)
        good = " ".join(s.format(t=topic) for s in pick.sample(GOOD, pick.randint(4, 7)))
        bad = " ".join(s.format(t=topic) for s in pick.sample(BAD, pick.randint(2, 4)))
        rows.append(
            {
                "prompt": [{"role": "user", "content": ask}],
                "chosen": [{"role": "assistant", "content": good}],
                "rejected": [{"role": "assistant", "content": bad}],
            }
        )
    return rows


def sft_rows(rows: list[dict]) -> list[dict]:
    """SFT rows in TRL's conversational prompt-completion form: the prompt and its
    chosen reply (the loss falls on the reply on both sides)."""
    return [{"prompt": row["prompt"], "completion": row["chosen"]} for row in rows]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


# --- Workers (one training per subprocess) ----------------------------------------------


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def peak_memory_mib() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Clock:
    """Training start (first ``start()``) and end (last ``step()``) with the step count."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.ended: float | None = None
        self.cpu_started = self.cpu_ended = 0.0
        self.steps = 0

    def start(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()
            self.cpu_started = time.process_time()

    def step(self) -> None:
        self.ended = time.perf_counter()
        self.cpu_ended = time.process_time()
        self.steps += 1

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_ended - self.cpu_started

    @property
    def seconds(self) -> float:
        if self.started is None or self.ended is None:
            raise RuntimeError("no training step was timed")
        return self.ended - self.started


def run_trl(method: str, spec: dict) -> dict:
    """A plain TRL script: the trainer's defaults except what must match our run."""
    import torch
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback

    clock = Clock()

    class TrainClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock.start()

        def on_step_end(self, args, state, control, **kwargs):
            clock.step()

    args = {
        "output_dir": spec["output_dir"],
        "per_device_train_batch_size": spec["batch_size"],
        "num_train_epochs": spec["epochs"],
        "learning_rate": spec["learning_rate"],
        "max_length": spec["max_length"],
        "seed": spec["seed"],
        "report_to": "none",
        "save_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
    }
    if not torch.cuda.is_available():
        args["use_cpu"] = True
    peft_config = LoraConfig(
        task_type="SEQ_CLS" if method == "reward" else "CAUSAL_LM",
        r=spec["lora_r"],
        lora_alpha=spec["lora_alpha"],
        lora_dropout=0.0,
        target_modules="all-linear",
    )
    rows = read_jsonl(Path(spec["dataset"]))
    dataset = Dataset.from_list(rows)
    trainer_class, config_class = {
        "sft": (trl.SFTTrainer, trl.SFTConfig),
        "reward": (trl.RewardTrainer, trl.RewardConfig),
        "dpo": (trl.DPOTrainer, trl.DPOConfig),
    }[method]
    trainer = trainer_class(
        model=spec["model"],
        args=config_class(**args),
        train_dataset=dataset,
        peft_config=peft_config,
        callbacks=[TrainClock()],
    )
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    trainer.train()
    return {
        "tokens": counter.tokens,
        "seconds": clock.seconds,
        "cpu_seconds": clock.cpu_seconds,
        "steps": clock.steps,
        "gradient_checkpointing": trainer.args.gradient_checkpointing,
        "bf16": trainer.args.bf16,
        "version": trl.__version__,
    }


class CountingCollator:
    """Wraps a collator and counts the non-padding tokens of every batch it builds."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.tokens = 0

    def __call__(self, examples):
        batch = self.inner(examples)
        self.tokens += int(batch["attention_mask"].sum())
        return batch


def run_ours(method: str, spec: dict) -> dict:
    """Our trainer for ``method`` with its defaults except what must match TRL's run."""
    from training.methods.common import Hooks

    clock = Clock()

    def should_stop() -> bool:
        clock.start()
        return False

    hooks = Hooks(on_step=lambda step, total, metrics: clock.step(), should_stop=should_stop)
    shared = {
        "learning_rate": spec["learning_rate"],
        "epochs": spec["epochs"],
        "batch_size": spec["batch_size"],
        "max_length": spec["max_length"],
        "lora_r": spec["lora_r"],
        "lora_alpha": spec["lora_alpha"],
        "seed": spec["seed"],
        "eval_fraction": 0.0,  # TRL's run holds nothing out either
    }
    paths = {
        "dataset_path": spec["dataset"],
        "base_model_path": spec["model"],
        "output_dir": spec["output_dir"],
    }
    tokens_per_epoch = our_tokens_per_epoch(method, spec)
    if method == "sft":
        from training.methods.sft import SFTConfig, train_sft

        train_sft(SFTConfig(**shared), hooks=hooks, **paths)
    elif method == "reward":
        from training.methods.reward import RewardConfig, train_reward

        # The normalisation samples replies after training (outside the timed window);
        # fewer, shorter ones keep the benchmark within its time budget.
        config = RewardConfig(**shared, normalization_prompts=4, normalization_max_new_tokens=16)
        train_reward(config, hooks=hooks, **paths)
    else:
        from training.methods.dpo import DPOConfig, train_dpo

        train_dpo(DPOConfig(**shared), hooks=hooks, **paths)
    return {
        "tokens": tokens_per_epoch * spec["epochs"],
        "seconds": clock.seconds,
        "cpu_seconds": clock.cpu_seconds,
        "steps": clock.steps,
    }


def our_tokens_per_epoch(method: str, spec: dict) -> int:
    """Non-padding tokens one epoch feeds, from the method's own tokenization (every row
    trains once per epoch: nothing is held out)."""
    from transformers import AutoTokenizer

    from training.methods.common import prepare_tokenizer

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(spec["model"]))
    if method == "sft":
        from training.methods.sft import SFTConfig, load_sft_examples

        config = SFTConfig(max_length=spec["max_length"])
        examples = load_sft_examples(
            spec["dataset"],
            tokenizer,
            max_length=config.max_length,
            max_prompt_length=config.max_prompt_length,
        )
        return sum(example.tokens for example in examples)
    from training.methods.dpo import DPOConfig, load_preference_pairs

    config = DPOConfig(max_length=spec["max_length"])
    pairs = load_preference_pairs(
        spec["dataset"],
        tokenizer,
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
    )
    return sum(pair.tokens for pair in pairs)


def cores() -> int:
    """CPU cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0))


def worker(side: str, method: str, spec_path: str) -> int:
    import torch

    torch.set_num_threads(cores())
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    result = (run_ours if side == "ours" else run_trl)(method, spec)
    result["peak_mib"] = peak_memory_mib()
    result["threads"] = torch.get_num_threads()
    print(WORKER_MARK + json.dumps(result), flush=True)
    return 0


# --- The harness ------------------------------------------------------------------------


@dataclass
class Run:
    method: str
    side: str
    tokens: int
    seconds: float
    cpu_seconds: float
    steps: int
    peak_mib: float
    others_cores: float
    extra: dict

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def tokens_per_cpu_s(self) -> float:
        return self.tokens / self.cpu_seconds


def busy_cpu_seconds() -> float:
    """CPU seconds all processes on the machine have used since boot (from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def model_path() -> Path:
    """The SmolLM2 safetensors folder, converted from the packaged GGUF file once."""
    sys.path.insert(0, str(REPO))
    from models_registry.engine import ml

    for folder in MODEL_DIRS:
        if (folder / "config.json").is_file():
            return folder
    return ml.convert_gguf_to_safetensors(ml.smollm2_gguf_path(), MODEL_DIRS[-1])


def run_worker(side: str, method: str, spec: dict, work: Path) -> Run:
    spec_path = work / f"{method}-{side}.json"
    spec = {**spec, "output_dir": str(work / f"out-{method}-{side}")}
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    env = {**os.environ, "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    wall, busy, ours = time.monotonic(), busy_cpu_seconds(), children_cpu_seconds()
    done = subprocess.run(
        [sys.executable, __file__, "--worker", side, method, str(spec_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    # Cores kept busy by other processes meanwhile: the machine's CPU time minus the worker's.
    others = busy_cpu_seconds() - busy - (children_cpu_seconds() - ours)
    others_cores = max(0.0, others / (time.monotonic() - wall))
    lines = [line for line in done.stdout.splitlines() if line.startswith(WORKER_MARK)]
    if done.returncode != 0 or not lines:
        raise SystemExit(
            f"{side} {method} failed (exit {done.returncode}):\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
    result = json.loads(lines[-1][len(WORKER_MARK) :])
    return Run(
        method=method,
        side=side,
        tokens=result.pop("tokens"),
        seconds=result.pop("seconds"),
        cpu_seconds=result.pop("cpu_seconds"),
        steps=result.pop("steps"),
        peak_mib=result.pop("peak_mib"),
        others_cores=others_cores,
        extra=result,
    )


def print_table(pairs: dict[str, dict[str, Run]]) -> None:
    header = (
        f"{'method':<8}{'ours tok/s':>12}{'TRL tok/s':>12}{'ratio':>8}"
        f"{'ours peak MiB':>15}{'TRL peak MiB':>14}{'steps':>8}"
    )
    print(header)
    print("-" * len(header))
    for method, runs in pairs.items():
        ours, theirs = runs["ours"], runs["trl"]
        steps = str(ours.steps) if ours.steps == theirs.steps else f"{ours.steps}/{theirs.steps}"
        print(
            f"{method:<8}{ours.tokens_per_s:>12.1f}{theirs.tokens_per_s:>12.1f}"
            f"{ours.tokens_per_s / theirs.tokens_per_s:>8.2f}"
            f"{ours.peak_mib:>15.0f}{theirs.peak_mib:>14.0f}{steps:>8}"
        )
    print()
    header = (
        f"{'method':<8}{'ours tokens':>12}{'TRL tokens':>12}{'ours s':>9}{'TRL s':>9}"
        f"{'ours CPU s':>12}{'TRL CPU s':>11}{'CPU ratio':>11}{'others':>11}"
    )
    print(header)
    print("-" * len(header))
    for method, runs in pairs.items():
        ours, theirs = runs["ours"], runs["trl"]
        print(
            f"{method:<8}{ours.tokens:>12}{theirs.tokens:>12}{ours.seconds:>9.1f}"
            f"{theirs.seconds:>9.1f}{ours.cpu_seconds:>12.1f}{theirs.cpu_seconds:>11.1f}"
            f"{ours.tokens_per_cpu_s / theirs.tokens_per_cpu_s:>11.2f}"
            f"{f'{ours.others_cores:.1f}/{theirs.others_cores:.1f}':>11}"
        )
    busiest = max(run.others_cores for runs in pairs.values() for run in runs.values())
    if busiest > NOISY_CORES:
        print(
            f"\nWARNING: other processes kept up to {busiest:.1f} cores busy during a run; "
            "two threads fighting them for the cores slow down by far more than their share, "
            "so these figures mostly measure the other load. Rerun on a quiet machine."
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs=3, metavar=("SIDE", "METHOD", "SPEC"), help="internal")
    parser.add_argument("--methods", default=",".join(METHODS), help="e.g. dpo or sft,dpo")
    parser.add_argument("--sides", default=",".join(SIDES), help="ours, trl or both")
    for key, value in SHARED.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker)

    methods = [m for m in args.methods.split(",") if m]
    sides = [s for s in args.sides.split(",") if s]
    if not set(methods) <= set(METHODS) or not set(sides) <= set(SIDES):
        parser.error(f"methods are {', '.join(METHODS)}; sides are {', '.join(SIDES)}")
    shared = {key: getattr(args, key) for key in SHARED}
    if shared["rows"] % shared["batch_size"]:
        parser.error("--rows must be a multiple of --batch-size (whole batches on both sides)")
    began = time.monotonic()
    model = model_path()
    rows = synthetic_rows(shared["rows"], shared["seed"])
    print(
        f"Training throughput on {cores()} CPU cores (CUDA is used when present): "
        f"SmolLM2-135M-Instruct from {model.relative_to(REPO)}, LoRA r {shared['lora_r']} "
        f"alpha {shared['lora_alpha']:g} on all linear layers, {shared['rows']} rows, batch "
        f"{shared['batch_size']}, {shared['epochs']} epochs, max length {shared['max_length']}, "
        f"lr {shared['learning_rate']:g}, seed {shared['seed']}.\n"
        f"Load average at start: {os.getloadavg()[0]:.2f} (above {cores()}, other processes "
        "compete for the cores and the figures mean little).\n",
        flush=True,
    )
    results: dict[str, dict[str, Run]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        preference_path, sft_path = work / "preferences.jsonl", work / "sft.jsonl"
        write_jsonl(preference_path, rows)
        write_jsonl(sft_path, sft_rows(rows))
        for index, method in enumerate(methods):
            dataset = sft_path if method == "sft" else preference_path
            spec = {**shared, "model": str(model), "dataset": str(dataset)}
            # Alternate which side goes first so drift in the machine's load evens out.
            order = sides if index % 2 == 0 else sides[::-1]
            for side in order:
                run = run_worker(side, method, spec, work)
                results.setdefault(method, {})[side] = run
                print(
                    f"  {method:<7}{side:<5} {run.steps} steps, {run.tokens} tokens in "
                    f"{run.seconds:.1f} s: {run.tokens_per_s:.1f} tok/s, peak "
                    f"{run.peak_mib:.0f} MiB; other processes used {run.others_cores:.1f} "
                    f"cores meanwhile",
                    flush=True,
                )
    complete = {m: r for m, r in results.items() if len(r) == 2}
    print()
    if complete:
        print_table(complete)
    trl_run = next((runs["trl"] for runs in results.values() if "trl" in runs), None)
    if trl_run is not None:
        print(
            f"\nTRL {trl_run.extra['version']} with its defaults: gradient checkpointing "
            f"{trl_run.extra['gradient_checkpointing']}, bf16 autocast {trl_run.extra['bf16']}, "
            "a reference forward pass every DPO step. Ours: float32 on CPU (bf16 autocast "
            "on CUDA), no gradient checkpointing, DPO reference log-probs computed once "
            "before training."
        )
    print(
        f"\nLoad average at end: {os.getloadavg()[0]:.2f}; "
        f"{time.monotonic() - began:.0f} s in all.\n"
    )
    if len(complete) == len(METHODS):
        print(
            "RESULT "
            + " ".join(
                f"{m}_ratio_vs_trl="
                f"{complete[m]['ours'].tokens_per_s / complete[m]['trl'].tokens_per_s:.2f}"
                for m in METHODS
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
