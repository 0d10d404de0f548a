"""Where an AI judge's words come from: a local model from the registry (transformers), or any
OpenAI-compatible ``/chat/completions`` endpoint. Plain Python: no Django here.

Both backends answer the same two questions (``JudgeBackend``): a completion for a list of chat
messages, and the probability of each choice label (``"A"``, ``"B"``) as the next token after
the messages, renormalised over the choices, or ``None`` when the backend gives no log-probs.

Errors are ``BackendError``: ``retryable`` for what may pass (timeouts, connection errors,
5xx); not for what will not (4xx, bodies that cannot be parsed). An endpoint's API key never
appears in an error message, a log line or a ``repr``, and neither does anything the
endpoint answered beyond its HTTP status.

A remote endpoint is called at a public address only, unless ``allow_private`` (the setting
``OUTBOUND_ALLOW_PRIVATE``): the host is resolved and checked right before each connection
(``config.outbound``), and the connection goes to the address that was checked (TLS still
verifies the certificate against the host's name), so a name that changes its address
between the check and the connection cannot reach a private one. Redirects are not
followed.
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import math
import socket
import time
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from config.outbound import HostNotResolved, OutboundRefused, checked_address, url_host_port

logger = logging.getLogger(__name__)


class BackendError(Exception):
    """A model request that failed. ``retryable``: a later try may succeed (timeouts,
    connection errors, 5xx); otherwise retrying cannot help (4xx, garbage bodies)."""

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.message = message
        self.retryable = retryable


@runtime_checkable
class JudgeBackend(Protocol):
    """What an AI judge runs on.

    ``logprobs_supported`` is optional: ``False`` once a backend knows it has no log-probs
    (callers may then skip ``choice_probabilities`` and its request), ``True`` when it always
    has them, ``None`` while unknown.
    """

    def complete(
        self, messages: list[dict], *, max_tokens: int = 256, temperature: float = 0.0
    ) -> str: ...

    def choice_probabilities(
        self, messages: list[dict], choices: list[str]
    ) -> dict[str, float] | None: ...


def _check_choices(choices: list[str]) -> None:
    if len(choices) < 2 or len(set(choices)) != len(choices) or not all(choices):
        raise ValueError("choices must be at least two distinct non-empty labels")


def _renormalise(probabilities: dict[str, float]) -> dict[str, float] | None:
    total = sum(probabilities.values())
    if not total > 0 or not math.isfinite(total):
        return None
    return {label: value / total for label, value in probabilities.items()}


# --- Local: a registry model on this worker ------------------------------------------------


class LocalBackend:
    """A policy from the registry, through the registry's one generation path
    (``models_registry.engine.backends``): by default its files loaded into this worker
    (``InProcessGenerator``, cached per process); ``generator`` may instead be the version's
    inference server (``OpenAIServerGenerator``, see ``models_registry.endpoints.generator_for``).
    Completions are greedy at ``temperature=0`` and sampled above it, the n-th call with seed
    ``seed + n`` (so repeated requests differ, and a rerun repeats them); choice
    probabilities come from one forward pass over the chat-templated messages with the
    generation prompt, in-process only (a server-backed judge has none: ``None``, and the
    verdict is read from the completion)."""

    def __init__(
        self,
        base_path: str | None = None,
        adapter_path: str | None = None,
        *,
        seed: int = 0,
        generator: Any = None,
    ):
        from models_registry.engine.backends import InProcessGenerator

        if generator is None:
            if not base_path:
                raise ValueError("Give the model's base_path or a generator")
            generator = InProcessGenerator(str(base_path), adapter_path)
        self.generator = generator
        self._in_process = isinstance(generator, InProcessGenerator)
        self.logprobs_supported = self._in_process
        self._loaded: tuple[Any, Any] | None = None
        self._seeds = itertools.count(seed)

    @property
    def base_path(self) -> str | None:
        return getattr(self.generator, "base_path", None)

    @property
    def adapter_path(self) -> str | None:
        return getattr(self.generator, "adapter_path", None)

    def __repr__(self) -> str:
        return f"LocalBackend({self.generator!r})"

    def _model(self) -> tuple[Any, Any]:
        if not self._in_process:
            raise BackendError(f"{self.generator!r} has no weights in this process.")
        if self._loaded is None:
            try:
                self._loaded = self.generator.load()
            except Exception as error:  # noqa: BLE001 - any loading failure is the same to us
                raise BackendError(
                    f"The judge model could not be loaded ({type(error).__name__}: {error})."
                ) from error
        return self._loaded

    def _prompt_text(self, messages: list[dict]) -> str:
        _, tokenizer = self._model()
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def complete(
        self, messages: list[dict], *, max_tokens: int = 256, temperature: float = 0.0
    ) -> str:
        from models_registry.engine import ml
        from models_registry.engine.backends import GenerationBackendError

        if self._in_process:
            self._model()  # a loading failure reads as the judge model's
        sample = temperature > 0
        params = ml.GenerationParams(
            max_new_tokens=max_tokens,
            temperature=float(temperature) if sample else 1.0,
            top_p=1.0,
            do_sample=sample,
            seed=next(self._seeds),
        )
        try:
            (reply,) = self.generator.generate([messages], params, batch_size=1)
        except GenerationBackendError as error:
            raise BackendError(str(error)) from None
        return reply.text

    def choice_token_ids(self, messages: list[dict], choices: list[str]) -> dict[str, int]:
        """The token id each label would start with if the model wrote it right after the
        generation prompt. The label is tokenised in place (prompt + label), so the tokenizer
        itself decides between "A" and " A": after the template's newline it is "A"."""
        _check_choices(choices)
        _, tokenizer = self._model()
        text = self._prompt_text(messages)
        prefix = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids: dict[str, int] = {}
        for label in choices:
            full = tokenizer(text + label, add_special_tokens=False)["input_ids"]
            if len(full) > len(prefix) and full[: len(prefix)] == prefix:
                ids[label] = full[len(prefix)]
            else:  # the label merged with the prompt's last token: take it on its own
                ids[label] = tokenizer(label, add_special_tokens=False)["input_ids"][0]
        if len(set(ids.values())) != len(ids):
            raise BackendError(f"The labels {choices} start with the same token for this model.")
        return ids

    def choice_probabilities(
        self, messages: list[dict], choices: list[str]
    ) -> dict[str, float] | None:
        import torch

        if not self._in_process:
            _check_choices(choices)
            return None
        model, tokenizer = self._model()
        token_ids = self.choice_token_ids(messages, choices)
        text = self._prompt_text(messages)
        device = next(model.parameters()).device
        encoded = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(device)
        with torch.inference_mode():
            logits = model(**encoded).logits[0, -1].float()
        probabilities = torch.softmax(logits, dim=-1)
        return _renormalise({label: float(probabilities[i]) for label, i in token_ids.items()})


# --- Remote: an OpenAI-compatible endpoint -------------------------------------------------


def _error_name(error: BaseException) -> str:
    """What a person may read of a connection error: its class and the system's own words
    for an errno, never text the other side sent."""
    strerror = getattr(error, "strerror", None)
    return f"{type(error).__name__}: {strerror}" if strerror else type(error).__name__


class _CheckedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to the address the host resolves to now, checked by
    ``config.outbound`` first (no second lookup between the check and the connect)."""

    allow_private = False  # set per connection

    def connect(self) -> None:
        address = checked_address(self.host, self.port, allow_private=self.allow_private)
        self.sock = socket.create_connection((address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _CheckedHTTPSConnection(http.client.HTTPSConnection, _CheckedHTTPConnection):
    """HTTPS over ``_CheckedHTTPConnection``'s socket: ``HTTPSConnection.connect`` wraps the
    socket that the checked ``connect`` opened, with the host's name for SNI and the
    certificate check."""


class RemoteBackend:
    """An OpenAI-compatible chat endpoint (``url`` is the API root, e.g. ``https://host/v1``;
    a URL already ending in ``/chat/completions`` is used as is).

    Each request has ``timeout`` seconds; retryable failures (timeouts, connection errors,
    5xx) are tried again up to ``max_retries`` times after ``backoff * 2**attempt`` seconds.
    ``choice_probabilities`` asks for ``logprobs`` and the top 5 alternatives of the first
    token; an endpoint that answers without them (this product's own ``/v1`` does) makes it
    return ``None``, and from then on it returns ``None`` without a request
    (``logprobs_supported`` becomes ``False``)."""

    def __init__(
        self,
        url: str,
        model: str,
        api_key: str = "",
        timeout: float = 30,
        max_retries: int = 3,
        backoff: float = 1.0,
        *,
        allow_private: bool = False,
    ):
        if not url or not url.startswith(("http://", "https://")):
            raise ValueError("The endpoint URL must start with http:// or https://")
        base = url.rstrip("/")
        self.endpoint = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.model = model
        self._api_key = api_key or ""
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.allow_private = bool(allow_private)
        self.logprobs_supported: bool | None = None
        self.requests_sent = 0  # HTTP requests, retries included

    def __repr__(self) -> str:  # the key stays out
        return f"RemoteBackend({self.endpoint!r}, model={self.model!r})"

    def _connection(self) -> http.client.HTTPConnection:
        parts = urlsplit(self.endpoint)
        host, port = url_host_port(self.endpoint)
        kind = _CheckedHTTPSConnection if parts.scheme == "https" else _CheckedHTTPConnection
        connection = kind(host, port, timeout=self.timeout)
        connection.allow_private = self.allow_private
        return connection

    def _post_once(self, payload: dict) -> dict:
        """One POST. Nothing of the answer's body goes into an error: the endpoint may be
        anything, and whatever it says would end in a job's log (only the HTTP status, or
        the class of the connection error, does). Redirects are not followed."""
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        parts = urlsplit(self.endpoint)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.requests_sent += 1
        connection = self._connection()
        try:
            connection.request("POST", path, body=body, headers=headers)
            reply = connection.getresponse()
            status, raw = reply.status, reply.read()
        except HostNotResolved as error:
            raise BackendError(str(error), retryable=True) from None
        except OutboundRefused as error:
            raise BackendError(str(error)) from None
        except TimeoutError:
            raise BackendError(
                f"The endpoint did not answer within {self.timeout:g} s (timeout).", retryable=True
            ) from None
        except (http.client.HTTPException, ConnectionError, OSError) as error:
            raise BackendError(
                f"The endpoint could not be reached ({_error_name(error)}).", retryable=True
            ) from None
        finally:
            connection.close()
        if not 200 <= status < 300:
            if 300 <= status < 400:
                raise BackendError(
                    f"The endpoint answered HTTP {status} (a redirect, not followed): give "
                    "the endpoint's final URL."
                )
            raise BackendError(
                f"The endpoint answered HTTP {status}.", retryable=status >= 500 or status == 429
            )
        try:
            data = json.loads(raw)
        except ValueError:
            raise BackendError("The endpoint's answer is not JSON.") from None
        if not isinstance(data, dict):
            raise BackendError("The endpoint's answer is not a JSON object.")
        return data

    def _post(self, payload: dict) -> dict:
        attempt = 0
        while True:
            try:
                return self._post_once(payload)
            except BackendError as error:
                if not error.retryable or attempt >= self.max_retries:
                    if attempt:
                        error.message = f"{error.message} (after {attempt + 1} tries)"
                        error.args = (error.message,)
                    raise
                delay = self.backoff * (2**attempt)
                logger.info("Judge endpoint failed (%s); retrying in %.2f s", error.message, delay)
                time.sleep(delay)
                attempt += 1

    @staticmethod
    def _first_choice(data: dict) -> dict:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise BackendError("The endpoint's answer has no choices.")
        return choices[0]

    def complete(
        self, messages: list[dict], *, max_tokens: int = 256, temperature: float = 0.0
    ) -> str:
        data = self._post(
            {
                "model": self.model,
                "messages": messages,
                "max_tokens": int(max_tokens),
                "temperature": float(temperature),
            }
        )
        message = self._first_choice(data).get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise BackendError("The endpoint's answer has no message content.")
        return content

    def choice_probabilities(
        self, messages: list[dict], choices: list[str]
    ) -> dict[str, float] | None:
        _check_choices(choices)
        if self.logprobs_supported is False:
            return None
        data = self._post(
            {
                "model": self.model,
                "messages": messages,
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": True,
                "top_logprobs": 5,
            }
        )
        top = _first_token_top_logprobs(self._first_choice(data))
        if top is None:
            self.logprobs_supported = False
            return None
        self.logprobs_supported = True
        mass = dict.fromkeys(choices, 0.0)
        for entry in top:
            token = entry.get("token") if isinstance(entry, dict) else None
            logprob = entry.get("logprob") if isinstance(entry, dict) else None
            if not isinstance(token, str) or not isinstance(logprob, int | float):
                continue
            label = token.strip().strip("()").strip()
            if label in mass:  # "A" and " A" both count for A
                mass[label] += math.exp(logprob)
        # Neither label among the top alternatives: no reading, the caller parses a verdict.
        return _renormalise(mass)


def _first_token_top_logprobs(choice: dict) -> list[dict] | None:
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return None
    content = logprobs.get("content")
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        return None
    top = content[0].get("top_logprobs")
    if not isinstance(top, list) or not top:
        return None
    return top
