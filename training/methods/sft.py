"""Supervised fine-tuning (SFT) on demonstrations, with a LoRA adapter or every weight.

The objective is TRL ``SFTTrainer``'s with ``completion_only_loss``: the token-mean
negative log-likelihood of the reply tokens of each micro-batch, the prompt tokens being
context only (label -100), and the reply ending with the end-of-turn token so the model
learns to stop. Rows come in TRL's conversational forms (language modeling
``{"messages"}``, prompt-completion ``{"prompt", "completion"}``) or as preference rows
whose chosen reply is the target. The loop is ``common.run_training_loop`` (per-step
callback, cancellation, resumable checkpoints) rather than the Trainer, as for DPO.

RAFT (``raft.py``) reuses ``SFTExample``, ``SFTObjective`` and ``fit_sft`` to fine-tune on
its reward-ranked samples. Nothing here imports Django; ``training/tasks.py`` is the bridge.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from training.methods.common import (
    EncodedReply,
    Hooks,
    LoopResult,
    TrainingCancelled,
    TrainingConfig,
    autocast_for,
    check_messages,
    collate,
    curriculum_difficulty,
    encode_chat_reply,
    holdout_split,
    library_versions,
    load_causal_lm_for_training,
    optional_number,
    pick_device,
    prepare_tokenizer,
    prompt_key,
    read_jsonl,
    run_training_loop,
    save_artifact,
    seed_everything,
    sequence_logps,
    training_record,
)

__all__ = [
    "SFTConfig",
    "SFTExample",
    "SFTObjective",
    "SFTResult",
    "TrainingCancelled",
    "fit_sft",
    "load_sft_examples",
    "read_sft_rows",
    "train_sft",
]


@dataclass
class SFTConfig(TrainingConfig):
    """Hyperparameters of an SFT run; invalid values raise ``ValueError``.

    Defaults are chosen for LoRA on a ~100M-parameter instruct model (SmolLM2-135M) with
    the tens to thousands of demonstrations a labeling round produces:

    - ``learning_rate=2e-4``: TRL's PEFT guide uses it for LoRA SFT ("~10x the full
      fine-tuning rate"): LoRA's B matrices start at zero and train ~1% of the weights, so
      lower rates barely move a model in the few dozen steps a small dataset gives. For
      full fine-tuning (``lora_r=0``) use ~2e-5 (TRL's SFT default): every weight then
      moves, and 2e-4 would damage a pretrained model.
    - ``epochs=3`` (the Trainer's default), ``batch_size=8``, ``warmup_ratio=0.1``.
      Measured on SmolLM2-135M (CPU, 32 demonstrations answering "Tell me one fact about
      X." with "FACT: X is interesting. END"): 3 epochs (12 steps) took the reply loss
      from 5.8 to 2.8 (held out: 2.3) and all 4 unseen prompts were then answered in that
      form ("FACT: Copper is a metal."); 1 epoch (4 steps) reached 4.4 and none were.
    - ``lora_r=16``, ``lora_alpha=32`` on every attention and MLP projection, as DPO.
    """

    method_name = "SFT"

    learning_rate: float = 2e-4
    epochs: int = 3


@dataclass
class SFTResult:
    steps: int
    metrics: dict[str, float]
    output_dir: Path
    library_versions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SFTExample:
    """One tokenized (prompt, reply) with what the split and the curriculum need."""

    encoded: EncodedReply
    prompt_key: str
    row: dict[str, Any]

    @property
    def tokens(self) -> int:
        return len(self.encoded.input_ids)


# --- Data -----------------------------------------------------------------------------

ROW_FORMS = "'messages', 'prompt' + 'completion' or 'prompt' + 'chosen'"


def _prompt_and_reply(row: dict[str, Any], line: int) -> tuple[list[dict], list[dict]]:
    """The (prompt, assistant reply) of a row in any of the accepted forms."""
    if "messages" in row:
        messages = check_messages(row["messages"], field="messages", line=line)
        if messages[-1]["role"] != "assistant" or len(messages) < 2:
            raise ValueError(
                f"line {line}: 'messages' must end with an assistant reply after at least "
                "one prompt message"
            )
        return messages[:-1], messages[-1:]
    if "prompt" not in row:
        raise ValueError(f"line {line}: expected {ROW_FORMS}")
    reply_field = "completion" if "completion" in row else "chosen"
    if reply_field not in row:
        raise ValueError(f"line {line}: 'prompt' without 'completion' (or 'chosen')")
    prompt = check_messages(row["prompt"], field="prompt", line=line)
    reply = check_messages(row[reply_field], field=reply_field, line=line, roles=("assistant",))
    return prompt, reply


def read_sft_rows(dataset_path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """Validated rows of an SFT JSONL file as ``(line, {"prompt", "reply", ...})``.

    Each line is one of TRL's conversational forms: ``{"messages": [...]}`` whose last
    message is the assistant reply (earlier messages are the prompt),
    ``{"prompt": [...], "completion": [assistant message]}``, or a preference row
    ``{"prompt", "chosen", "rejected"}`` whose chosen reply is the target. Optional
    numbers ``margin`` and ``agreement`` feed the curriculum. Raises ``ValueError`` naming
    the first bad line, or when the file holds no rows.
    """
    rows = []
    for line, row in read_jsonl(dataset_path):
        prompt, reply = _prompt_and_reply(row, line)
        rows.append(
            (
                line,
                {
                    "prompt": prompt,
                    "reply": reply,
                    "margin": optional_number(row, "margin", line=line),
                    "agreement": optional_number(row, "agreement", line=line),
                },
            )
        )
    if not rows:
        raise ValueError(f"{Path(dataset_path).name} holds no SFT rows")
    return rows


def encode_example(
    tokenizer: Any,
    prompt: list[dict[str, str]],
    reply: list[dict[str, str]],
    *,
    max_length: int,
    max_prompt_length: int,
    row: dict[str, Any] | None = None,
) -> SFTExample:
    """Tokenize one (prompt, reply) for training (see ``common.encode_chat_reply``)."""
    encoded = encode_chat_reply(
        tokenizer, prompt, reply, max_length=max_length, max_prompt_length=max_prompt_length
    )
    return SFTExample(encoded=encoded, prompt_key=prompt_key(prompt), row=row or {})


def load_sft_examples(
    dataset_path: str | Path, tokenizer: Any, *, max_length: int, max_prompt_length: int
) -> list[SFTExample]:
    """Read (see ``read_sft_rows``) and tokenize an SFT file."""
    examples = []
    for line, row in read_sft_rows(dataset_path):
        try:
            example = encode_example(
                tokenizer,
                row["prompt"],
                row["reply"],
                max_length=max_length,
                max_prompt_length=max_prompt_length,
                row=row,
            )
        except Exception as exc:  # template errors surface as jinja/tokenizer exceptions
            raise ValueError(f"line {line}: cannot tokenize: {exc}") from exc
        examples.append(example)
    return examples


# --- Objective and loop ---------------------------------------------------------------


class SFTObjective:
    """Token-mean NLL of the reply tokens of a micro-batch of ``examples``."""

    def __init__(self, model: Any, examples: list[SFTExample], *, pad_id: int, batch_size: int):
        self.model, self.examples = model, examples
        self.pad_id, self.batch_size = pad_id, batch_size
        self.device = pick_device()

    def nll(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Summed reply NLL per row, reply token counts per row, and tokens processed."""
        batch = collate(
            [self.examples[i].encoded for i in indices],
            pad_token_id=self.pad_id,
            device=self.device,
        )
        with autocast_for(self.device):
            logps, counts = sequence_logps(self.model, batch)
        return -logps, counts, int(batch["attention_mask"].sum())

    def __call__(self, indices: list[int]) -> tuple[torch.Tensor, dict[str, float], int]:
        nll, counts, tokens = self.nll(indices)
        loss = nll.sum() / counts.sum().clamp(min=1)
        return loss, {"reply_tokens": float(counts.float().mean())}, tokens

    def evaluate(self, indices: list[int]) -> dict[str, float]:
        """Held-out ``eval_loss`` (token-mean reply NLL over all of ``indices``),
        ``eval_perplexity`` and ``eval_rows``; empty when nothing is held out."""
        if not indices:
            return {}
        self.model.eval()
        total_nll, total_tokens = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(indices), self.batch_size):
                nll, counts, _ = self.nll(indices[start : start + self.batch_size])
                total_nll += float(nll.sum())
                total_tokens += int(counts.sum())
        self.model.train()
        loss = total_nll / max(total_tokens, 1)
        return {
            "eval_loss": loss,
            "eval_perplexity": math.exp(loss),
            "eval_rows": float(len(indices)),
        }


def fit_sft(
    objective: SFTObjective, config: TrainingConfig, rows: list[int], hooks: Hooks
) -> LoopResult:
    """Optimise ``objective.model`` on ``rows`` of ``objective.examples`` (curriculum
    order when ``config.curriculum`` is set, shuffled otherwise)."""
    examples = objective.examples
    return run_training_loop(
        model=objective.model,
        config=config,
        rows=rows,
        compute=objective,
        hooks=hooks,
        difficulty=curriculum_difficulty(
            config.curriculum, [e.row for e in examples], [e.tokens for e in examples]
        ),
    )


def load_training_tokenizer(base_model_path: str | Path) -> Any:
    from transformers import AutoTokenizer

    return prepare_tokenizer(AutoTokenizer.from_pretrained(str(base_model_path)))


def train_sft(
    config: SFTConfig,
    *,
    dataset_path: str | Path,
    base_model_path: str | Path,
    output_dir: str | Path,
    hooks: Hooks | None = None,
) -> SFTResult:
    """Fine-tune ``base_model_path`` on the replies of ``dataset_path``; save to ``output_dir``.

    With ``lora_r > 0`` writes a LoRA adapter (``adapter_config.json``,
    ``adapter_model.safetensors``), with ``lora_r == 0`` a full model (``config.json``,
    ``model.safetensors``), plus the tokenizer and ``training_result.json`` (final and
    held-out metrics, steps, config, seed, library versions). ``hooks`` report progress,
    cancel (``TrainingCancelled``, nothing saved) and checkpoint/resume. Same config, data
    and seed give the same weights on the same hardware.
    """
    hooks = hooks or Hooks()
    started = time.perf_counter()
    seed_everything(config.seed)
    tokenizer = load_training_tokenizer(base_model_path)
    examples = load_sft_examples(
        dataset_path,
        tokenizer,
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
    )
    train_rows, held_out = holdout_split(
        [e.prompt_key for e in examples], fraction=config.eval_fraction, seed=config.seed
    )
    hooks.say(f"{len(examples)} rows: {len(train_rows)} to train on, {len(held_out)} held out")
    model = load_causal_lm_for_training(base_model_path, config, device=pick_device())
    objective = SFTObjective(
        model, examples, pad_id=tokenizer.pad_token_id, batch_size=config.batch_size
    )
    loop = fit_sft(objective, config, train_rows, hooks)

    final = loop.last
    final.update(objective.evaluate(held_out))
    final["train_loss"] = loop.mean("loss")
    final["train_seconds"] = time.perf_counter() - started
    final["rows"] = float(len(train_rows))
    record = training_record(
        method="sft", config=config, loop=loop, metrics=final, base_model=base_model_path
    )
    save_artifact(model, tokenizer, output_dir, record)
    return SFTResult(
        steps=loop.steps,
        metrics=final,
        output_dir=Path(output_dir),
        library_versions=library_versions(),
    )
