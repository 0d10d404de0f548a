"""Download a model from the Hugging Face hub into a local folder. Plain Python, no Django.

The hub is asked once, with a short timeout, whether the model exists before anything is
downloaded: without a network, transformers' own download retries for about a minute
before it gives up, which is too long for a page to wait on.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from models_registry.engine import ml

# owner/name or a bare name, as the hub spells model ids
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
PROBE_TIMEOUT_SECONDS = 10.0


class HubError(ValueError):
    """The hub could not be reached, or refused the model; the message says which."""


def looks_like_hub_id(source: str) -> bool:
    return bool(HUB_ID.match(source)) and ".." not in source


def check_hub_model(repo_id: str, *, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
    """Raise ``HubError`` unless the hub answers that ``repo_id`` is a model we may read."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE:
        raise HubError(
            f"The Hugging Face hub could not be reached: offline mode is on (HF_HUB_OFFLINE), "
            f"so {repo_id} cannot be downloaded."
        )
    try:
        HfApi().model_info(repo_id, timeout=timeout)
    except RepositoryNotFoundError:
        raise HubError(
            f"The Hugging Face hub has no model {repo_id} (or it is private or gated)."
        ) from None
    except HfHubHTTPError as error:
        raise HubError(f"The Hugging Face hub refused {repo_id}: {error}") from None
    except Exception as error:  # connection refused, DNS failure, timeout, proxy errors
        raise HubError(
            f"The Hugging Face hub could not be reached ({constants.ENDPOINT}): "
            f"{type(error).__name__}: {error}"
        ) from None


def download_policy(
    repo_id: str, output_dir: str | os.PathLike[str], *, timeout: float = PROBE_TIMEOUT_SECONDS
) -> Path:
    """Download a causal language model and its tokenizer from the hub and save them as
    safetensors at ``output_dir``, which appears only once completely written and
    verified. Raises ``HubError`` (nothing written) when the hub cannot be reached or has
    no such model, ``ml.ArtifactError`` when ``output_dir`` already exists."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    output_dir = Path(output_dir)
    if output_dir.exists():
        raise ml.ArtifactError(f"{output_dir} already exists")
    check_hub_model(repo_id, timeout=timeout)
    try:
        with ml._published_model_folder(output_dir) as staging:
            tokenizer = AutoTokenizer.from_pretrained(repo_id)
            model = AutoModelForCausalLM.from_pretrained(repo_id, dtype=torch.float32)
            model.save_pretrained(str(staging), safe_serialization=True)
            tokenizer.save_pretrained(str(staging))
            del model
    except OSError as error:
        raise HubError(f"Downloading {repo_id} from the Hugging Face hub failed: {error}") from None
    return output_dir
