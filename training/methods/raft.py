"""Reward rAnked FineTuning (RAFT), Dong et al. 2023, https://arxiv.org/abs/2304.06767.

Algorithm 1 of the paper, once per iteration (stage):

1. sample ``samples_per_prompt`` (k) replies to every training prompt from the current
   policy, at ``temperature`` with ``top_k=0`` and ``top_p=1`` so the temperature alone
   shapes the distribution (the paper's ``p^alpha``);
2. score them with the reward function and keep the best reply of each prompt; with
   ``keep_fraction < 1`` only that share of the prompts, those whose best reply scored
   highest, is kept (the paper's global acceptance ratio on top of best-of-k);
3. fine-tune the policy on the kept (prompt, reply) pairs with TRL's ``SFTTrainer``
   (``sft.fit_with_sft_trainer``: token-mean NLL of the reply tokens, SFT's settings).

The policy trained is the one sampled from: a LoRA adapter on the base model (or every
weight with ``lora_r=0``) that keeps training across iterations; each iteration's
fine-tuning is a fresh ``SFTTrainer`` (new optimizer and schedule, as in the paper) on
that same model. What TRL does there is what it does for SFT (see ``sft.py``), except
that the kept replies reach it already tokenized (``{"input_ids", "completion_mask"}``,
with ``sft.encode_example``): a reply cut at ``max_new_tokens`` must be trained without
the end-of-turn token that a chat template always adds. What is ours: sampling and
ranking, the iteration loop, and resuming at the interrupted iteration (the kept
replies and the policy after each finished iteration; inside an iteration the Trainer's
own checkpoints). ``best_of_n`` is the same sampling and ranking at inference time,
without training. Nothing here imports Django; ``training/tasks.py`` is the bridge and
passes a reward model's ``score``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models_registry.engine.ml import Candidates as Candidates
from models_registry.engine.ml import GenerationParams
from models_registry.engine.ml import Score as Score
from models_registry.engine.ml import sample_candidates as sample_replies
from training.methods.common import (
    EncodedReply,
    Hooks,
    LoopResult,
    TrainingCancelled,
    holdout_split,
    library_versions,
    lora_config,
    pick_device,
    prompt_key,
    read_prompts,
    require,
    save_artifact,
    seed_everything,
    training_record,
    write_json,
)
from training.methods.sft import (
    SFTConfig,
    SFTExample,
    curriculum_sorted,
    encode_example,
    fit_with_sft_trainer,
    load_training_tokenizer,
)
from training.methods.trl_runtime import load_base_model

__all__ = [
    "Candidates",
    "RAFTConfig",
    "RAFTResult",
    "Score",
    "TrainingCancelled",
    "sample_candidates",
    "train_raft",
]


@dataclass
class RAFTConfig(SFTConfig):
    """Hyperparameters of a RAFT run; invalid values raise ``ValueError``.

    The fine-tuning settings are SFT's (see ``SFTConfig``), applied to each iteration's
    kept replies: ``epochs`` and ``max_steps`` count per iteration. Added here:

    - ``samples_per_prompt=4`` (k): the best of 4 already lifts the reward well above the
      policy's mean while sampling stays 4x one pass over the prompts.
    - ``iterations=2``: sample, rank and fine-tune twice; the second round samples from the
      improved policy, which is where RAFT gains over plain best-of-n distillation.
    - ``temperature=1.0``: samples from the policy's own distribution; lower values give
      less diverse candidates and less for the ranking to choose from.
    - ``max_new_tokens=64``: a reply cut at this length is trained without its end-of-turn
      token, so the policy never learns to stop mid-sentence.
    - ``keep_fraction=1.0``: keep the best reply of every prompt; below 1 keeps only that
      share of prompts (rounded, at least one), those whose best reply scored highest.
    """

    method_name = "RAFT"

    samples_per_prompt: int = 4
    iterations: int = 2
    temperature: float = 1.0
    max_new_tokens: int = 64
    keep_fraction: float = 1.0

    def validate(self) -> None:
        super().validate()
        require(self.samples_per_prompt >= 1, "samples_per_prompt must be >= 1")
        require(self.iterations >= 1, "iterations must be >= 1")
        require(self.temperature > 0, "temperature must be > 0")
        require(1 <= self.max_new_tokens <= 4096, "max_new_tokens must be between 1 and 4096")
        require(0 < self.keep_fraction <= 1, "keep_fraction must be in (0, 1]")


@dataclass
class RAFTResult:
    steps: int
    metrics: dict[str, float]
    output_dir: Path
    library_versions: dict[str, str] = field(default_factory=dict)
    iterations: list[dict[str, float]] = field(default_factory=list)


# --- Sampling and ranking -------------------------------------------------------------


def sample_candidates(
    model: Any,
    tokenizer: Any,
    prompts: list[list[dict[str, str]]],
    *,
    n: int,
    score: Score,
    params: GenerationParams,
    hooks: Hooks | None = None,
) -> list[Candidates]:
    """The engine's ``sample_candidates`` (``n`` scored replies per prompt, drawn in seeded
    chunks), with ``hooks.should_stop`` checked between chunks."""
    before_chunk = None if hooks is None else (lambda: hooks.check_stop("sampling"))
    return sample_replies(
        model, tokenizer, prompts, n=n, score=score, params=params, before_chunk=before_chunk
    )


@dataclass(frozen=True)
class Kept:
    """A prompt's best reply, kept for fine-tuning."""

    prompt: list[dict[str, str]]
    reply: str
    finished: bool
    reward: float


def keep_best(candidates: list[Candidates], keep_fraction: float) -> list[Kept]:
    """The best reply of each prompt; with ``keep_fraction < 1`` only the prompts whose best
    reward ranks in the top share (rounded, at least one), in dataset order."""
    best = []
    for c in candidates:
        reply = c.replies[c.best]
        best.append(Kept(c.prompt, reply.text, reply.finished, c.rewards[c.best]))
    count = max(1, round(keep_fraction * len(best)))
    ranked = sorted(range(len(best)), key=lambda i: (-best[i].reward, i))[:count]
    return [best[i] for i in sorted(ranked)]


def reward_metrics(candidates: list[Candidates], kept: list[Kept]) -> dict[str, float]:
    """``reward_mean`` of the kept replies, ``reward_sampled_mean`` of every sample,
    ``reward_best`` (the highest sampled reward) and the ``kept`` count."""
    rewards = [reward for c in candidates for reward in c.rewards]
    return {
        "reward_mean": sum(k.reward for k in kept) / len(kept),
        "reward_sampled_mean": sum(rewards) / len(rewards),
        "reward_best": max(rewards),
        "kept": float(len(kept)),
    }


def kept_example(tokenizer: Any, kept: Kept, config: RAFTConfig) -> SFTExample:
    """The SFT example of a kept reply; one cut at ``max_new_tokens`` has no end-of-turn."""
    example = encode_example(
        tokenizer,
        kept.prompt,
        [{"role": "assistant", "content": kept.reply}],
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
        row={"reward": kept.reward},
    )
    ids = example.encoded.input_ids
    if kept.finished or example.encoded.reply_length < 2 or ids[-1] != tokenizer.eos_token_id:
        return example
    encoded = EncodedReply(input_ids=ids[:-1], prompt_length=example.encoded.prompt_length)
    return dataclasses.replace(example, encoded=encoded)


def tokenized_row(example: SFTExample) -> dict[str, list[int]]:
    """An example in TRL's tokenized form: the reply tokens are the completion."""
    encoded = example.encoded
    reply = len(encoded.input_ids) - encoded.prompt_length
    return {
        "input_ids": list(encoded.input_ids),
        "completion_mask": [0] * encoded.prompt_length + [1] * reply,
    }


# --- Resume ---------------------------------------------------------------------------


def _trainable_state(model: Any) -> dict[str, torch.Tensor]:
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k in trainable}


class _Checkpoints:
    """Iteration-level resume state under ``hooks.checkpoint_dir`` (no-ops without one).

    ``iteration-<t>/`` holds ``kept.json`` (that iteration's kept replies and reward
    metrics, so a resumed run does not sample again), the ``SFTTrainer``'s checkpoints
    (``checkpoint-<step>/``, resumed by the Trainer), and, once the iteration is complete,
    ``policy.pt`` (the trainable weights) and ``done.json`` (its metrics and history).
    Only the newest ``policy.pt`` is kept.
    """

    def __init__(self, folder: Path | None):
        self.folder = Path(folder) if folder is not None else None

    def iteration_dir(self, t: int) -> Path | None:
        return self.folder / f"iteration-{t}" if self.folder is not None else None

    def completed(self) -> list[dict[str, Any]]:
        summaries: list[dict[str, Any]] = []
        while self.folder is not None:
            done = self.iteration_dir(len(summaries)) / "done.json"
            if not done.is_file():
                break
            summaries.append(json.loads(done.read_text(encoding="utf-8")))
        return summaries

    def restore(self, model: Any, t: int) -> None:
        weights = torch.load(self.iteration_dir(t) / "policy.pt", map_location="cpu")
        unexpected = model.load_state_dict(weights, strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"checkpoint does not match the model: unexpected {unexpected[:3]}")

    def load_kept(self, t: int) -> tuple[list[Kept], dict[str, float]] | None:
        folder = self.iteration_dir(t)
        if folder is None or not (folder / "kept.json").is_file():
            return None
        data = json.loads((folder / "kept.json").read_text(encoding="utf-8"))
        return [Kept(**k) for k in data["kept"]], data["rewards"]

    def save_kept(self, t: int, kept: list[Kept], rewards: dict[str, float]) -> None:
        folder = self.iteration_dir(t)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            data = {"kept": [dataclasses.asdict(k) for k in kept], "rewards": rewards}
            write_json(folder / "kept.json", data)

    def finish(self, t: int, model: Any, summary: dict[str, Any]) -> None:
        folder = self.iteration_dir(t)
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / "policy.pt.part"
        torch.save(_trainable_state(model), partial)
        partial.replace(folder / "policy.pt")
        write_json(folder / "done.json", summary)
        # Superseded: the Trainer's mid-iteration state and the previous iteration's weights.
        for stale in folder.glob("checkpoint-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if t > 0:
            (self.iteration_dir(t - 1) / "policy.pt").unlink(missing_ok=True)


# --- Training -------------------------------------------------------------------------


class _RAFTRun:
    def __init__(
        self, config: RAFTConfig, model: Any, tokenizer: Any, score: Score, hooks: Hooks
    ) -> None:
        self.config, self.model, self.tokenizer = config, model, tokenizer
        self.score, self.hooks = score, hooks
        self.checkpoints = _Checkpoints(hooks.checkpoint_dir)

    def sampling_params(self, seed: int) -> GenerationParams:
        return GenerationParams(
            max_new_tokens=self.config.max_new_tokens,
            temperature=self.config.temperature,
            top_p=1.0,
            do_sample=True,
            seed=seed,
        )

    def collect(self, t: int, prompts: list[list[dict]]) -> tuple[list[Kept], dict[str, float]]:
        """Iteration ``t``'s kept replies and reward metrics (from its checkpoint if any)."""
        saved = self.checkpoints.load_kept(t)
        if saved is not None:
            return saved
        self.model.eval()
        candidates = sample_candidates(
            self.model,
            self.tokenizer,
            prompts,
            n=self.config.samples_per_prompt,
            score=self.score,
            # Chunk seeds run from seed to seed + chunks - 1 < seed + len(prompts).
            params=self.sampling_params((self.config.seed + t) * len(prompts)),
            hooks=self.hooks,
        )
        kept = keep_best(candidates, self.config.keep_fraction)
        rewards = reward_metrics(candidates, kept)
        self.checkpoints.save_kept(t, kept, rewards)
        return kept, rewards

    def iteration(self, t: int, prompts: list[list[dict]], offset: int) -> dict[str, Any]:
        """Sample, rank and fine-tune once; returns the iteration's summary."""
        config = self.config
        kept, rewards = self.collect(t, prompts)
        self.hooks.say(
            f"iteration {t + 1}/{config.iterations}: kept {len(kept)} replies, mean reward "
            f"{rewards['reward_mean']:.4g} (all samples {rewards['reward_sampled_mean']:.4g})"
        )
        extra = {**rewards, "iteration": float(t + 1)}
        reached: dict[str, int | None] = {"step": 0, "total": None}

        def on_step(step: int, total: int, metrics: dict[str, float]) -> None:
            reached.update(step=step, total=total)
            self.hooks.step_done(offset + step, total * config.iterations, {**metrics, **extra})

        def should_stop() -> bool:
            # A request after the iteration's last step keeps the finished fine-tuning: the
            # next check (sampling, the held-out evaluation) stops the run instead.
            finished = reached["total"] is not None and reached["step"] >= reached["total"]
            if finished or self.hooks.should_stop is None:
                return False
            return bool(self.hooks.should_stop())

        examples = [kept_example(self.tokenizer, k, config) for k in kept]
        order = curriculum_sorted(config, examples)
        with tempfile.TemporaryDirectory(prefix="raft-") as scratch:
            _, loop = fit_with_sft_trainer(
                self.model,
                self.tokenizer,
                [tokenized_row(examples[i]) for i in order],
                config,
                Hooks(
                    on_step=on_step,
                    should_stop=should_stop,
                    log=self.hooks.log,
                    checkpoint_dir=self.checkpoints.iteration_dir(t),
                ),
                scratch_dir=Path(scratch),
                in_order=config.curriculum is not None,
                what="RAFT training",
            )
        history = [
            {**metrics, **extra, "step": float(offset + i + 1)}
            for i, metrics in enumerate(loop.history)
        ]
        summary = {
            "rewards": rewards,
            "history": history,
            "steps": loop.steps,
            "total_steps": loop.total_steps,
        }
        self.checkpoints.finish(t, self.model, summary)
        return summary

    def evaluate(self, prompts: list[list[dict]]) -> dict[str, float]:
        """Mean reward of one sampled reply per held-out prompt (empty when none)."""
        if not prompts:
            return {}
        self.model.eval()
        candidates = sample_candidates(
            self.model,
            self.tokenizer,
            prompts,
            n=1,
            score=self.score,
            params=self.sampling_params(self.config.seed),
            hooks=self.hooks,
        )
        rewards = [c.rewards[0] for c in candidates]
        return {
            "eval_reward_mean": sum(rewards) / len(rewards),
            "eval_prompts": float(len(prompts)),
        }


def train_raft(
    config: RAFTConfig,
    *,
    dataset_path: str | Path,
    base_model_path: str | Path,
    output_dir: str | Path,
    score: Score,
    hooks: Hooks | None = None,
) -> RAFTResult:
    """Train ``base_model_path`` with RAFT against ``score`` and save it to ``output_dir``.

    Prompts are the distinct prompts of ``dataset_path`` (``common.read_prompts``: rows
    with ``prompt``, or ``messages`` minus the last assistant turn); ``eval_fraction`` of
    them is held out and scored once after training (``eval_reward_mean``). Per-step
    metrics are SFT's plus the iteration's ``reward_mean`` (kept replies),
    ``reward_sampled_mean``, ``reward_best`` and ``kept``; steps count across iterations.
    Writes the adapter (or full model with ``lora_r=0``), tokenizer and
    ``training_result.json``. ``hooks`` report progress, cancel (``TrainingCancelled``,
    nothing saved) and checkpoint/resume: a resumed run continues at the interrupted
    iteration with the same samples and ends with the same weights.
    """
    hooks = hooks or Hooks()
    started = time.perf_counter()
    seed_everything(config.seed)
    tokenizer = load_training_tokenizer(base_model_path)
    prompts = [messages for _, messages in read_prompts(dataset_path)]
    train_rows, held_out = holdout_split(
        [prompt_key(p) for p in prompts], fraction=config.eval_fraction, seed=config.seed
    )
    train_prompts = [prompts[i] for i in train_rows]
    hooks.say(f"{len(prompts)} prompts: {len(train_rows)} to sample, {len(held_out)} held out")
    model = load_base_model(base_model_path, config)
    if not config.qlora:  # a 4-bit model is already placed on its GPU
        model.to(pick_device())
    if config.lora_r > 0:  # one adapter, trained on by every iteration
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(config))
    run = _RAFTRun(config, model, tokenizer, score, hooks)

    summaries = run.checkpoints.completed()[: config.iterations]
    if summaries:
        run.checkpoints.restore(model, len(summaries) - 1)
        hooks.say(f"resumed after iteration {len(summaries)} of {config.iterations}")
    for t in range(len(summaries), config.iterations):
        offset = sum(s["steps"] for s in summaries)
        summaries.append(run.iteration(t, train_prompts, offset))

    history = [metrics for s in summaries for metrics in s["history"]]
    loop = LoopResult(
        steps=len(history),
        total_steps=sum(s["total_steps"] for s in summaries),
        history=history,
    )
    final = loop.last
    final.update(run.evaluate([prompts[i] for i in held_out]))
    final["train_loss"] = loop.mean("loss")
    final["train_seconds"] = time.perf_counter() - started
    final["rows"] = final["kept"]
    final["prompts"] = float(len(train_prompts))
    record = training_record(
        method="raft", config=config, loop=loop, metrics=final, base_model=base_model_path
    )
    record["iterations"] = [s["rewards"] for s in summaries]
    save_artifact(model, tokenizer, output_dir, record)
    return RAFTResult(
        steps=loop.steps,
        metrics=final,
        output_dir=Path(output_dir),
        library_versions=library_versions(),
        iterations=[dict(s["rewards"]) for s in summaries],
    )
