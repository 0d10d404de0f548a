"""RRHF: rank responses to align language models with human feedback, with a LoRA adapter.

Yuan et al. 2023, "RRHF: Rank Responses to Align Language Models with Human Feedback
without tears", https://arxiv.org/abs/2304.05302 (Section 3). For a prompt ``x`` with
``k`` responses ``y_i`` scored ``r_i`` (by people or a reward model; the responses may come
from anywhere: labelers' candidates, several model versions, human demonstrations), the
policy scores each response by its length-normalised log-probability

    p_i = (1 / |y_i|) * sum_t log P(y_i,t | x, y_i,<t)

and is trained on

    L = rank_weight * L_rank + sft_weight * L_ft
    L_rank = sum over pairs with r_i < r_j of max(0, p_i - p_j)
    L_ft   = -(1 / |y_b|) * sum_t log P(y_b,t | x, y_b,<t),  b = argmax_i r_i

``L_rank`` is summed over the pairs of one prompt (as in the paper) and averaged over the
prompts of a micro-batch. ``L_ft`` is the token mean of the best response's negative
log-likelihood (the paper writes a sum; the authors' code and every other method here take
the mean, so the two terms stay on the same scale whatever the reply length). Pairs with
equal scores give no ranking term. No reference model and no sampling: one forward pass
over the k responses of each prompt (right-padded, prompt tokens masked) per step.

Why our own code: no library we use ships RRHF (TRL has DPO, KTO, PPO, RLOO..., not
RRHF; the authors' repository is a research script on a forked Trainer). The loop is
``common.run_training_loop``, our own (the trainer methods run on TRL's, through
``trl_runtime``), with the same hooks, so steps, metrics, heartbeat, cancellation,
checkpoints and resume reach the run the same way. It trains in one process.

Scores come from the rows (``rankings`` snapshots: annotation/datasets/selectors.py
``rrhf_rows``, people's scores), or, when ``train_rrhf`` is given a ``score`` function
(a reward model's, the same ``score(prompts, replies)`` PPO and RAFT take), from that
function: the rows then need no scores (``rrhf_candidate_rows``: every response of a
prompt, from any source, ``"scores": null``), each (prompt, response) is scored once
before training, the responses are ranked by those scores and only then capped at
``max_responses``. What the function said is written next to the artifact
(``reward_scores.jsonl``). A score function cannot cross into other processes, so such a
run trains in one. Nothing here imports Django; ``training/tasks.py`` is the bridge.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models_registry.engine.ml import checked_rewards
from training.methods.common import (
    EncodedReply,
    Hooks,
    TrainingCancelled,
    TrainingConfig,
    check_messages,
    collate,
    curriculum_difficulty,
    encode_chat_reply,
    holdout_split,
    is_main_process,
    library_versions,
    load_causal_lm_for_training,
    pick_device,
    prepare_tokenizer,
    prompt_key,
    read_jsonl,
    require,
    run_training_loop,
    save_artifact,
    seed_everything,
    sequence_logps,
    training_record,
)

__all__ = [
    "RRHFConfig",
    "RRHFResult",
    "TrainingCancelled",
    "read_ranked_rows",
    "rrhf_losses",
    "score_rows",
    "train_rrhf",
]

# score(prompts, replies) -> one float per reply (higher is better); prompts are chat
# messages, replies text: the shape of ppo.ScoreFunction, which a reward model's scorer has.
ScoreFunction = Callable[[list[list[dict]], list[str]], Sequence[float]]
SCORES_FILE = "reward_scores.jsonl"
SCORE_CHUNK = 64  # (prompt, response) pairs per call of the score function


@dataclass
class RRHFConfig(TrainingConfig):
    """Hyperparameters of a LoRA RRHF run; invalid values raise ``ValueError``.

    ``batch_size`` counts prompts: each brings up to ``max_responses`` sequences to the
    forward pass, so the default 2 prompts x 4 responses is 8 sequences, as DPO's 8 pairs
    of 2 are 16. ``max_responses`` (k) caps the responses per prompt: with more, the best,
    the worst and ones evenly spaced between them by score are kept. ``rank_weight`` and
    ``sft_weight`` weigh the two terms (the paper: 1 and 1). ``learning_rate=1e-4`` and
    LoRA r 16 / alpha 32 as for DPO (LoRA adapters need ~10-100x a full fine-tune's rate).
    """

    method_name = "RRHF"

    batch_size: int = 2
    max_responses: int = 4
    rank_weight: float = 1.0
    sft_weight: float = 1.0

    def validate(self) -> None:
        super().validate()
        require(self.max_responses >= 2, "max_responses must be >= 2 (RRHF ranks responses)")
        require(self.rank_weight >= 0, "rank_weight must be >= 0")
        require(self.sft_weight >= 0, "sft_weight must be >= 0")
        require(
            self.rank_weight > 0 or self.sft_weight > 0,
            "rank_weight and sft_weight cannot both be 0 (nothing would train)",
        )


@dataclass
class RRHFResult:
    steps: int
    metrics: dict[str, float]
    output_dir: Path
    library_versions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RankedPrompt:
    """One prompt's tokenized responses with their scores (best first)."""

    responses: list[EncodedReply]
    scores: list[float]
    prompt_key: str

    @property
    def tokens(self) -> int:
        return sum(len(r.input_ids) for r in self.responses)

    @property
    def spread(self) -> float:
        return max(self.scores) - min(self.scores)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_ranked_rows(
    dataset_path: str | Path, *, scored: bool = True
) -> list[tuple[int, dict[str, Any]]]:
    """Validated rows ``{"prompt": [messages], "responses": [text, ...], "scores":
    [number, ...]}`` (a higher score is better) as ``(line, row)``.

    Raises ``ValueError`` naming the first bad line: responses and scores of different
    lengths, an empty response, or fewer than two distinct scores (nothing to rank); or
    when the file holds no rows. ``scored=False`` (a score function will score them):
    ``scores`` may be null or absent (the row keeps None) and a row needs two distinct
    responses instead.
    """
    rows = []
    for line, row in read_jsonl(dataset_path):
        required = ("prompt", "responses", "scores") if scored else ("prompt", "responses")
        for key in required:
            if key not in row:
                raise ValueError(f"line {line}: missing {key!r} (expected prompt/responses/scores)")
        responses, scores = row["responses"], row.get("scores")
        if not isinstance(responses, list) or not all(
            isinstance(text, str) and text.strip() for text in responses
        ):
            raise ValueError(f"line {line}: 'responses' must be a list of non-empty texts")
        if not scored:
            if len(set(responses)) < 2:
                raise ValueError(f"line {line}: needs at least two different responses to rank")
            prompt = check_messages(row["prompt"], field="prompt", line=line)
            rows.append((line, {"prompt": prompt, "responses": responses, "scores": None}))
            continue
        if not isinstance(scores, list) or not all(_number(score) for score in scores):
            raise ValueError(f"line {line}: 'scores' must be a list of numbers")
        if len(responses) != len(scores):
            raise ValueError(f"line {line}: {len(responses)} responses but {len(scores)} scores")
        if len(set(scores)) < 2:
            raise ValueError(
                f"line {line}: needs at least two responses with different scores to rank"
            )
        prompt = check_messages(row["prompt"], field="prompt", line=line)
        rows.append((line, {"prompt": prompt, "responses": responses, "scores": scores}))
    if not rows:
        raise ValueError(f"{Path(dataset_path).name} holds no ranked responses")
    return rows


def keep_responses(scores: list[float], k: int) -> list[int]:
    """Indices of at most ``k`` responses, best first: all of them when there are no more
    than ``k``; else the best, the worst and ones evenly spaced by rank between them."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    if len(order) <= k:
        return order
    last = len(order) - 1
    return [order[round(step * last / (k - 1))] for step in range(k)]


def score_rows(
    rows: list[tuple[int, dict[str, Any]]], score: ScoreFunction, *, say=None
) -> list[tuple[int, dict[str, Any]]]:
    """``rows`` with the scores of ``score`` (each distinct response of a row scored once,
    in calls of ``SCORE_CHUNK`` pairs), responses best first; rows whose responses all
    score the same are left out (nothing to rank). ``ValueError`` when the function does
    not return one finite number per reply, or when no row is left."""
    pairs = [
        (index, text)
        for index, (_, row) in enumerate(rows)
        for text in dict.fromkeys(row["responses"])
    ]
    values: list[float] = []
    for start in range(0, len(pairs), SCORE_CHUNK):
        chunk = pairs[start : start + SCORE_CHUNK]
        prompts = [rows[index][1]["prompt"] for index, _ in chunk]
        replies = [text for _, text in chunk]
        values.extend(checked_rewards(score(prompts, replies), len(chunk)))
    by_row: list[dict[str, float]] = [{} for _ in rows]
    for (index, text), value in zip(pairs, values, strict=True):
        by_row[index][text] = value
    scored = []
    for (line, row), scores in zip(rows, by_row, strict=True):
        if len(set(scores.values())) < 2:
            continue
        ordered = sorted(scores.items(), key=lambda item: -item[1])  # stable: ties keep order
        scored.append(
            (
                line,
                {
                    "prompt": row["prompt"],
                    "responses": [text for text, _ in ordered],
                    "scores": [value for _, value in ordered],
                },
            )
        )
    if say is not None:
        say(
            f"the score function scored {len(pairs)} responses of {len(rows)} prompts; "
            f"{len(rows) - len(scored)} left out (their responses scored the same)"
        )
    if not scored:
        raise ValueError("the score function gave every prompt's responses the same score")
    return scored


def load_ranked_prompts(
    dataset_path: str | Path,
    tokenizer: Any,
    config: RRHFConfig,
    *,
    rows: list[tuple[int, dict[str, Any]]] | None = None,
) -> list[RankedPrompt]:
    """Read (see ``read_ranked_rows``; or take ``rows``, scored already), cap at
    ``max_responses`` and tokenize."""
    prompts = []
    for line, row in rows if rows is not None else read_ranked_rows(dataset_path):
        kept = keep_responses(row["scores"], config.max_responses)
        try:
            encoded = [
                encode_chat_reply(
                    tokenizer,
                    row["prompt"],
                    [{"role": "assistant", "content": row["responses"][i]}],
                    max_length=config.max_length,
                    max_prompt_length=config.max_prompt_length,
                )
                for i in kept
            ]
        except Exception as exc:  # template errors surface as jinja/tokenizer exceptions
            raise ValueError(f"line {line}: cannot tokenize: {exc}") from exc
        prompts.append(
            RankedPrompt(
                responses=encoded,
                scores=[float(row["scores"][i]) for i in kept],
                prompt_key=prompt_key(row["prompt"]),
            )
        )
    return prompts


def rrhf_losses(
    logps: torch.Tensor, token_counts: torch.Tensor, scores: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """RRHF's terms for one prompt's responses.

    ``logps`` are the summed log-probabilities of each response's tokens, ``token_counts``
    their lengths, ``scores`` their rewards (higher is better). Returns ``(rank_loss,
    sft_loss, correct_pairs, pairs)``: the hinge sum over pairs with ``r_i < r_j`` of
    ``max(0, p_i - p_j)`` on the length-normalised ``p``, the best response's token-mean
    NLL (the first of equally best ones), how many differently scored pairs the policy
    already orders right (``p_j > p_i``) and how many there are.
    """
    p = logps / token_counts.clamp(min=1)
    worse = scores[:, None] < scores[None, :]  # worse[i, j]: response i scored below j
    rank_loss = (torch.relu(p[:, None] - p[None, :]) * worse).sum()
    best = int(torch.argmax(scores))  # argmax returns the first maximum
    sft_loss = -p[best]
    with torch.no_grad():
        correct = int(((p[None, :] > p[:, None]) & worse).sum())
    return rank_loss, sft_loss, correct, int(worse.sum())


def _write_scores(path: Path, scored: list[tuple[int, dict[str, Any]]]) -> None:
    """What the score function said: one row per prompt kept, responses best first."""
    with path.open("w", encoding="utf-8") as handle:
        for line, row in scored:
            handle.write(json.dumps({"line": line, **row}, ensure_ascii=False) + "\n")


class _RRHFObjective:
    """One forward pass over all responses of a micro-batch of prompts."""

    def __init__(self, config: RRHFConfig, model: Any, prompts: list[RankedPrompt], pad_id: int):
        self.config, self.model, self.prompts, self.pad_id = config, model, prompts, pad_id
        self.device = pick_device()

    def __call__(
        self, indices: list[int], model: Any = None
    ) -> tuple[torch.Tensor, dict[str, float], int]:
        """The loss of ``indices``, with ``model`` (the training loop's prepared model:
        autocast, DDP) or else the plain one."""
        chosen = [self.prompts[i] for i in indices]
        batch = collate(
            [reply for prompt in chosen for reply in prompt.responses],
            pad_token_id=self.pad_id,
            device=self.device,
        )
        logps, counts = sequence_logps(model if model is not None else self.model, batch)
        rank_losses, sft_losses, correct, pairs, start = [], [], 0, 0, 0
        for prompt in chosen:
            end = start + len(prompt.responses)
            scores = torch.tensor(prompt.scores, device=logps.device)
            rank, sft, right, total = rrhf_losses(logps[start:end], counts[start:end], scores)
            rank_losses.append(rank)
            sft_losses.append(sft)
            correct, pairs, start = correct + right, pairs + total, end
        rank_loss = torch.stack(rank_losses).mean()
        sft_loss = torch.stack(sft_losses).mean()
        loss = self.config.rank_weight * rank_loss + self.config.sft_weight * sft_loss
        metrics = {
            "rank_loss": rank_loss.item(),
            "sft_loss": sft_loss.item(),
            "ranking_accuracy": correct / pairs if pairs else 0.0,
            "pairs": float(pairs),
        }
        return loss, metrics, int(batch["attention_mask"].sum())

    def evaluate(self, indices: list[int], prefix: str = "eval_") -> dict[str, float]:
        """Loss terms and ranking accuracy (pair-weighted) over ``indices``, no gradients."""
        if not indices:
            return {}
        was_training = self.model.training
        self.model.eval()
        sums: dict[str, float] = {}
        correct = pairs = 0.0
        with torch.no_grad():
            for start in range(0, len(indices), self.config.batch_size):
                batch = indices[start : start + self.config.batch_size]
                loss, metrics, _ = self(batch)
                for key in ("rank_loss", "sft_loss"):
                    sums[key] = sums.get(key, 0.0) + metrics[key] * len(batch)
                sums["loss"] = sums.get("loss", 0.0) + float(loss) * len(batch)
                correct += metrics["ranking_accuracy"] * metrics["pairs"]
                pairs += metrics["pairs"]
        if was_training:
            self.model.train()
        result = {f"{prefix}{key}": value / len(indices) for key, value in sums.items()}
        result[f"{prefix}ranking_accuracy"] = correct / pairs if pairs else 0.0
        result[f"{prefix}prompts"] = float(len(indices))
        return result


def train_rrhf(
    config: RRHFConfig,
    *,
    dataset_path: str | Path,
    base_model_path: str | Path,
    output_dir: str | Path,
    on_step=None,
    should_stop=None,
    hooks: Hooks | None = None,
    score: ScoreFunction | None = None,
) -> RRHFResult:
    """Train ``base_model_path`` with RRHF on the scored responses of ``dataset_path``.

    Writes the LoRA adapter (or, with ``lora_r == 0``, the full model), the tokenizer and
    ``training_result.json`` (final, held-out and before/after ranking accuracy on the
    training prompts, steps, config, seed, library versions) into ``output_dir``.
    ``hooks`` (or the shorthand ``on_step``/``should_stop``) report progress, cancel
    (``TrainingCancelled``, nothing saved) and checkpoint/resume.

    ``score`` (a reward model's ``score(prompts, replies)``): the rows' own scores, if
    any, are ignored; every response is scored by it, ranked by those scores and then
    capped at ``max_responses`` (``score_rows``). The scores go to ``reward_scores.jsonl``
    and the metrics get ``scored_responses``, ``reward_mean`` and ``reward_best_mean``.
    """
    from transformers import AutoTokenizer

    hooks = hooks or Hooks(on_step=on_step, should_stop=should_stop)
    started = time.perf_counter()
    seed_everything(config.seed)
    device = pick_device()
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(str(base_model_path)))
    scored = None
    if score is not None:
        scored = score_rows(read_ranked_rows(dataset_path, scored=False), score, say=hooks.say)
    prompts = load_ranked_prompts(dataset_path, tokenizer, config, rows=scored)
    train_rows, held_out = holdout_split(
        [p.prompt_key for p in prompts], fraction=config.eval_fraction, seed=config.seed
    )
    hooks.say(
        f"{len(prompts)} ranked prompts: {len(train_rows)} to train on, {len(held_out)} held out"
    )
    model = load_causal_lm_for_training(base_model_path, config, device=device)
    objective = _RRHFObjective(config, model, prompts, tokenizer.pad_token_id)
    before = objective.evaluate(train_rows, prefix="initial_train_")

    loop = run_training_loop(
        model=model,
        config=config,
        rows=train_rows,
        compute=objective,
        hooks=hooks,
        difficulty=curriculum_difficulty(
            config.curriculum,
            [{"margin": p.spread} for p in prompts],
            [p.tokens for p in prompts],
        ),
    )
    final = loop.last
    final.update(objective.evaluate(held_out))
    final["initial_train_ranking_accuracy"] = before["initial_train_ranking_accuracy"]
    after = objective.evaluate(train_rows, prefix="final_train_")
    final["final_train_ranking_accuracy"] = after["final_train_ranking_accuracy"]
    final["train_loss"] = loop.mean("loss")
    final["train_seconds"] = time.perf_counter() - started
    final["prompts"] = float(len(train_rows))
    if scored is not None:
        every = [value for _, row in scored for value in row["scores"]]
        final["scored_responses"] = float(len(every))
        final["reward_mean"] = sum(every) / len(every)
        final["reward_best_mean"] = sum(row["scores"][0] for _, row in scored) / len(scored)

    record = training_record(
        method="rrhf", config=config, loop=loop, metrics=final, base_model=base_model_path
    )
    if is_main_process():
        save_artifact(model, tokenizer, output_dir, record)
        if scored is not None:
            _write_scores(Path(output_dir) / SCORES_FILE, scored)
    return RRHFResult(
        steps=loop.steps,
        metrics=final,
        output_dir=Path(output_dir),
        library_versions=library_versions(),
    )
