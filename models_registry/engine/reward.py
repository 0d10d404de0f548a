"""Reward scoring: a trained reward model (a causal LM with a one-output ``score`` head,
``AutoModelForSequenceClassification`` with ``num_labels=1``) loaded from its folder and
asked to score assistant replies.

``training.methods.reward`` trains these models and writes ``reward_normalization.json``;
the registry scores with them for best-of-n serving and active-learning pairing. Plain
Python on torch, transformers and peft: no Django, nothing of ours outside the engine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from models_registry.engine.encoding import (
    EncodedReply,
    autocast_for,
    collate,
    encode_chat_reply,
    pick_device,
    prepare_tokenizer,
)

__all__ = ["NORMALIZATION_FILE", "RewardScorer", "score_head", "sequence_rewards"]

# Written next to a trained reward model: the mean and std of the base policy's raw rewards.
NORMALIZATION_FILE = "reward_normalization.json"


# --- The scalar-head model ------------------------------------------------------------


def _inner_model(model: Any) -> Any:
    """The transformers model under a peft wrapper (the model itself when there is none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def sequence_rewards(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Scalar rewards, shape ``(batch,)``, of right-padded sequences: the score head
    applied to the final hidden state of each sequence's last attended token.

    The position comes from the attention mask rather than from transformers' rule
    ("last token that is not the pad token") because SmolLM2's pad token is its EOS,
    which ends every encoded reply: that rule would score the token before it.
    """
    inner = _inner_model(model)
    backbone = getattr(inner, inner.base_model_prefix)
    hidden = backbone(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state
    last = batch["attention_mask"].sum(dim=1) - 1
    pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    return inner.score(pooled).squeeze(-1).float()


def score_head(model: Any) -> torch.nn.Linear:
    head = getattr(model, "score", None)
    if not isinstance(head, torch.nn.Linear) or head.out_features != 1:
        raise ValueError(
            f"{type(model).__name__} has no one-output 'score' head; reward models need a "
            "causal LM whose sequence-classification class scores with 'score'"
        )
    return head


# --- Scoring --------------------------------------------------------------------------


def _check_inputs(conversations: Any, replies: Any) -> None:
    if not isinstance(conversations, list) or not isinstance(replies, list):
        raise ValueError("conversations and replies must be lists")
    if len(conversations) != len(replies):
        raise ValueError(
            f"got {len(conversations)} conversations but {len(replies)} replies; "
            "give one reply per conversation"
        )
    for index, (messages, reply) in enumerate(zip(conversations, replies, strict=True)):
        if not isinstance(messages, list) or not messages or not all(map(_is_message, messages)):
            raise ValueError(
                f"conversation {index} must be a non-empty list of {{'role', 'content'}} messages"
            )
        if not isinstance(reply, str):
            raise ValueError(f"reply {index} must be a string")


def _is_message(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("role"), str)
        and isinstance(value.get("content"), str)
    )


class RewardScorer:
    """Scores assistant replies with a trained reward model.

    ``score`` returns rewards normalised so that the base policy's replies have mean 0
    and standard deviation 1 (see ``reward_normalization.json``); ``score_raw`` the head's
    output. A reply is tokenized exactly as in training: the conversation with the reply
    as the next assistant turn, rendered with the chat template and ended with EOS, cut
    to the training ``max_length``/``max_prompt_length``. Scores do not depend on the
    batch size or on which other replies share a batch (beyond floating-point noise).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        mean: float = 0.0,
        std: float = 1.0,
        max_length: int = 512,
        max_prompt_length: int = 256,
        device: str | None = None,
    ):
        if not std > 0:
            raise ValueError("the reward normalisation std must be > 0")
        self.model, self.tokenizer = model, prepare_tokenizer(tokenizer)
        self.mean, self.std = float(mean), float(std)
        self.max_length, self.max_prompt_length = max_length, max_prompt_length
        self.device = device or pick_device()

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        base_model_path: str | Path | None = None,
        device: str | None = None,
    ) -> RewardScorer:
        """Load a ``train_reward`` artifact: a LoRA adapter with its score head, applied to
        ``base_model_path`` or else the base named in ``adapter_config.json`` and merged,
        or a full model. Raises ``ValueError`` when ``path`` is not a reward model."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = Path(path)
        device = device or pick_device()
        normalization = _read_object(folder / NORMALIZATION_FILE, what="reward model artifact")
        adapter_config_path = folder / "adapter_config.json"
        tokenizer_source: str | Path = folder
        if adapter_config_path.is_file():
            adapter_config = _read_object(adapter_config_path, what="LoRA adapter")
            if adapter_config.get("task_type") != "SEQ_CLS":
                raise ValueError(f"{folder} holds a LoRA adapter that is not a reward model")
            base = base_model_path or adapter_config.get("base_model_name_or_path")
            if not base:
                raise ValueError(f"{adapter_config_path} names no base model; pass one")
            model = _load_merged_adapter(str(base), folder)
            if not (folder / "tokenizer_config.json").is_file():
                tokenizer_source = base
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                str(folder), dtype=torch.float32
            )
        if model.config.num_labels != 1:
            raise ValueError(f"{folder} is not a scalar reward model")
        score_head(model)
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_source))
        config = _read_training_config(folder)
        model.to(device)
        model.eval()
        return cls(
            model,
            tokenizer,
            mean=float(normalization["mean"]),
            std=float(normalization["std"]),
            max_length=int(config.get("max_length", 512)),
            max_prompt_length=int(config.get("max_prompt_length", 256)),
            device=device,
        )

    def _encode(self, conversation: list[dict[str, str]], reply: str) -> EncodedReply:
        messages = [{"role": m["role"], "content": m["content"]} for m in conversation]
        return encode_chat_reply(
            self.tokenizer,
            messages,
            [{"role": "assistant", "content": reply}],
            max_length=self.max_length,
            max_prompt_length=self.max_prompt_length,
        )

    def score_raw(
        self, conversations: list[list[dict]], replies: list[str], *, batch_size: int = 8
    ) -> list[float]:
        """The reward head's output for each (conversation, reply), in order."""
        _check_inputs(conversations, replies)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        encoded = [self._encode(c, r) for c, r in zip(conversations, replies, strict=True)]
        # Similar lengths share a batch, so little compute goes to padding.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
        scores = [0.0] * len(encoded)
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                indices = order[start : start + batch_size]
                batch = collate(
                    [encoded[i] for i in indices],
                    pad_token_id=self.tokenizer.pad_token_id,
                    device=self.device,
                )
                with autocast_for(self.device):
                    rewards = sequence_rewards(self.model, batch).tolist()
                for index, reward in zip(indices, rewards, strict=True):
                    scores[index] = reward
        return scores

    def score(
        self, conversations: list[list[dict]], replies: list[str], *, batch_size: int = 8
    ) -> list[float]:
        """Normalised rewards: ``(raw - mean) / std`` of the base policy's replies."""
        raw = self.score_raw(conversations, replies, batch_size=batch_size)
        return [(value - self.mean) / self.std for value in raw]


def _read_object(path: Path, *, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(f"{path.parent} is not a {what}: {path.name} is missing") from exc
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def _read_training_config(folder: Path) -> dict[str, Any]:
    """The training config recorded next to the artifact ({} when there is none)."""
    path = folder / "training_result.json"
    if not path.is_file():
        return {}
    config = _read_object(path, what="training record").get("config")
    return config if isinstance(config, dict) else {}


def _load_merged_adapter(base: str, adapter: Path) -> Any:
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=1, dtype=torch.float32
    )
    # Merging makes scoring as fast as the plain model; the trained head replaces the
    # freshly initialised one.
    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
