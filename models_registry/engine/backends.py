"""One generation path, two backends: every caller asks a ``Generator`` for replies and does
not care where the weights live.

- ``InProcessGenerator`` loads the version's files into this process with transformers
  (``ml.load_policy`` + ``ml.generate_replies``, cached per process): the default.
- ``OpenAIServerGenerator`` sends each conversation to an OpenAI-compatible inference server
  (vLLM, TGI, SGLang, or this product's own ``/v1``) at ``{url}/chat/completions``, a few at
  a time. Transport, auth and timeouts are the ``openai`` client's; the answer's shape is
  checked here, because servers that are not OpenAI do answer garbage, and every failure
  becomes one ``GenerationBackendError`` that names the server and the cause: an HTTP
  status or the class of the error, never the body the server answered (it ends in job
  logs, and the server may be one the user should not read from).
  With ``connect_check`` (the Django side passes ``config.outbound.checked_address``) every
  connection goes to the address that check returns for the host, right before connecting,
  and redirects are not followed.

Plain Python: no Django (an import-linter contract holds it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

from models_registry.engine import ml

# (host, port) -> the address to connect to; raises ValueError to refuse the host.
ConnectCheck = Callable[[str, int], str]


class GenerationBackendError(RuntimeError):
    """A generation backend could not produce a reply: the message says which server (or
    which files) and why."""


@runtime_checkable
class Generator(Protocol):
    """Where replies come from. ``generate`` returns one reply per conversation, in order;
    ``prepare`` makes the backend ready (loads weights) so a caller can time it apart."""

    def prepare(self) -> None: ...

    def generate(
        self,
        conversations: list[list[dict[str, str]]],
        params: ml.GenerationParams,
        *,
        batch_size: int = 8,
    ) -> list[ml.GeneratedReply]: ...


class InProcessGenerator:
    """The version's files, loaded into this process (cached: see ``ml.load_policy``)."""

    def __init__(self, base_path: str, adapter_path: str | None = None) -> None:
        self.base_path = str(base_path)
        self.adapter_path = str(adapter_path) if adapter_path else None

    def __repr__(self) -> str:
        return f"InProcessGenerator({self.base_path!r}, adapter_path={self.adapter_path!r})"

    def load(self) -> tuple[Any, Any]:
        """``(model, tokenizer)``, for callers that also need the logits."""
        return ml.load_policy(self.base_path, self.adapter_path)

    def prepare(self) -> None:
        self.load()

    def generate(
        self,
        conversations: list[list[dict[str, str]]],
        params: ml.GenerationParams,
        *,
        batch_size: int = 8,
    ) -> list[ml.GeneratedReply]:
        model, tokenizer = self.load()
        return ml.generate_replies(model, tokenizer, conversations, params, batch_size)


def _cause_of(error: BaseException) -> str:
    """What a person may read of a connection failure: a refusal by ``connect_check`` (its
    own words), else the class of the innermost error and the system's words for an errno;
    never text from the other side."""
    cause: BaseException = error
    while cause.__cause__ is not None or cause.__context__ is not None:
        inner = cause.__cause__ or cause.__context__
        if getattr(inner, "outbound_refused", False):
            return str(inner)  # the outbound check's refusal, written to be shown
        cause = inner
    strerror = getattr(cause, "strerror", None)
    return f"{type(cause).__name__}: {strerror}" if strerror else type(cause).__name__


class OpenAIServerGenerator:
    """An OpenAI-compatible server that serves one model under ``served_model_name``.

    ``url`` is the API root (``http://host:8000/v1``). Up to ``batch_size`` conversations
    are in flight at once (the server batches them itself). Greedy params
    (``do_sample=False``) are sent as ``temperature=0``; conversation ``i`` gets seed
    ``params.seed + i`` so several samples of one prompt differ and a rerun repeats them.
    No retries: a failure is reported at once as ``GenerationBackendError``.
    """

    def __init__(
        self,
        url: str,
        served_model_name: str,
        api_key: str = "",
        timeout_s: float = 120.0,
        *,
        connect_check: ConnectCheck | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("The server URL must start with http:// or https://")
        if not served_model_name:
            raise ValueError("The served model name is required")
        self.url = url.rstrip("/")
        self.served_model_name = served_model_name
        self.timeout_s = float(timeout_s)
        self._api_key = api_key or ""
        self._connect_check = connect_check
        self._client: Any = None

    def __repr__(self) -> str:  # the key stays out
        return f"OpenAIServerGenerator({self.url!r}, {self.served_model_name!r})"

    def prepare(self) -> None:
        """Nothing to load here: the server holds the weights."""

    def _openai(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.OpenAI(
                base_url=self.url,
                # vLLM's convention for "no key": a server started without --api-key ignores it.
                api_key=self._api_key or "EMPTY",
                timeout=self.timeout_s,
                max_retries=0,
                http_client=self._checked_http_client(),
            )
        return self._client

    def _checked_http_client(self) -> Any:
        """``None`` (the openai client's own) without a ``connect_check``; else an httpx client
        that connects only where the check says, follows no redirect (the openai client's
        own follows them) and takes no proxy from the environment (which would connect
        elsewhere than the checked address)."""
        if self._connect_check is None:
            return None
        import httpcore2
        import httpx2

        check = self._connect_check

        class CheckedBackend(httpcore2.SyncBackend):
            def connect_tcp(self, host, port, *args, **kwargs):
                try:
                    address = check(host, port)
                except ValueError as error:
                    refused = httpcore2.ConnectError(str(error))
                    refused.outbound_refused = True  # its message is written to be shown
                    raise refused from None
                return super().connect_tcp(address, port, *args, **kwargs)

        transport = httpx2.HTTPTransport()
        # httpx has no public hook for the network backend of its pool; fail loudly if the
        # private attribute goes away rather than connect unchecked.
        if not isinstance(
            getattr(transport._pool, "_network_backend", None), httpcore2.SyncBackend
        ):
            raise RuntimeError("httpx's connection pool changed: the outbound check needs updating")
        transport._pool._network_backend = CheckedBackend()
        return httpx2.Client(
            transport=transport, follow_redirects=False, trust_env=False, timeout=self.timeout_s
        )

    def _fail(self, cause: str) -> GenerationBackendError:
        if self._api_key:
            cause = cause.replace(self._api_key, "***")
        return GenerationBackendError(f"model server {self.url} {cause}")

    def _request(self, conversation: list[dict[str, str]], params: ml.GenerationParams, seed: int):
        import openai

        sample = params.do_sample
        try:
            return self._openai().chat.completions.with_raw_response.create(
                model=self.served_model_name,
                messages=conversation,
                max_tokens=params.max_new_tokens,
                temperature=params.temperature if sample else 0.0,
                top_p=params.top_p if sample else 1.0,
                seed=seed,
            )
        except openai.APITimeoutError:
            raise self._fail(f"did not answer within {self.timeout_s:g} s (timeout)") from None
        except openai.APIConnectionError as error:
            raise self._fail(f"could not be reached ({_cause_of(error)})") from None
        except openai.APIStatusError as error:
            status = error.status_code
            hint = " (a redirect, not followed)" if 300 <= status < 400 else ""
            raise self._fail(f"answered HTTP {status}{hint}") from None

    def _reply(self, raw: Any, seconds: float) -> ml.GeneratedReply:
        body = raw.text
        try:
            data = json.loads(body)
        except ValueError:
            raise self._fail("answered garbage (not JSON)") from None
        try:
            choice = data["choices"][0]
            content = choice["message"]["content"]
            if not isinstance(content, str):
                raise TypeError(type(content).__name__)
        except (KeyError, IndexError, TypeError):
            raise self._fail("answered garbage (no choices[0].message.content)") from None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        tokens = usage.get("completion_tokens")
        return ml.GeneratedReply(
            text=content.strip(),
            completion_tokens=tokens if isinstance(tokens, int) else 0,
            seconds=seconds,
            finished=choice.get("finish_reason") != "length",
        )

    def _generate_one(
        self, conversation: list[dict[str, str]], params: ml.GenerationParams, seed: int
    ) -> ml.GeneratedReply:
        started = time.perf_counter()
        raw = self._request(conversation, params, seed)
        return self._reply(raw, time.perf_counter() - started)

    def generate(
        self,
        conversations: list[list[dict[str, str]]],
        params: ml.GenerationParams,
        *,
        batch_size: int = 8,
    ) -> list[ml.GeneratedReply]:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not conversations:
            return []
        self._openai()  # one client, made before the threads share it
        workers = min(batch_size, len(conversations))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="model-server")
        try:
            futures = [
                pool.submit(self._generate_one, conversation, params, params.seed + index)
                for index, conversation in enumerate(conversations)
            ]
            return [future.result() for future in futures]
        finally:
            # After a failure the conversations not yet sent are not sent.
            pool.shutdown(wait=True, cancel_futures=True)
