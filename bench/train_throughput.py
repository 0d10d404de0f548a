"""Training throughput and peak memory: our SFT, reward, DPO and KTO trainers against plain
TRL scripts, and our RRHF alone.

Runs with no arguments on CPU (CUDA when present). Each of SFT, reward-model, DPO and KTO
training runs twice on SmolLM2-135M-Instruct with the same LoRA adapter, data, batch
size, maximum length, learning rate, seed and number of optimizer steps: once through
``training.methods.<method>.train_<method>`` (which trains on TRL's trainer with our
settings: ``mixed_precision="auto"``, no gradient checkpointing, DPO's and KTO's reference
log-probs computed once before training) and once through a plain TRL script
(``SFTTrainer``, ``RewardTrainer``, ``DPOTrainer``, ``KTOTrainer`` with a peft
``LoraConfig``) that keeps TRL's defaults for everything else (gradient checkpointing,
bf16 autocast where the hardware has it, a reference forward pass every DPO and KTO
step, ...). RRHF, which no library ships, trains once through ``train_rrhf`` (our own
loop) on ranked prompts built from the same rows. Every training runs in its own
subprocess so its peak memory is its own. It prints tables and ends with

    RESULT sft_ratio_vs_trl=N reward_ratio_vs_trl=N dpo_ratio_vs_trl=N kto_ratio_vs_trl=N
    sft_mem_ratio_vs_trl=N reward_mem_ratio_vs_trl=N dpo_mem_ratio_vs_trl=N
    kto_mem_ratio_vs_trl=N rrhf_tokens_per_s=N rrhf_peak_mib=N

(one line), where a ``_ratio_vs_trl`` is our tokens/s divided by TRL's and a
``_mem_ratio_vs_trl`` our peak memory divided by TRL's.

Tokens are the non-padding tokens of the training batches (the ``attention_mask`` of
every batch ``Trainer.training_step`` receives: prompt + reply for SFT and KTO, chosen +
rejected for reward and DPO), counted the same way on both sides; KTO's mismatched KL
sequences and any reference pass are extra work on the same tokens and are not counted
again. For RRHF, the method's own tokenization of every response (prompt + reply) times
the epochs.

The time is training alone, measured the same way on both sides: from the Trainer's
``on_train_begin`` to its last ``on_step_end``, plus, where the trainer precomputes the
reference log-probs before training (our DPO and KTO), that one-off reference pass (which
replaces the reference forward pass TRL's defaults make every step). Model loading,
tokenization, held-out evaluation, the reward model's normalisation and saving fall
outside. RRHF: from its loop's first ``should_stop`` poll (right before the first step)
to its last ``on_step`` hook.

Peak memory is the process's peak resident set (``VmHWM``; CUDA: the peak allocation)
read at the end of the last training step, so model loading is in it and what comes
after training (the reward model's normalisation, saving) is not.
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
PAIRED = ("sft", "reward", "dpo", "kto")  # ours against a plain TRL script
METHODS = (*PAIRED, "rrhf")  # RRHF: ours alone (no library ships it)
SIDES = ("ours", "trl")
# Other processes using more than this many cores on average make a run's figures noise.
NOISY_CORES = 0.3
WORKER_MARK = "WORKER_RESULT "

# What both sides share. LoRA as our TrainingConfig defaults it (r 16, alpha 32, no
# dropout, every linear layer but the LM head), our DPO/KTO learning rate; the rest sized
# so the nine runs fit about 15 minutes on 2 quiet cores.
SHARED = {
    "rows": 24,
    "batch_size": 8,
    "epochs": 2,
    "max_length": 512,
    "learning_rate": 1e-4,
    "lora_r": 16,
    "lora_alpha": 32.0,
    "seed": 0,
    # RRHF: this many ranked prompts (3 replies each), 2 prompts (6 sequences) a step, one
    # epoch, as bench/rrhf_throughput.py.
    "rrhf_prompts": 16,
}
# --smoke: every path, quickly (2 optimizer steps per paired run and RRHF, 4 for KTO).
SMOKE = {"rows": 8, "batch_size": 4, "epochs": 1, "rrhf_prompts": 4}
RRHF_BATCH_SIZE = 2

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


def kto_rows(rows: list[dict], seed: int) -> list[dict]:
    """Unpaired rows in TRL's conversational form: each chosen reply desirable (label
    true), each rejected one undesirable (false), shuffled with ``seed``: TRL's KL partner
    of a row is the reply before it within its chunk of ``batch_size`` rows of the file,
    which in row order would be the same prompt's other reply."""
    unpaired = [
        {"prompt": row["prompt"], "completion": row[side], "label": side == "chosen"}
        for row in rows
        for side in ("chosen", "rejected")
    ]
    random.Random(seed).shuffle(unpaired)
    return unpaired


def rrhf_rows(count: int, seed: int) -> list[dict]:
    """Ranked prompts for RRHF from the same synthetic rows: the chosen reply (score 2), a
    half-helpful one (1) and the rejected one (0); see ``bench/rrhf_throughput.py``."""
    from rrhf_throughput import ranked_rows  # bench/ is on the path of this script

    return ranked_rows(count, seed)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


# --- Workers (one training per subprocess) ----------------------------------------------


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def peak_memory_mib() -> float:
    """The process's peak memory so far: CUDA's peak allocation, else the peak resident
    set (``VmHWM``; ``ru_maxrss`` where /proc is missing)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Clock:
    """The training window: from ``start()`` (the first call counts) to the last
    ``step()``, plus ``extra`` seconds spent outside it (a reference pass precomputed
    before training); the step count, the tokens trained and the peak memory at the last
    step."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.ended: float | None = None
        self.cpu_started = self.cpu_ended = 0.0
        self.extra = self.cpu_extra = 0.0
        self.steps = 0
        self.tokens = 0
        self.peak_mib = 0.0
        self.settings: dict = {}

    def start(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()
            self.cpu_started = time.process_time()

    def step(self) -> None:
        self.ended = time.perf_counter()
        self.cpu_ended = time.process_time()
        self.steps += 1
        self.peak_mib = peak_memory_mib()

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_ended - self.cpu_started + self.cpu_extra

    @property
    def seconds(self) -> float:
        if self.started is None or self.ended is None:
            raise RuntimeError("no training step was timed")
        return self.ended - self.started + self.extra

    def result(self) -> dict:
        return {
            "tokens": self.tokens,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "steps": self.steps,
            "peak_mib": self.peak_mib,
            "reference_pass_s": self.extra,
            **self.settings,
        }


def instrument_trainers(clock: Clock) -> None:
    """Time and count every ``transformers.Trainer`` in this process the same way, ours
    (built inside ``training.methods``) and the plain TRL script's alike: the window from
    ``on_train_begin`` to the last ``on_step_end``, the non-padding tokens of every training
    batch, and the time of TRL's one-off reference log-prob pass when the trainer
    precomputes it (DPO, KTO: ``precompute_ref_log_probs``; it runs while the trainer is
    built, before ``on_train_begin``)."""
    import trl
    from transformers import Trainer
    from transformers.trainer_callback import CallbackHandler

    train_begin, step_end = CallbackHandler.on_train_begin, CallbackHandler.on_step_end

    def on_train_begin(self, args, state, control, **kwargs):
        clock.start()
        clock.settings = {
            "bf16": bool(args.bf16),
            "fp16": bool(args.fp16),
            "gradient_checkpointing": bool(args.gradient_checkpointing),
            "precompute_ref_log_probs": bool(getattr(args, "precompute_ref_log_probs", False)),
        }
        return train_begin(self, args, state, control, **kwargs)

    def on_step_end(self, args, state, control, **kwargs):
        clock.step()
        return step_end(self, args, state, control, **kwargs)

    CallbackHandler.on_train_begin = on_train_begin
    CallbackHandler.on_step_end = on_step_end

    training_step = Trainer.training_step

    def counted_training_step(self, model, inputs, *args, **kwargs):
        clock.tokens += int(inputs["attention_mask"].sum())
        return training_step(self, model, inputs, *args, **kwargs)

    Trainer.training_step = counted_training_step

    for trainer_class in (trl.DPOTrainer, trl.KTOTrainer):
        precompute = trainer_class._precompute_ref_logps

        def timed(self, *args, _precompute=precompute, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return _precompute(self, *args, **kwargs)
            finally:
                clock.extra += time.perf_counter() - wall
                clock.cpu_extra += time.process_time() - cpu

        trainer_class._precompute_ref_logps = timed


def run_trl(method: str, spec: dict, clock: Clock) -> dict:
    """A plain TRL script: the trainer's defaults except what must match our run."""
    import torch
    import trl
    from datasets import Dataset
    from peft import LoraConfig

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
    dataset = Dataset.from_list(read_jsonl(Path(spec["dataset"])))
    trainer_class, config_class = {
        "sft": (trl.SFTTrainer, trl.SFTConfig),
        "reward": (trl.RewardTrainer, trl.RewardConfig),
        "dpo": (trl.DPOTrainer, trl.DPOConfig),
        "kto": (trl.KTOTrainer, trl.KTOConfig),
    }[method]
    trainer = trainer_class(
        model=spec["model"],
        args=config_class(**args),
        train_dataset=dataset,
        peft_config=peft_config,
    )
    trainer.train()
    return {**clock.result(), "version": trl.__version__}


def run_ours(method: str, spec: dict, clock: Clock) -> dict:
    """Our trainer for ``method`` with its defaults except what must match TRL's run."""
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
    if method == "sft":
        from training.methods.sft import SFTConfig, train_sft

        train_sft(SFTConfig(**shared), **paths)
    elif method == "reward":
        from training.methods.reward import RewardConfig, train_reward

        # The normalisation samples replies after training (outside the timed window);
        # fewer, shorter ones keep the benchmark within its time budget.
        config = RewardConfig(**shared, normalization_prompts=4, normalization_max_new_tokens=16)
        train_reward(config, **paths)
    elif method == "dpo":
        from training.methods.dpo import DPOConfig, train_dpo

        train_dpo(DPOConfig(**shared), **paths)
    else:
        from training.methods.kto import KTOConfig, train_kto

        train_kto(KTOConfig(**shared), **paths)
    return clock.result()


def run_rrhf(spec: dict) -> dict:
    """Our RRHF (its own loop, at its default precision) on ranked prompts: one epoch, 2
    prompts a step. Timed from the loop's first ``should_stop`` poll, right before its first step,
    to the last ``on_step``; tokens from the method's own tokenization."""
    from transformers import AutoTokenizer

    from training.methods.common import Hooks, prepare_tokenizer
    from training.methods.rrhf import RRHFConfig, load_ranked_prompts, train_rrhf

    config = RRHFConfig(
        learning_rate=spec["learning_rate"],
        epochs=1,
        batch_size=RRHF_BATCH_SIZE,
        max_length=spec["max_length"],
        lora_r=spec["lora_r"],
        lora_alpha=spec["lora_alpha"],
        seed=spec["seed"],
        eval_fraction=0.0,
    )
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(spec["model"]))
    prompts = load_ranked_prompts(spec["dataset"], tokenizer, config)
    clock = Clock()
    clock.tokens = sum(prompt.tokens for prompt in prompts) * config.epochs

    def should_stop() -> bool:
        clock.start()
        return False

    hooks = Hooks(on_step=lambda step, total, metrics: clock.step(), should_stop=should_stop)
    train_rrhf(
        config,
        dataset_path=spec["dataset"],
        base_model_path=spec["model"],
        output_dir=spec["output_dir"],
        hooks=hooks,
    )
    return clock.result()


def cores() -> int:
    """CPU cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0))


def worker(side: str, method: str, spec_path: str) -> int:
    import torch

    torch.set_num_threads(cores())
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    if method == "rrhf":
        result = run_rrhf(spec)
    else:
        clock = Clock()
        instrument_trainers(clock)
        result = (run_ours if side == "ours" else run_trl)(method, spec, clock)
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
        f"{'ours peak MiB':>15}{'TRL peak MiB':>14}{'mem ratio':>11}{'steps':>8}"
    )
    print(header)
    print("-" * len(header))
    for method, runs in pairs.items():
        ours, theirs = runs["ours"], runs["trl"]
        steps = str(ours.steps) if ours.steps == theirs.steps else f"{ours.steps}/{theirs.steps}"
        print(
            f"{method:<8}{ours.tokens_per_s:>12.1f}{theirs.tokens_per_s:>12.1f}"
            f"{ours.tokens_per_s / theirs.tokens_per_s:>8.2f}"
            f"{ours.peak_mib:>15.0f}{theirs.peak_mib:>14.0f}"
            f"{ours.peak_mib / theirs.peak_mib:>11.2f}{steps:>8}"
        )
    print()
    header = (
        f"{'method':<8}{'ours tokens':>12}{'TRL tokens':>12}{'ours s':>9}{'TRL s':>9}"
        f"{'ref pass s':>12}{'ours CPU s':>12}{'TRL CPU s':>11}{'CPU ratio':>11}{'others':>11}"
    )
    print(header)
    print("-" * len(header))
    for method, runs in pairs.items():
        ours, theirs = runs["ours"], runs["trl"]
        print(
            f"{method:<8}{ours.tokens:>12}{theirs.tokens:>12}{ours.seconds:>9.1f}"
            f"{theirs.seconds:>9.1f}{ours.extra.get('reference_pass_s', 0.0):>12.1f}"
            f"{ours.cpu_seconds:>12.1f}{theirs.cpu_seconds:>11.1f}"
            f"{ours.tokens_per_cpu_s / theirs.tokens_per_cpu_s:>11.2f}"
            f"{f'{ours.others_cores:.1f}/{theirs.others_cores:.1f}':>11}"
        )
    print()
    header = f"{'method':<8}{'side':<6}{'bf16':>6}{'grad ckpt':>11}{'precomputed ref':>17}"
    print(header)
    print("-" * len(header))
    for method, runs in pairs.items():
        for side in SIDES:
            extra = runs[side].extra
            print(
                f"{method:<8}{side:<6}{str(extra.get('bf16')):>6}"
                f"{str(extra.get('gradient_checkpointing')):>11}"
                f"{str(extra.get('precompute_ref_log_probs')):>17}"
            )


def warn_if_noisy(results: dict[str, dict[str, Run]]) -> None:
    busiest = max(run.others_cores for runs in results.values() for run in runs.values())
    if busiest > NOISY_CORES:
        print(
            f"\nWARNING: other processes kept up to {busiest:.1f} cores busy during a run; "
            "two threads fighting them for the cores slow down by far more than their share, "
            "so these figures mostly measure the other load. Rerun on a quiet machine."
        )


def result_line(results: dict[str, dict[str, Run]]) -> str | None:
    """The RESULT line, when every paired method ran on both sides and RRHF ran."""
    if any(len(results.get(m, {})) < 2 for m in PAIRED) or "rrhf" not in results:
        return None
    speed = [
        f"{m}_ratio_vs_trl={results[m]['ours'].tokens_per_s / results[m]['trl'].tokens_per_s:.2f}"
        for m in PAIRED
    ]
    memory = [
        f"{m}_mem_ratio_vs_trl={results[m]['ours'].peak_mib / results[m]['trl'].peak_mib:.2f}"
        for m in PAIRED
    ]
    rrhf = results["rrhf"]["ours"]
    return " ".join(
        [
            "RESULT",
            *speed,
            *memory,
            f"rrhf_tokens_per_s={rrhf.tokens_per_s:.1f}",
            f"rrhf_peak_mib={rrhf.peak_mib:.0f}",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs=3, metavar=("SIDE", "METHOD", "SPEC"), help="internal")
    parser.add_argument("--methods", default=",".join(METHODS), help="e.g. dpo or sft,kto,rrhf")
    parser.add_argument("--sides", default=",".join(SIDES), help="ours, trl or both")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes (8 rows, batch 4, 1 epoch, 4 RRHF prompts): checks every path in a "
        "few minutes; its figures mean nothing",
    )
    for key, value in SHARED.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker)

    methods = [m for m in args.methods.split(",") if m]
    sides = [s for s in args.sides.split(",") if s]
    if not set(methods) <= set(METHODS) or not set(sides) <= set(SIDES):
        parser.error(f"methods are {', '.join(METHODS)}; sides are {', '.join(SIDES)}")
    defaults = {**SHARED, **SMOKE} if args.smoke else SHARED
    shared = {
        key: default if getattr(args, key) is None else getattr(args, key)
        for key, default in defaults.items()
    }
    if shared["rows"] % shared["batch_size"]:
        parser.error("--rows must be a multiple of --batch-size (whole batches on both sides)")
    if shared["rrhf_prompts"] % RRHF_BATCH_SIZE:
        parser.error(f"--rrhf-prompts must be a multiple of {RRHF_BATCH_SIZE}")
    began = time.monotonic()
    model = model_path()
    rows = synthetic_rows(shared["rows"], shared["seed"])
    print(
        f"Training throughput on {cores()} CPU cores (CUDA is used when present)"
        f"{' [SMOKE: tiny sizes, figures mean nothing]' if args.smoke else ''}: "
        f"SmolLM2-135M-Instruct from {model.relative_to(REPO)}, LoRA r {shared['lora_r']} "
        f"alpha {shared['lora_alpha']:g} on all linear layers, {shared['rows']} rows (KTO: "
        f"{2 * shared['rows']} unpaired), batch {shared['batch_size']}, {shared['epochs']} "
        f"epochs, max length {shared['max_length']}, lr {shared['learning_rate']:g}, seed "
        f"{shared['seed']}; RRHF: {shared['rrhf_prompts']} prompts x 3 replies, "
        f"{RRHF_BATCH_SIZE} prompts a step, 1 epoch.\n"
        f"Load average at start: {os.getloadavg()[0]:.2f} (above {cores()}, other processes "
        "compete for the cores and the figures mean little).\n",
        flush=True,
    )
    results: dict[str, dict[str, Run]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        datasets = {
            "sft": sft_rows(rows),
            "reward": rows,
            "dpo": rows,
            "kto": kto_rows(rows, shared["seed"]),
            "rrhf": rrhf_rows(shared["rrhf_prompts"], shared["seed"]),
        }
        for index, method in enumerate(methods):
            dataset = work / f"{method}.jsonl"
            write_jsonl(dataset, datasets[method])
            spec = {**shared, "model": str(model), "dataset": str(dataset)}
            # Alternate which side goes first so drift in the machine's load evens out.
            order = sides if index % 2 == 0 else sides[::-1]
            if method == "rrhf":
                order = ["ours"] if "ours" in sides else []
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
    complete = {m: r for m, r in results.items() if m in PAIRED and len(r) == 2}
    print()
    if complete:
        print_table(complete)
    if "rrhf" in results:
        rrhf = results["rrhf"]["ours"]
        print(
            f"\nRRHF (ours alone): {rrhf.steps} steps, {rrhf.tokens} tokens in "
            f"{rrhf.seconds:.1f} s: {rrhf.tokens_per_s:.1f} tok/s, peak {rrhf.peak_mib:.0f} MiB"
        )
    if results:
        warn_if_noisy(results)
    trl_run = next((runs["trl"] for runs in results.values() if "trl" in runs), None)
    if trl_run is not None:
        print(
            f"\nTRL {trl_run.extra['version']}. The precision, checkpointing and reference "
            "settings above are what each side's TrainingArguments held (TRL's defaults on "
            "its side, our methods' on ours)."
        )
    print(
        f"\nLoad average at end: {os.getloadavg()[0]:.2f}; "
        f"{time.monotonic() - began:.0f} s in all.\n"
    )
    line = result_line(results)
    if line is not None:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
