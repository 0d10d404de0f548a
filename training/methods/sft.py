"""Supervised fine-tuning (SFT) on demonstrations, with a LoRA adapter or every weight, on
TRL's ``SFTTrainer``.

What TRL does (``trl.SFTTrainer``, a ``transformers.Trainer``): tokenising the
conversational prompt-completion rows with the tokenizer's chat template (the prompt
rendered with the generation prompt, the reply being everything the template renders
after it: the assistant text, its end-of-turn token ``<|im_end|>`` and, for SmolLM2's
template, the newline after it), the completion-only loss (prompt tokens are labelled
-100; the loss is the token mean of the reply tokens' negative log-likelihood over the
optimizer step, computed by TRL's fused LM head without materialising the logits),
truncation to ``max_length``, padding, the LoRA adapter (``peft_config``), the optimizer
and schedule, mixed precision, checkpoints (``save_steps``) and resuming from them
(``resume_from_checkpoint``: RNG, optimizer, scheduler and the batches already seen), the
held-out evaluation (``evaluate``), and its per-step metrics (``loss``, ``grad_norm``,
``learning_rate``, ``epoch``, ``entropy``, ``mean_token_accuracy``, ``num_tokens``: tokens
trained so far, prompts included).

What is ours: the config the run form shows (``SFTConfig``, validated with clear messages,
mapped onto TRL's config in ``trl_config``), reading and checking the snapshot file in any
of its three forms and turning every row into TRL's conversational prompt-completion form
(``read_sft_rows``), the held-out split by prompt (``common.holdout_split``), the
curriculum order (``common.curriculum_order``, trained in that order by
``trl_runtime.in_given_order``), ``eval_perplexity``, and ``fit_with_sft_trainer``, which
RAFT (``raft.py``) uses for its fine-tuning step. The bridge to the run (per-step metrics,
cancel, checkpoint marks, main-process-only artifacts) and the precision settings are
``trl_runtime``'s, shared with KTO, the reward model and DPO.

Sequences are padded per batch, neither packed nor padding-free: TRL's padding-free mode
needs FlashAttention (the models here run on SDPA/eager attention, on CPU too), and
packing with ``bfd`` turns padding-free on; the per-batch padding costs little at our
sequence lengths.

``load_sft_examples`` and ``encode_example`` tokenize with the engine's
``encode_chat_reply`` (the same chat template; it drops what follows the reply's end-of-turn
token): RAFT tokenizes its kept replies with them, since a reply cut at ``max_new_tokens``
must be trained without an end-of-turn token, which a chat template always adds.

Nothing here imports Django; ``training/tasks.py`` is the bridge.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.methods.common import (
    EncodedReply,
    Hooks,
    LoopResult,
    TrainingCancelled,
    TrainingConfig,
    check_messages,
    curriculum_difficulty,
    curriculum_order,
    encode_chat_reply,
    holdout_split,
    library_versions,
    lora_config,
    optional_number,
    prepare_tokenizer,
    prompt_key,
    read_jsonl,
    require,
    seed_everything,
    training_record,
)
from training.methods.trl_runtime import (
    in_given_order,
    load_base_model,
    rows_dataset,
    run_bridge,
    save_trained,
    step_metrics,
    train_with_bridge,
    trainer_arguments,
)

__all__ = [
    "SFTConfig",
    "SFTExample",
    "SFTResult",
    "TrainingCancelled",
    "fit_with_sft_trainer",
    "load_sft_examples",
    "read_sft_rows",
    "train_sft",
    "trl_config",
]


@dataclass
class SFTConfig(TrainingConfig):
    """Hyperparameters of an SFT run; invalid values raise ``ValueError``.

    Each maps onto ``trl.SFTConfig`` (see ``trl_config`` and
    ``trl_runtime.trainer_arguments``): ``learning_rate``, ``max_steps`` (null -> -1),
    ``gradient_accumulation_steps``, ``max_length`` (TRL truncates longer rows, keeping
    their start) and ``seed`` (and ``data_seed``) by name; ``epochs`` ->
    ``num_train_epochs``; ``batch_size`` -> ``per_device_train_batch_size`` and
    ``per_device_eval_batch_size``; ``warmup_ratio`` -> ``warmup_steps`` (a share of the
    steps), linear decay; ``checkpoint_every`` -> ``save_steps``; ``mixed_precision`` ->
    ``bf16``/``fp16``; ``gradient_checkpointing`` as is; ``lora_r``, ``lora_alpha``,
    ``lora_dropout``, ``lora_target_modules`` -> peft's ``LoraConfig`` (``peft_config``;
    none with ``lora_r=0``, which trains every weight); ``qlora`` -> a 4-bit base model
    (``trl_runtime.load_base_model``); ``curriculum`` -> rows sorted easiest first and
    visited in that order (``trl_runtime.in_given_order``) instead of the Trainer's
    seeded shuffle; ``eval_fraction`` -> the held-out rows passed as ``eval_dataset``.
    Fixed: ``completion_only_loss=True``, ``packing=False``, ``padding_free=False`` (see
    the module docstring). ``max_prompt_length`` is not used by the trainer (TRL does not
    cut prompts: a row whose prompt alone fills ``max_length`` has no reply token left
    and TRL drops it, which the run log reports); RAFT's kept replies still keep at most
    that many prompt tokens.

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
    """Tokenize one (prompt, reply) (see ``common.encode_chat_reply``)."""
    encoded = encode_chat_reply(
        tokenizer, prompt, reply, max_length=max_length, max_prompt_length=max_prompt_length
    )
    return SFTExample(encoded=encoded, prompt_key=prompt_key(prompt), row=row or {})


def load_sft_examples(
    dataset_path: str | Path, tokenizer: Any, *, max_length: int, max_prompt_length: int
) -> list[SFTExample]:
    """Read (see ``read_sft_rows``) and tokenize an SFT file; a row the chat template
    cannot render raises ``ValueError`` naming its line."""
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


def trl_row(example: SFTExample) -> dict[str, list[dict[str, str]]]:
    """An example in TRL's conversational prompt-completion form (completion-only loss)."""
    return {"prompt": example.row["prompt"], "completion": example.row["reply"]}


def curriculum_sorted(config: TrainingConfig, examples: list[SFTExample]) -> list[int]:
    """Indices of ``examples`` from easiest to hardest for ``config.curriculum`` (rows
    without a curriculum keep their order: the Trainer shuffles them)."""
    difficulty = curriculum_difficulty(
        config.curriculum, [e.row for e in examples], [e.tokens for e in examples]
    )
    return list(range(len(examples))) if difficulty is None else curriculum_order(difficulty)


# --- Training -------------------------------------------------------------------------


def trl_config(config: TrainingConfig, *, output_dir: Path, save: bool) -> Any:
    """TRL's ``SFTConfig`` for our config (``trl_runtime.trainer_arguments`` plus SFT's own
    settings: loss on the completion only, rows padded per batch, neither packed nor
    padding-free, long rows cut keeping their start)."""
    from trl import SFTConfig as TRLSFTConfig

    return TRLSFTConfig(
        **trainer_arguments(config, output_dir=output_dir, save=save),
        completion_only_loss=True,
        assistant_only_loss=False,
        packing=False,
        padding_free=False,
        truncation_mode="keep_start",
        shuffle_dataset=False,
    )


def _is_peft_model(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def fit_with_sft_trainer(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    config: TrainingConfig,
    hooks: Hooks,
    *,
    scratch_dir: Path,
    eval_rows: list[dict[str, Any]] | None = None,
    in_order: bool = False,
    what: str = "SFT training",
) -> tuple[Any, LoopResult]:
    """Fine-tune ``model`` on ``rows`` with TRL's ``SFTTrainer``; returns the trainer (for
    ``evaluate`` and saving) and every step's metrics.

    ``model`` is a loaded causal LM, or a path loaded with ``trl_runtime.load_base_model``.
    A plain model gets a fresh LoRA adapter from ``config`` (none with ``lora_r=0``); a
    PEFT model (RAFT's policy, trained again each iteration) trains its own adapter.
    ``rows`` are in one of TRL's forms: conversational ``{"prompt", "completion"}``, which
    TRL tokenizes with ``tokenizer``'s chat template, or already tokenized ``{"input_ids",
    "completion_mask"}``; either way only completion tokens are trained. ``in_order``
    visits them in the order given (a curriculum) instead of shuffled. ``eval_rows``
    (same form) are prepared for ``trainer.evaluate()``. Checkpoints go to
    ``hooks.checkpoint_dir`` every ``checkpoint_every`` steps and training resumes from
    the last one there; without a checkpoint folder the Trainer works in ``scratch_dir``
    and saves nothing. Raises ``TrainingCancelled`` when ``hooks.should_stop`` stopped it.
    """
    from trl import SFTTrainer

    if isinstance(model, str | Path):
        model = load_base_model(model, config)
    checkpoints = hooks.checkpoint_dir
    use_lora = config.lora_r > 0 and not _is_peft_model(model)
    bridge = run_bridge(hooks)
    trainer_class = in_given_order(SFTTrainer) if in_order else SFTTrainer
    args = trl_config(config, output_dir=checkpoints or scratch_dir, save=checkpoints is not None)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=rows_dataset(rows, args, name="train"),
        eval_dataset=rows_dataset(eval_rows, args, name="held-out") if eval_rows else None,
        processing_class=tokenizer,
        peft_config=lora_config(config) if use_lora else None,
        callbacks=[bridge],
    )
    dropped = len(rows) - len(trainer.train_dataset)
    if dropped:
        hooks.say(
            f"{dropped} of {len(rows)} rows dropped: their prompt alone fills max_length "
            f"({config.max_length} tokens)"
        )
    require(
        len(trainer.train_dataset) > 0,
        f"no row fits max_length ({config.max_length} tokens) with a reply token to train on",
    )
    loop = train_with_bridge(trainer, bridge, hooks=hooks, what=what)
    return trainer, loop


def held_out_metrics(trainer: Any) -> dict[str, float]:
    """TRL's evaluation of the trainer's ``eval_dataset``: ``eval_loss`` (reply-token NLL,
    the token mean of each batch averaged over the rows), ``eval_perplexity``,
    ``eval_mean_token_accuracy``, ``eval_entropy`` and ``eval_rows``; empty without one."""
    if trainer.eval_dataset is None or len(trainer.eval_dataset) == 0:
        return {}
    evaluation = step_metrics(trainer.evaluate())
    metrics = {
        key: evaluation[key]
        for key in ("eval_loss", "eval_mean_token_accuracy", "eval_entropy")
        if key in evaluation
    }
    metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 700.0))
    metrics["eval_rows"] = float(len(trainer.eval_dataset))
    return metrics


def load_training_tokenizer(base_model_path: str | Path) -> Any:
    """The base model's tokenizer with a chat template (SmolLM2's where it has none) and a
    pad token (``common.prepare_tokenizer``): the one the trainer renders rows with."""
    from transformers import AutoTokenizer

    return prepare_tokenizer(AutoTokenizer.from_pretrained(str(base_model_path)))


def train_sft(
    config: SFTConfig,
    *,
    dataset_path: str | Path,
    base_model_path: str | Path,
    output_dir: str | Path,
    on_step=None,
    should_stop=None,
    hooks: Hooks | None = None,
) -> SFTResult:
    """Fine-tune ``base_model_path`` on the replies of ``dataset_path``; save to ``output_dir``.

    With ``lora_r > 0`` writes a LoRA adapter (``adapter_config.json``,
    ``adapter_model.safetensors``), with ``lora_r == 0`` a full model (``config.json``,
    ``model.safetensors``), plus the tokenizer and ``training_result.json`` (final and
    held-out metrics, per-step history, config, seed, library versions); the caller gives
    a private directory and publishes it. ``hooks`` (or the shorthand
    ``on_step``/``should_stop``) report every optimizer step, cancel
    (``TrainingCancelled``, nothing saved) and hold the checkpoint folder: checkpoints go
    there every ``checkpoint_every`` steps, and a run that finds one there resumes from
    it. Same config, data and seed give the same weights on the same hardware.
    """
    hooks = hooks or Hooks(on_step=on_step, should_stop=should_stop)
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
    hooks.check_stop("SFT training")
    training = [examples[i] for i in train_rows]
    order = curriculum_sorted(config, training)

    model = load_base_model(base_model_path, config)
    with tempfile.TemporaryDirectory(prefix="sft-") as scratch:
        trainer, loop = fit_with_sft_trainer(
            model,
            tokenizer,
            [trl_row(training[i]) for i in order],
            config,
            hooks,
            scratch_dir=Path(scratch),
            eval_rows=[trl_row(examples[i]) for i in held_out],
            in_order=config.curriculum is not None,
        )
        final = loop.last
        final.update(held_out_metrics(trainer))
        final["train_loss"] = loop.mean("loss")
        final["train_seconds"] = time.perf_counter() - started
        final["rows"] = float(len(trainer.train_dataset))
        record = training_record(
            method="sft", config=config, loop=loop, metrics=final, base_model=base_model_path
        )
        save_trained(trainer, tokenizer, output_dir, record)
    return SFTResult(
        steps=loop.steps,
        metrics=final,
        output_dir=Path(output_dir),
        library_versions=library_versions(),
    )
