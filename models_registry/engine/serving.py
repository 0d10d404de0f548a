"""In-process generation service: batches concurrent chat requests into shared ``generate`` calls.

Plain Python on torch, transformers and threading (no Django), so it can be tested and
benchmarked alone. The OpenAI-compatible views and the labeling queue submit requests to
``default_service()`` and block on ``GenerationRequest.result()`` or iterate
``GenerationRequest.stream()``.

How a batch forms: one scheduler thread takes the oldest queued request and gathers the
queued requests that may share its ``generate`` call (same model, same sampling settings),
waiting at most ``max_wait_ms`` after the oldest was submitted, or less once
``max_batch_size`` are there. While a batch runs, new requests queue up; the next batch
starts as soon as the running one ends, since its oldest request has waited long enough
by then. A single thread serves every model: two ``generate`` calls at once would only
fight for the same cores or GPU.

Inside a batch, prompts are left-padded and generated together up to the largest
``max_new_tokens``; each row stops at its own limit or at EOS (a per-row stopping
criterion, so the call ends when the last row is done) and its reply is delivered the
moment that row stops, not when the whole batch ends.

Seeding: torch is seeded with the oldest request's ``params.seed`` before each batch
(companions' seeds are not used), folded into torch's range (``ml.torch_seed``), so a
huge seed cannot fail the batch it leads. A greedy reply (``do_sample=False``) does not depend on
its batch companions beyond floating-point noise from padding; a sampled reply does,
since the rows draw from one random stream: the same request can get a different reply
in a different batch even with the same seed.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import torch
from transformers.generation.stopping_criteria import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from models_registry.engine import ml
from models_registry.engine.encoding import left_padded_batch

__all__ = [
    "GenerationCancelled",
    "GenerationRequest",
    "GenerationService",
    "ServedModel",
    "default_service",
]

_END = object()  # ends a request's stream of text deltas


class GenerationCancelled(RuntimeError):
    """The request was cancelled (or the service closed) before its reply was complete."""


@dataclass(frozen=True)
class ServedModel:
    """A model version as the service loads it: ``key`` is the version's name."""

    key: str
    base_path: str
    adapter_path: str | None = None


class GenerationRequest:
    """One submitted chat request; a handle to its reply.

    ``prompt_tokens``, ``batch_size`` (how many requests shared its ``generate`` call) and
    ``queued_seconds`` (from submission to the start of its batch's generation: waiting
    for companions, for the batch before, and for a model's first load) are 0 until its
    batch starts. The reply's ``seconds`` runs from there to this request's last token.
    """

    def __init__(
        self,
        model: ServedModel,
        messages: list[dict],
        params: ml.GenerationParams,
        *,
        stream: bool,
    ) -> None:
        self.model = model
        self.messages = messages
        self.params = params
        self.streaming = stream
        self.submitted_at = time.monotonic()
        self.prompt_tokens = 0
        self.batch_size = 0
        self.queued_seconds = 0.0
        self._future: Future[ml.GeneratedReply] = Future()
        self._deltas: queue.SimpleQueue[Any] | None = queue.SimpleQueue() if stream else None
        self._cancel_reason: BaseException | None = None

    @property
    def batch_key(self) -> tuple:
        """Requests with equal keys may share a ``generate`` call."""
        p = self.params
        if p.do_sample:
            return (self.model, True, p.temperature, p.top_p)
        return (self.model, False)

    @property
    def cancelled(self) -> bool:
        return self._cancel_reason is not None

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: float | None = None) -> ml.GeneratedReply:
        """Block until the reply is complete and return it; re-raise a generation error.

        Raises ``TimeoutError`` when ``timeout`` seconds pass first.
        """
        return self._future.result(timeout)

    def stream(
        self, timeout: float | None = None, *, deadline: float | None = None
    ) -> Iterator[str]:
        """Text deltas as tokens arrive; their concatenation is the reply's text.

        Only for requests submitted with ``stream=True`` (``RuntimeError`` at once
        otherwise); a stream can be iterated once. ``timeout`` bounds the wait for each
        delta, ``deadline`` (a ``time.monotonic()`` value) the whole stream: past either,
        ``TimeoutError``. A generation error is raised after the deltas that came before it.
        """
        if self._deltas is None:
            raise RuntimeError("this request was not submitted with stream=True")
        return self._iterate_deltas(self._deltas, timeout, deadline)

    def _iterate_deltas(
        self, deltas: queue.SimpleQueue[Any], timeout: float | None, deadline: float | None
    ):
        while True:
            wait = timeout
            if deadline is not None:
                left = max(0.0, deadline - time.monotonic())
                wait = left if wait is None else min(wait, left)
            try:
                item = deltas.get(timeout=wait)
            except queue.Empty:
                raise TimeoutError("no new tokens within the timeout") from None
            if item is _END:
                break
            yield item
        self._future.result()  # raises the error that ended the stream, if any

    def cancel(self, reason: str = "request cancelled") -> None:
        """Stop generating for this request (e.g. its client went away).

        A queued request never runs; a running one stops at the next token. Either way
        ``result()`` raises ``GenerationCancelled``. Does nothing once the reply is complete.
        """
        if self._cancel_reason is None:
            self._cancel_reason = GenerationCancelled(reason)

    # Called by the service's thread only.

    def _emit(self, text: str) -> None:
        if self._deltas is not None and text:
            self._deltas.put(text)

    def _complete(self, reply: ml.GeneratedReply) -> None:
        if self._future.done():
            return
        self._future.set_result(reply)
        if self._deltas is not None:
            self._deltas.put(_END)

    def _fail(self, error: BaseException) -> None:
        if self._future.done():
            return
        self._future.set_exception(error)
        if self._deltas is not None:
            self._deltas.put(_END)


class _Row:
    """One request's state inside a running batch."""

    def __init__(
        self, request: GenerationRequest, tokenizer: Any, eos_ids: set[int], started: float
    ) -> None:
        self.request = request
        self.limit = request.params.max_new_tokens
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.started = started
        self.tokens: list[int] = []
        self.done = False
        self.emitted = ""

    def add(self, token: int) -> None:
        if self.done:
            return  # padding that generate() appends after this row stopped
        if self.request.cancelled:
            self.done = True
            self.request._fail(self.request._cancel_reason)  # type: ignore[arg-type]
            return
        self.tokens.append(token)
        finished = token in self.eos_ids
        if finished or len(self.tokens) >= self.limit:
            self.finish(finished=finished)
        elif self.request.streaming:
            self._stream_new_text()

    def _stream_new_text(self) -> None:
        # Decode the whole reply so far and emit what is new, like TextIteratorStreamer: a
        # token can be part of a multi-byte character (decoded as U+FFFD until the rest
        # arrives), so a trailing U+FFFD is held back. The final text is stripped, so
        # leading whitespace is never emitted and trailing whitespace is held until text
        # follows it; that keeps the deltas' concatenation equal to the final text.
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True).lstrip()
        stable = text.rstrip("\ufffd").rstrip()
        if len(stable) > len(self.emitted) and stable.startswith(self.emitted):
            self.request._emit(stable[len(self.emitted) :])
            self.emitted = stable

    def finish(self, *, finished: bool) -> None:
        self.done = True
        if self.request.cancelled:
            self.request._fail(self.request._cancel_reason)  # type: ignore[arg-type]
            return
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True).strip()
        if text.startswith(self.emitted):
            self.request._emit(text[len(self.emitted) :])
        self.request._complete(
            ml.GeneratedReply(
                text=text,
                completion_tokens=len(self.tokens),
                seconds=time.monotonic() - self.started,
                finished=finished,
                token_ids=tuple(self.tokens),
            )
        )


class _BatchStreamer(BaseStreamer):
    """Hands each row of a batched ``generate`` call its new token as it is chosen.

    ``generate`` first puts the (padded) prompt ids, which are skipped, then one tensor of
    shape ``(batch,)`` per decoding step.
    """

    def __init__(self, rows: list[_Row]) -> None:
        self.rows = rows
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        steps = value.reshape(len(self.rows), -1).tolist()
        for row, tokens in zip(self.rows, steps, strict=True):
            for token in tokens:
                row.add(token)

    def end(self) -> None:
        pass


class _RowLimits(StoppingCriteria):
    """Per-row stop: a row is done at its own ``max_new_tokens`` or once cancelled."""

    def __init__(self, rows: list[_Row], prompt_width: int) -> None:
        self.rows = rows
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self.prompt_width
        done = [generated >= row.limit or row.request.cancelled for row in self.rows]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _validate_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    for index, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("role"), str)
            or not isinstance(message.get("content"), str)
        ):
            raise ValueError(f"messages[{index}] must be an object with string role and content")


class GenerationService:
    """Queues chat requests and runs compatible ones together in one ``generate`` call.

    Models load with ``ml.load_policy`` (cached per process) on its device (CUDA when
    present). Requests share a batch only when they use the same model and the same
    sampling settings (``do_sample``, and for sampling ``temperature`` and ``top_p``);
    ``max_new_tokens`` may differ. An error in a batch (loading, generation) fails every
    request of that batch not yet complete; the thread goes on with later requests.
    """

    def __init__(self, *, max_batch_size: int = 16, max_wait_ms: float = 10.0) -> None:
        if not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError("max_batch_size must be an integer >= 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        self.max_batch_size = max_batch_size
        self.max_wait_seconds = max_wait_ms / 1000
        self._pending: list[GenerationRequest] = []
        self._running: list[GenerationRequest] = []
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._serve, name="generation-service", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the scheduler thread is alive."""
        return self._thread.is_alive()

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(
        self,
        model: ServedModel,
        messages: list[dict],
        params: ml.GenerationParams,
        *,
        stream: bool = False,
    ) -> GenerationRequest:
        """Queue one chat request (``[{"role", "content"}, ...]``) and return its handle.

        Raises ``ValueError`` for malformed messages and ``RuntimeError`` once closed.
        """
        if not isinstance(model, ServedModel):
            raise TypeError("model must be a ServedModel")
        if not isinstance(params, ml.GenerationParams):
            raise TypeError("params must be a GenerationParams")
        _validate_messages(messages)
        request = GenerationRequest(model, messages, params, stream=stream)
        with self._cond:
            if self._closed:
                raise RuntimeError("the generation service is closed")
            self._pending.append(request)
            self._cond.notify_all()
        return request

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop the thread: queued requests fail, running ones are cancelled
        (``GenerationCancelled``). Safe to call twice."""
        with self._cond:
            self._closed = True
            pending, self._pending = self._pending, []
            for request in self._running:
                request.cancel("the generation service was closed")
            self._cond.notify_all()
        for request in pending:
            request._fail(GenerationCancelled("the generation service was closed"))
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # --- The scheduler thread ------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                batch = self._take_batch()
                self._running = batch
            try:
                if batch:
                    self._run_batch(batch)
            except BaseException as exc:  # never let the thread die with requests waiting
                for request in batch:
                    request._fail(exc)
            finally:
                with self._cond:
                    self._running = []

    def _take_batch(self) -> list[GenerationRequest]:
        """Called with the lock held: the oldest request and up to ``max_batch_size - 1``
        compatible ones, after waiting until the oldest has waited ``max_wait_ms``."""
        for request in [r for r in self._pending if r.cancelled]:
            self._pending.remove(request)
            request._fail(request._cancel_reason)  # type: ignore[arg-type]
        if not self._pending:
            return []
        head = self._pending[0]
        deadline = head.submitted_at + self.max_wait_seconds
        while True:
            batch = [r for r in self._pending if r.batch_key == head.batch_key]
            batch = batch[: self.max_batch_size]
            remaining = deadline - time.monotonic()
            if len(batch) >= self.max_batch_size or remaining <= 0 or self._closed:
                break
            self._cond.wait(remaining)
        for request in batch:
            self._pending.remove(request)
        return batch

    def _run_batch(self, batch: list[GenerationRequest]) -> None:
        head = batch[0]
        try:
            model, tokenizer = ml.load_policy(head.model.base_path, head.model.adapter_path)
        except Exception as exc:
            for request in batch:
                request._fail(exc)
            return

        # A request whose messages the chat template rejects fails alone.
        requests, texts = [], []
        for request in batch:
            try:
                texts.append(
                    tokenizer.apply_chat_template(
                        request.messages, tokenize=False, add_generation_prompt=True
                    )
                )
            except Exception as exc:
                request._fail(exc)
            else:
                requests.append(request)
        if not requests:
            return

        rows: list[_Row] = []
        try:
            device = next(model.parameters()).device
            encoded = left_padded_batch(tokenizer, texts, device)
            lengths = encoded["attention_mask"].sum(dim=1).tolist()
            eos_ids = ml._eos_ids(model, tokenizer)
            started = time.monotonic()
            for request, length in zip(requests, lengths, strict=True):
                request.prompt_tokens = int(length)
                request.batch_size = len(requests)
                request.queued_seconds = started - request.submitted_at
                rows.append(_Row(request, tokenizer, eos_ids, started))

            params = head.params
            kwargs: dict[str, Any] = {
                "max_new_tokens": max(row.limit for row in rows),
                "do_sample": params.do_sample,
                "pad_token_id": tokenizer.pad_token_id,
                "eos_token_id": sorted(eos_ids) or None,
                "streamer": _BatchStreamer(rows),
                "stopping_criteria": StoppingCriteriaList(
                    [_RowLimits(rows, encoded["input_ids"].shape[1])]
                ),
            }
            if params.do_sample:
                kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
            else:
                # Override sampling defaults a model's generation_config may carry.
                kwargs.update(temperature=None, top_p=None, top_k=None)
            # Seeded under the base's lock: another thread's generation on the same base
            # could otherwise reseed torch between the seed and this batch.
            with torch.inference_mode(), ml.activated_policy(model) as module:
                torch.manual_seed(ml.torch_seed(params.seed))
                if torch.cuda.is_available():
                    torch.cuda.manual_seed_all(ml.torch_seed(params.seed))
                module.generate(**encoded, **kwargs)
        except Exception as exc:
            for request in requests:
                request._fail(exc)
            return
        # Rows still open here ran out of steps without their limit being seen (a model
        # config that caps the length): complete them with what they have.
        for row in rows:
            if not row.done:
                row.finish(finished=False)


_default_service: GenerationService | None = None
_default_lock = threading.Lock()


def default_service() -> GenerationService:
    """The process-wide service, created on first use (a new one if it was closed)."""
    global _default_service
    with _default_lock:
        if _default_service is None or _default_service.closed:
            _default_service = GenerationService()
        return _default_service
