"""Ship a dataset version: its rows in a training library's format (writers.py), the card
beside them, and, where the network allows, a push to the Hugging Face Hub.

The card goes next to the data: ``README.md`` inside a ``datasets`` folder, or
``<file>.README.md`` beside a JSONL, Parquet or CSV file (a folder's README may be someone
else's). A push needs the Hub: without a route to it the push fails at once, naming the
reason, before anything is written there.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from annotation.datasets import writers
from annotation.models import DatasetVersion
from config.errors import ServiceError

HUB_CONNECT_TIMEOUT_S = 3.0


class ExportError(ServiceError):
    pass


@dataclass(frozen=True)
class Shipped:
    rows: int
    output: Path
    card: Path
    hub_url: str = ""


def card_path(output: Path, container: str) -> Path:
    return (
        output / "README.md"
        if container == "disk"
        else output.with_name(output.name + ".README.md")
    )


def version_export(
    *,
    version: DatasetVersion,
    fmt: str,
    output: Path,
    container: str = "jsonl",
    conversational: bool = True,
    push_to_hub: str = "",
) -> Shipped:
    """Write ``version`` as ``fmt`` to ``output`` (whole or not at all) with its card."""
    try:
        writers.check_format(version.kind, fmt)
        if container not in writers.CONTAINERS:
            raise ValueError(
                f"Unknown container {container!r}; one of {', '.join(writers.CONTAINERS)}."
            )
        if container == "csv":
            writers.check_csv_format(fmt)
    except ValueError as error:
        raise ExportError(str(error)) from None
    if push_to_hub:
        check_hub_reachable()
    rows = writers.export_rows(
        writers.read_version_rows(Path(version.path)), fmt, conversational=conversational
    )
    count = writers.write_export(rows, output, fmt=fmt, container=container)
    card = card_path(output, container)
    writers.write_card(card, version.card)
    hub_url = _push(output, card, container, push_to_hub) if push_to_hub else ""
    return Shipped(rows=count, output=output, card=card, hub_url=hub_url)


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def check_hub_reachable() -> None:
    """Fail at once, with the reason, when the Hub cannot be reached from here."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        raise ExportError("Cannot push to the Hub: HF_HUB_OFFLINE is set. Nothing was pushed.")
    endpoint = urlparse(_hub_endpoint())
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=HUB_CONNECT_TIMEOUT_S).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ExportError(
            f"Cannot push to the Hub: {endpoint.hostname}:{port} is not reachable from here "
            f"({reason}). Nothing was pushed."
        ) from None


def _push(output: Path, card: Path, container: str, repo_id: str) -> str:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=_hub_endpoint())
    try:
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
        if container == "disk":
            api.upload_folder(folder_path=str(output), repo_id=repo_id, repo_type="dataset")
        else:
            api.upload_file(
                path_or_fileobj=str(output),
                path_in_repo=output.name,
                repo_id=repo_id,
                repo_type="dataset",
            )
            api.upload_file(
                path_or_fileobj=str(card),
                path_in_repo="README.md",
                repo_id=repo_id,
                repo_type="dataset",
            )
    except Exception as error:  # the Hub's errors are many; the message says which
        raise ExportError(f"The push to {repo_id} failed: {error}") from None
    return f"{_hub_endpoint()}/datasets/{repo_id}"
