"""Where a model version generates: an OpenAI-compatible inference server registered for it
(vLLM, TGI, SGLang at scale), or this process from its files (the default).

``generator_for(version)`` is the one way callers get replies (arena, local judges, ``/v1``,
generation jobs, chat); ``serving_endpoint_set`` / ``serving_endpoint_clear`` are the writes
behind the ``serve_endpoint`` command, the REST API and the version's page.

A server URL must name a public address unless the operator sets ``OUTBOUND_ALLOW_PRIVATE``
(``config.outbound``): checked when it is stored, and again before every connection.
"""

import functools
from urllib.parse import urlsplit

from django.conf import settings

from config.errors import ServiceError
from config.outbound import OutboundRefused, check_outbound_url, checked_address
from models_registry.engine.backends import Generator, InProcessGenerator, OpenAIServerGenerator
from models_registry.models import ModelVersion

URL_MAX = ModelVersion._meta.get_field("serving_url").max_length
NAME_MAX = ModelVersion._meta.get_field("served_model_name").max_length
KEY_MAX = ModelVersion._meta.get_field("serving_api_key").max_length


# Seconds a model server may take for one reply (a long reply on a busy vLLM fits).
SERVER_TIMEOUT_S = 120.0


def generator_for(version: ModelVersion, *, timeout_s: float | None = None) -> Generator:
    """The backend that generates for ``version``: its inference server when one is
    registered, else the version's files loaded into this process."""
    if version.has_endpoint:
        return OpenAIServerGenerator(
            version.serving_url,
            version.served_model_name,
            version.serving_api_key,
            timeout_s=SERVER_TIMEOUT_S if timeout_s is None else timeout_s,
            connect_check=functools.partial(
                checked_address, allow_private=settings.OUTBOUND_ALLOW_PRIVATE
            ),
        )
    return InProcessGenerator(version.base_path, version.adapter_path or None)


def _checked_url(url) -> str:
    url = (url or "").strip() if isinstance(url, str) else url
    if not isinstance(url, str) or not url:
        raise ServiceError("Give the server's URL, e.g. http://gpu-host:8000/v1.")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ServiceError(
            f"The server URL must start with http:// or https:// and name a host: {url[:100]!r}."
        )
    if len(url) > URL_MAX:
        raise ServiceError(f"The server URL is longer than {URL_MAX} characters.")
    try:
        check_outbound_url(url, allow_private=settings.OUTBOUND_ALLOW_PRIVATE)
    except OutboundRefused as error:
        raise ServiceError(f"This server URL is refused: {error}") from None
    return url.rstrip("/")


def _checked_name(name) -> str:
    name = name.strip() if isinstance(name, str) else ""
    if not name:
        raise ServiceError(
            "Give the served model name (what the server calls this version, "
            "e.g. vllm serve's --served-model-name or the LoRA module's name)."
        )
    if len(name) > NAME_MAX:
        raise ServiceError(f"The served model name is longer than {NAME_MAX} characters.")
    return name


def _checked_key(api_key) -> str:
    if not isinstance(api_key, str):
        raise ServiceError("The API key must be a string.")
    api_key = api_key.strip()
    if len(api_key) > KEY_MAX:
        raise ServiceError(f"The API key is longer than {KEY_MAX} characters.")
    return api_key


def serving_endpoint_set(
    *, version: ModelVersion, url: str, served_model_name: str, api_key: str | None = None
) -> ModelVersion:
    """Generate ``version`` on the OpenAI-compatible server at ``url`` (the API root, up to
    ``/v1``) under ``served_model_name``, sending ``api_key`` as a bearer key: ``None``
    keeps the key already set, ``""`` sends none. Only policies are served this way. Bad
    input raises ``ServiceError`` and stores nothing."""
    if version.kind != ModelVersion.Kind.POLICY:
        raise ServiceError(
            f"{version.name} is a reward model: only policies generate from a server."
        )
    fields = {
        "serving_url": _checked_url(url),
        "served_model_name": _checked_name(served_model_name),
    }
    if api_key is not None:
        fields["serving_api_key"] = _checked_key(api_key)
    ModelVersion.objects.filter(pk=version.pk).update(**fields)
    for field, value in fields.items():
        setattr(version, field, value)
    return version


def serving_endpoint_clear(*, version: ModelVersion) -> ModelVersion:
    """Generate ``version`` in-process from its files again. Safe to repeat."""
    fields = {"serving_url": "", "served_model_name": "", "serving_api_key": ""}
    ModelVersion.objects.filter(pk=version.pk).update(**fields)
    for field, value in fields.items():
        setattr(version, field, value)
    return version


def serving_endpoint_summary(version: ModelVersion) -> dict | None:
    """What pages and API responses show of the endpoint: never the key, only whether one
    is set. ``None`` when the version generates in-process."""
    if not version.has_endpoint:
        return None
    return {
        "url": version.serving_url,
        "served_model_name": version.served_model_name,
        "api_key_set": bool(version.serving_api_key),
    }
