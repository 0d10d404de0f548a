"""OpenAI-compatible API over the registry: ``GET /v1/models``, ``POST /v1/chat/completions``
(plain and streamed as server-sent events) and ``POST /v1/rewards`` for reward models.

Any OpenAI client talks to it with ``base_url=<site>/v1`` and an API key from the
*API key* page (sent as ``Authorization: Bearer <key>``). Errors come in OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, so clients raise their usual
exceptions. Generation runs in this process through ``serving.default_service()``,
which loads each version once and batches concurrent requests; a version registered on
an inference server (``models_registry/endpoints.py``) is forwarded to that server.

Limits (issue 14; settings in config/env.py): a prompt longer than the model's context
(less ``max_tokens``) or ``V1_MAX_PROMPT_TOKENS`` is refused with 400
``context_length_exceeded``, after a cheap character cap (``CHARS_PER_TOKEN`` characters
per allowed token) that runs before any tokenizer; every reply ends within
``V1_REPLY_TIMEOUT`` seconds, which a system check keeps below the web server's
``WEB_TIMEOUT`` (504 ``timeout`` in OpenAI's shape, and the generation is cancelled);
generation and scoring pass an admission gate (``engine/admission.py``: at most
``V1_MAX_CONCURRENT`` requests at once per process, ``V1_MAX_QUEUED`` waiting, 429
``server_busy`` with Retry-After beyond that). A streamed reply whose client goes away is
cancelled when the web server closes the response. A plain (non-streamed) reply cannot
see its client go under WSGI: it is bounded by the reply timeout instead.

Reference: https://platform.openai.com/docs/api-reference/chat
"""

import json
import math
import secrets
import threading
import time
import uuid

from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import exceptions, serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.projects.permissions import projects_visible_to
from config.api_schema import OBJECT
from config.throttles import V1KeyThrottle, V1UserThrottle
from models_registry import selectors, services
from models_registry.authentication import BearerApiKeyAuthentication
from models_registry.endpoints import generator_for
from models_registry.engine import ml
from models_registry.engine.admission import AdmissionGate, GateFull, GateTimeout
from models_registry.engine.backends import GenerationBackendError
from models_registry.engine.serving import GenerationCancelled, ServedModel, default_service
from models_registry.models import ApiKey, ModelVersion

MAX_TOKENS_LIMIT = 1024
DEFAULT_MAX_TOKENS = 256
MAX_CHOICES = 4
MAX_MESSAGE_CHARS = 32_000
MAX_REWARD_INPUTS = 64
MAX_TOP_LOGPROBS = 20
# OpenAI's seeds are int64.
MAX_SEED = 2**63 - 1
# The cheap cap before tokenizing: a prompt of more characters than this many per allowed
# token is refused unread (English runs at about 4 characters per token).
CHARS_PER_TOKEN = 6
# What a refused (429) or queue-timed-out (503) client is told to wait.
RETRY_AFTER_SECONDS = 5


class BearerTokenAuthentication(BearerApiKeyAuthentication):
    """A hashed, workspace-scoped API key (``models_registry/authentication.py``) sent as
    OpenAI's ``Authorization: Bearer <key>`` (``Token <key>`` works too)."""


class ModelNotFound(exceptions.NotFound):
    default_code = "model_not_found"


class ModelServerFailed(exceptions.APIException):
    """The inference server a version is registered on failed (502, like a gateway)."""

    status_code = 502
    default_code = "model_server_error"


class OpenAIError(exceptions.APIException):
    """An error whose OpenAI ``type``, ``param`` and ``code`` are set here, not derived."""

    error_type = "server_error"
    retry_after: int | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ContextLengthExceeded(OpenAIError):
    status_code = 400
    default_code = "context_length_exceeded"
    error_type = "invalid_request_error"


class ServerBusy(OpenAIError):
    """Every generation place of this process is taken and the queue is full (429)."""

    status_code = 429
    default_code = "server_busy"
    error_type = "rate_limit_error"
    retry_after = RETRY_AFTER_SECONDS


class QueueTimedOut(ServerBusy):
    """Waited in the queue for the whole reply timeout (503)."""

    status_code = 503
    error_type = "server_error"


class ReplyTimedOut(OpenAIError):
    """The reply did not come within ``V1_REPLY_TIMEOUT`` (504); its generation stopped."""

    status_code = 504
    default_code = "timeout"


ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "requests",  # what OpenAI answers on a request-rate limit (code rate_limit_exceeded)
}


def _message_of(detail) -> tuple[str, str | None]:
    """A readable message and the offending parameter from DRF's error detail."""
    if isinstance(detail, dict):
        field, problems = next(iter(detail.items()))
        message, _ = _message_of(problems)
        return (message if field == "non_field_errors" else f"{field}: {message}"), field
    if isinstance(detail, list) and detail:
        return _message_of(detail[0])
    return str(detail), None


def openai_exception_handler(exc, context):
    if not isinstance(exc, exceptions.APIException):
        return None
    message, param = _message_of(exc.detail)
    code = exc.get_codes() if isinstance(exc.get_codes(), str) else None
    body = {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(exc.status_code, "server_error"),
            "param": param,
            "code": code,
        }
    }
    headers = {}
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        headers["WWW-Authenticate"] = 'Bearer realm="api"'
    if isinstance(exc, exceptions.Throttled):
        body["error"]["code"] = "rate_limit_exceeded"
        if exc.wait is not None:
            headers["Retry-After"] = str(math.ceil(exc.wait))
    if isinstance(exc, OpenAIError):
        body["error"].update(type=exc.error_type, param=exc.param, code=exc.default_code)
        if exc.retry_after is not None:
            headers["Retry-After"] = str(exc.retry_after)
    return Response(body, status=exc.status_code, headers=headers)


class BelongsToAProject(BasePermission):
    message = "Your account belongs to no project: ask an admin to add you to one."

    def has_permission(self, request, view):
        user = request.user
        return bool(user and user.is_authenticated) and projects_visible_to(user).exists()


class OpenAIApi(APIView):
    # Bearer first, so an unauthenticated call gets 401 (what OpenAI clients expect).
    authentication_classes = [BearerTokenAuthentication, SessionAuthentication]
    permission_classes = [BelongsToAProject]
    throttle_classes = [V1KeyThrottle, V1UserThrottle]

    def get_exception_handler(self):
        return openai_exception_handler


# --- input ----------------------------------------------------------------------------


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "maxLength": MAX_MESSAGE_CHARS},
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"type": {"enum": ["text"]}, "text": {"type": "string"}},
                    "required": ["type"],
                },
            },
        ]
    }
)
class MessageContentField(serializers.JSONField):
    """A message's content: a string, or OpenAI's list of text parts (the schema says so)."""


class MessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "user", "assistant"])
    content = MessageContentField()

    def validate_content(self, content):
        """A string, or OpenAI's list of text parts (joined)."""
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise serializers.ValidationError("only text content parts are supported")
            content = "".join(str(part.get("text", "")) for part in content)
        if not isinstance(content, str):
            raise serializers.ValidationError("must be a string or a list of text parts")
        if len(content) > MAX_MESSAGE_CHARS:
            raise serializers.ValidationError(f"at most {MAX_MESSAGE_CHARS} characters")
        return content


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 4},
        ],
        "nullable": True,
    }
)
class StopField(serializers.JSONField):
    def to_internal_value(self, data):
        stops = [data] if isinstance(data, str) else data
        if data is None:
            return []
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise serializers.ValidationError("must be a string or a list of strings")
        if len(stops) > 4:
            raise serializers.ValidationError("at most 4 stop sequences")
        return stops


class ChatCompletionSerializer(serializers.Serializer):
    model = serializers.CharField()
    messages = MessageSerializer(many=True, allow_empty=False)
    temperature = serializers.FloatField(min_value=0.0, max_value=2.0, default=1.0)
    top_p = serializers.FloatField(min_value=0.0, max_value=1.0, default=1.0)
    max_tokens = serializers.IntegerField(min_value=1, max_value=MAX_TOKENS_LIMIT, required=False)
    max_completion_tokens = serializers.IntegerField(
        min_value=1, max_value=MAX_TOKENS_LIMIT, required=False
    )
    n = serializers.IntegerField(min_value=1, max_value=MAX_CHOICES, default=1)
    seed = serializers.IntegerField(min_value=0, max_value=MAX_SEED, required=False)
    stop = StopField(required=False, default=list)
    stream = serializers.BooleanField(default=False)
    stream_options = serializers.DictField(required=False, default=dict)
    logprobs = serializers.BooleanField(default=False)
    top_logprobs = serializers.IntegerField(min_value=0, max_value=MAX_TOP_LOGPROBS, default=0)

    def validate_top_p(self, top_p):
        if top_p <= 0:
            raise serializers.ValidationError("must be greater than 0")
        return top_p

    def validate(self, data):
        if data["top_logprobs"] and not data["logprobs"]:
            raise serializers.ValidationError({"top_logprobs": "needs logprobs: true"})
        if data["logprobs"] and data["stream"]:
            raise serializers.ValidationError(
                {"logprobs": "log-probabilities are not streamed: ask without stream"}
            )
        if data["messages"][-1]["role"] == "assistant":
            raise serializers.ValidationError(
                {"messages": "the last message must come from the user or the system"}
            )
        return data

    @property
    def requested_max_tokens(self) -> int | None:
        data = self.validated_data
        return data.get("max_completion_tokens") or data.get("max_tokens")

    def generation_params(
        self, choice_index: int, *, max_new_tokens: int | None = None
    ) -> ml.GenerationParams:
        data = self.validated_data
        seed = data.get("seed", self.context["default_seed"])
        greedy = data["temperature"] == 0
        return ml.GenerationParams(
            max_new_tokens=max_new_tokens or self.requested_max_tokens or DEFAULT_MAX_TOKENS,
            temperature=data["temperature"] or 1.0,
            top_p=data["top_p"],
            do_sample=not greedy,
            # Choice i is seeded seed + i, kept within int64 for inference servers.
            seed=(seed + choice_index) % (MAX_SEED + 1),
        )


def _servable_rows(request):
    """What this request may use: an API key's workspace's models, or (a browser session)
    those of any of the user's workspaces; never one retired there."""
    key = request.auth if isinstance(request.auth, ApiKey) else None
    return selectors.servable_versions_for_request(user=request.user, api_key=key)


def _servable(name: str, request) -> ModelVersion:
    among = _servable_rows(request)
    version = selectors.version_by_reference(name, among=among)
    if version is None:
        raise ModelNotFound(f"The model '{name}' does not exist or is retired.")
    return version


def _policy(name: str, request) -> ModelVersion:
    version = _servable(name, request)
    if version.kind != ModelVersion.Kind.POLICY:
        raise exceptions.ValidationError(
            {"model": f"'{name}' is a reward model: score replies with POST /v1/rewards."}
        )
    return version


def _served(version: ModelVersion) -> ServedModel:
    return ServedModel(
        key=version.model_id, base_path=version.base_path, adapter_path=version.adapter_path or None
    )


# --- limits ---------------------------------------------------------------------------

_gate: AdmissionGate | None = None
_gate_lock = threading.Lock()


def generation_gate() -> AdmissionGate:
    """This process's gate for /v1 generation and scoring (``V1_MAX_CONCURRENT`` at once,
    ``V1_MAX_QUEUED`` waiting); a new one when the settings changed."""
    global _gate
    limits = (settings.V1_MAX_CONCURRENT, settings.V1_MAX_QUEUED)
    with _gate_lock:
        if _gate is None or (_gate.max_running, _gate.max_waiting) != limits:
            _gate = AdmissionGate(max_running=limits[0], max_waiting=limits[1])
        return _gate


class _Place:
    """A place taken in the gate, given back once, whoever gives it back first."""

    def __init__(self, deadline: float) -> None:
        gate = generation_gate()
        try:
            gate.acquire(timeout=deadline - time.monotonic())
        except GateFull:
            raise ServerBusy(
                "The server is busy generating other replies and its queue is full: "
                f"retry after {RETRY_AFTER_SECONDS} seconds."
            ) from None
        except GateTimeout:
            raise QueueTimedOut(
                "The server is busy: no generation place came free within "
                f"{settings.V1_REPLY_TIMEOUT:g} seconds. Retry later."
            ) from None
        self._gate = gate
        self._lock = threading.Lock()
        self._held = True

    def release(self) -> None:
        with self._lock:
            if not self._held:
                return
            self._held = False
        self._gate.release()


def _deadline() -> float:
    return time.monotonic() + settings.V1_REPLY_TIMEOUT


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _check_prompt_chars(conversation: list[dict], *, param: str) -> None:
    """The cheap cap, before any tokenizer runs: ``CHARS_PER_TOKEN`` characters per token
    ``V1_MAX_PROMPT_TOKENS`` allows."""
    limit = settings.V1_MAX_PROMPT_TOKENS * CHARS_PER_TOKEN
    chars = sum(len(m["content"]) + len(m["role"]) for m in conversation)
    if chars > limit:
        raise ContextLengthExceeded(
            f"The messages are {chars} characters long; the limit is {limit} characters "
            f"(and {settings.V1_MAX_PROMPT_TOKENS} tokens). Shorten the messages.",
            param=param,
        )


def _context_length(model, tokenizer) -> int | None:
    """The model's context window in tokens, where its config or tokenizer says."""
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        return positions
    length = getattr(tokenizer, "model_max_length", None)
    return length if isinstance(length, int) and 0 < length < 10**7 else None


def _prompt_tokens(tokenizer, messages: list[dict]) -> int:
    """Tokens of the prompt as the service encodes it (chat template, generation prompt)."""
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as error:  # a template that refuses these roles or this order
        raise exceptions.ValidationError(
            {"messages": f"the model's chat template refuses these messages: {error}"}
        ) from None
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _max_new_tokens(version: ModelVersion, messages: list[dict], requested: int | None) -> int:
    """The prompt checked against ``min(context - max_tokens, V1_MAX_PROMPT_TOKENS)``
    (``max_tokens`` 1 when not given); returns the tokens to generate: the requested
    number, or the default cut to what the context has left."""
    model, tokenizer = ml.load_policy(version.base_path, version.adapter_path or None)
    prompt = _prompt_tokens(tokenizer, messages)
    context = _context_length(model, tokenizer)
    limit = settings.V1_MAX_PROMPT_TOKENS
    if context is not None:
        limit = min(limit, context - (requested or 1))
    if prompt > limit:
        if context is not None and context - (requested or 1) < settings.V1_MAX_PROMPT_TOKENS:
            asked = f" plus max_tokens {requested}" if requested else ""
            message = (
                f"This model's maximum context length is {context} tokens; your messages "
                f"use {prompt} tokens{asked}. Shorten the messages"
                + (" or lower max_tokens." if requested else ".")
            )
        else:
            message = (
                f"Your messages use {prompt} tokens; this server accepts at most "
                f"{settings.V1_MAX_PROMPT_TOKENS} prompt tokens. Shorten the messages."
            )
        raise ContextLengthExceeded(message, param="messages")
    if requested:
        return requested
    return DEFAULT_MAX_TOKENS if context is None else min(DEFAULT_MAX_TOKENS, context - prompt)


# --- output ---------------------------------------------------------------------------


def model_payload(version: ModelVersion) -> dict:
    return {
        "id": version.model_id,
        "object": "model",
        "created": int(version.created_at.timestamp()),
        "owned_by": "loop",
        "kind": version.kind,
        "state": version.state,
        "method": version.method,
        "parent": version.parent.model_id if version.parent else None,
        "name": version.name,
    }


class StopScanner:
    """Cuts streamed text at the first stop sequence, holding back just enough text to
    see a stop sequence that arrives split over several deltas."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.pending = ""
        self.stopped = False

    def feed(self, delta: str) -> str:
        if self.stopped:
            return ""
        self.pending += delta
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.pending = self.pending[: min(hits)], ""
            return out
        cut = max(0, len(self.pending) - self.hold)
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


def _cut_at_stops(text: str, stops: list[str]) -> tuple[str, bool]:
    scanner = StopScanner(stops)
    kept = scanner.feed(text) + scanner.flush()
    return kept, scanner.stopped


def _finish_reason(reply: ml.GeneratedReply, stopped: bool) -> str:
    return "stop" if stopped or reply.finished else "length"


def _generation_record(params: ml.GenerationParams, request, reply) -> dict:
    """What was asked and how long it took: recorded with every response."""
    return {
        "params": params.as_dict(),
        "batch_size": request.batch_size,
        "queued_seconds": round(request.queued_seconds, 4),
        "seconds": round(reply.seconds, 4),
    }


@extend_schema_view(
    post=extend_schema(
        operation_id="openai_chat_completions",
        request=ChatCompletionSerializer,
        responses={(200, "application/json"): OBJECT, (200, "text/event-stream"): OpenApiTypes.STR},
    ),
)
class ChatCompletionsApi(OpenAIApi):
    def post(self, request):
        deadline = _deadline()
        data = ChatCompletionSerializer(
            data=request.data, context={"default_seed": secrets.randbelow(2**31)}
        )
        data.is_valid(raise_exception=True)
        version = _policy(data.validated_data["model"], request)
        messages = [dict(m) for m in data.validated_data["messages"]]
        _check_prompt_chars(messages, param="messages")
        n = data.validated_data["n"]
        stream = data.validated_data["stream"]
        place = _Place(deadline)
        pending: list = []
        try:
            if version.has_endpoint:
                params = [data.generation_params(i) for i in range(n)]
                return _forwarded(version, data.validated_data, messages, params, deadline)
            max_new_tokens = _max_new_tokens(version, messages, data.requested_max_tokens)
            params = [data.generation_params(i, max_new_tokens=max_new_tokens) for i in range(n)]
            service = default_service()
            for p in params:
                pending.append(service.submit(_served(version), messages, p, stream=stream))
            completion = {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "created": int(time.time()),
                "model": version.model_id,
                "system_fingerprint": f"loop-{version.pk}",
            }
            stops = data.validated_data["stop"]
            if stream:
                include_usage = bool(data.validated_data["stream_options"].get("include_usage"))
                events = _stream_events(completion, pending, params, stops, include_usage, deadline)
                response = StreamingHttpResponse(
                    _ClosableStream(events, pending, place), content_type="text/event-stream"
                )
                place = None  # the stream gives it back when it ends or is closed
                response["Cache-Control"] = "no-cache"
                response["X-Accel-Buffering"] = "no"
                return response
            body = _completion_body(completion, pending, params, stops, deadline)
            if data.validated_data["logprobs"]:
                _add_logprobs(body, version, messages, pending, data.validated_data["top_logprobs"])
            return Response(body)
        finally:
            if place is not None:
                _cancel(pending, "the request ended")
                place.release()


def _cancel(pending, reason: str) -> None:
    for request in pending:
        if not request.done():
            request.cancel(reason)


class _ClosableStream:
    """A streamed reply's events. The WSGI server closes it when the response ends or
    its client goes away (a failed write): closing cancels what is still generating and
    gives the gate's place back, even when not one event was read."""

    def __init__(self, events, pending, place: _Place) -> None:
        self._events = events
        self._pending = pending
        self._place = place

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._events)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        try:
            self._events.close()
        finally:
            _cancel(self._pending, "client went away")
            self._place.release()


def _forwarded(
    version: ModelVersion, data: dict, messages: list[dict], params, deadline: float
) -> Response:
    """The completion from the inference server ``version`` is registered on: the n
    choices are asked concurrently (seeds ``seed``, ``seed + 1``, ... as in-process), stop
    sequences are applied here, and a stream carries each choice's text in one delta."""
    if data["logprobs"]:
        raise exceptions.ValidationError(
            {"logprobs": f"'{version.model_id}' runs on an inference server: ask without it."}
        )
    try:
        replies = generator_for(version, timeout_s=max(1.0, _remaining(deadline))).generate(
            [messages] * len(params), params[0], batch_size=len(params)
        )
    except GenerationBackendError as error:
        if _remaining(deadline) <= 0:
            raise ReplyTimedOut(
                f"The model's server did not answer within {settings.V1_REPLY_TIMEOUT:g} seconds."
            ) from None
        raise ModelServerFailed(str(error)) from None
    completion = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": version.model_id,
        "system_fingerprint": f"loop-{version.pk}-server",
    }
    choices = []
    for index, reply in enumerate(replies):
        text, stopped = _cut_at_stops(reply.text, data["stop"])
        choices.append((index, text, _finish_reason(reply, stopped)))
    tokens = sum(reply.completion_tokens for reply in replies)
    usage = {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens}
    if not data["stream"]:
        return Response(
            {
                **completion,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": index,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish,
                        "logprobs": None,
                    }
                    for index, text, finish in choices
                ],
                "usage": usage,
            }
        )
    chunk = {**completion, "object": "chat.completion.chunk"}
    events = []
    for index, text, finish in choices:
        events.append(_sse({**chunk, "choices": [_delta(index, {"role": "assistant"})]}))
        events.append(_sse({**chunk, "choices": [_delta(index, {"content": text})]}))
        events.append(_sse({**chunk, "choices": [{**_delta(index, {}), "finish_reason": finish}]}))
    if data["stream_options"].get("include_usage"):
        events.append(_sse({**chunk, "choices": [], "usage": usage}))
    events.append("data: [DONE]\n\n")
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    return response


def _timed_out_message() -> str:
    return (
        f"The model did not answer within {settings.V1_REPLY_TIMEOUT:g} seconds; its "
        "generation was stopped. Ask for fewer tokens or retry later."
    )


def _reply(request, deadline: float) -> ml.GeneratedReply:
    """The reply by ``deadline``; past it, the caller cancels every choice."""
    try:
        return request.result(timeout=_remaining(deadline))
    except TimeoutError:
        raise ReplyTimedOut(_timed_out_message()) from None
    except GenerationCancelled as error:
        raise exceptions.APIException(f"Generation was cancelled: {error}") from None


def _completion_body(completion, pending, params, stops, deadline: float) -> dict:
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for index, (request, choice_params) in enumerate(zip(pending, params, strict=True)):
        reply = _reply(request, deadline)
        text, stopped = _cut_at_stops(reply.text, stops)
        choices.append(
            {
                "index": index,
                "message": {"role": "assistant", "content": text},
                "finish_reason": _finish_reason(reply, stopped),
                "logprobs": None,
                "generation": _generation_record(choice_params, request, reply),
            }
        )
        prompt_tokens = request.prompt_tokens
        completion_tokens += reply.completion_tokens
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    return {**completion, "object": "chat.completion", "choices": choices, "usage": usage}


def _add_logprobs(body: dict, version, messages, pending, top: int) -> None:
    """Each choice's token log-probabilities (the model's own, temperature 1), computed
    from one forward pass over the prompt and the generated tokens; a reply cut at a stop
    sequence still lists every generated token."""
    model, tokenizer = ml.load_policy(version.base_path, version.adapter_path or None)
    for choice, request in zip(body["choices"], pending, strict=True):
        token_ids = request.result().token_ids
        content = ml.reply_logprobs(model, tokenizer, messages, token_ids, top=top)
        choice["logprobs"] = {"content": content, "refusal": None}


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def _stream_events(completion, pending, params, stops, include_usage, deadline: float):
    """Server-sent events, one choice after another, then ``data: [DONE]``. A client that
    goes away closes this generator, which cancels what is still generating; so does the
    reply timeout (an error event ends the stream)."""
    chunk = {**completion, "object": "chat.completion.chunk"}
    prompt_tokens = completion_tokens = 0
    try:
        for index, (request, choice_params) in enumerate(zip(pending, params, strict=True)):
            yield _sse({**chunk, "choices": [_delta(index, {"role": "assistant", "content": ""})]})
            scanner = StopScanner(stops)
            try:
                for delta in request.stream(deadline=deadline):
                    text = scanner.feed(delta)
                    if text:
                        yield _sse({**chunk, "choices": [_delta(index, {"content": text})]})
                    if scanner.stopped:
                        request.cancel("stop sequence reached")
                        break
                rest = scanner.flush()
                if rest:
                    yield _sse({**chunk, "choices": [_delta(index, {"content": rest})]})
                reply = request.result(timeout=_remaining(deadline))
            except GenerationCancelled:
                if not scanner.stopped:
                    raise
                reply = None
            finish = "stop" if reply is None else _finish_reason(reply, scanner.stopped)
            final = {**_delta(index, {}), "finish_reason": finish}
            if reply is not None:
                final["generation"] = _generation_record(choice_params, request, reply)
                completion_tokens += reply.completion_tokens
            yield _sse({**chunk, "choices": [final]})
            prompt_tokens = request.prompt_tokens
        if include_usage:
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
            yield _sse({**chunk, "choices": [], "usage": usage})
    except TimeoutError:
        _cancel(pending, "timed out")
        yield _sse(_stream_error(_timed_out_message(), code="timeout"))
    except GenerationCancelled as error:
        yield _sse(_stream_error(f"Generation was cancelled: {error}"))
    finally:
        _cancel(pending, "client went away")
    yield "data: [DONE]\n\n"


def _stream_error(message: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": code}}


def _delta(index: int, delta: dict) -> dict:
    return {"index": index, "delta": delta, "finish_reason": None, "logprobs": None}


@extend_schema_view(
    get=extend_schema(operation_id="openai_models_list", responses={200: OBJECT}),
)
class ModelListApi(OpenAIApi):
    def get(self, request):
        versions = _servable_rows(request)
        return Response({"object": "list", "data": [model_payload(v) for v in versions]})


@extend_schema_view(
    get=extend_schema(operation_id="openai_model_detail", responses={200: OBJECT}),
)
class ModelDetailApi(OpenAIApi):
    def get(self, request, model):
        return Response(model_payload(_servable(model, request)))


@extend_schema(exclude=True)
class UnknownRouteApi(OpenAIApi):
    """Any other path under /v1/: OpenAI clients read errors as JSON, never an HTML page."""

    def dispatch_unknown(self, request, *args, **kwargs):
        raise exceptions.NotFound(f"Unknown route: {request.method} {request.path}")

    get = post = put = patch = delete = dispatch_unknown


class RewardInputSerializer(serializers.Serializer):
    model = serializers.CharField()
    input = serializers.ListField(
        child=MessageSerializer(many=True, allow_empty=False),
        allow_empty=False,
        max_length=MAX_REWARD_INPUTS,
    )

    def validate_input(self, conversations):
        for index, conversation in enumerate(conversations):
            if conversation[-1]["role"] != "assistant":
                raise serializers.ValidationError(
                    f"conversation {index} must end with the assistant reply to score"
                )
        return conversations


@extend_schema_view(
    post=extend_schema(
        operation_id="openai_rewards", request=RewardInputSerializer, responses={200: OBJECT}
    ),
)
class RewardsApi(OpenAIApi):
    def post(self, request):
        """Scores the last assistant reply of each conversation in ``input`` with a reward
        model: ``{"model", "input": [[messages...], ...]}``. Rewards are normalised so the
        base policy's own replies have mean 0 and standard deviation 1."""
        deadline = _deadline()
        data = RewardInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        name = data.validated_data["model"]
        version = _servable(name, request)
        if version.kind != ModelVersion.Kind.REWARD:
            raise exceptions.ValidationError(
                {"model": f"'{name}' is a policy, not a reward model."}
            )
        conversations = [[dict(m) for m in c] for c in data.validated_data["input"]]
        # The scorer truncates each conversation to its training length; this cap keeps
        # the tokenizer from reading megabytes first.
        for conversation in conversations:
            _check_prompt_chars(conversation, param="input")
        place = _Place(deadline)
        try:
            rewards = services.reward_scores(
                version,
                conversations=[c[:-1] for c in conversations],
                replies=[c[-1]["content"] for c in conversations],
            )
        finally:
            place.release()
        return Response(
            {
                "object": "list",
                "model": version.model_id,
                "data": [
                    {"object": "reward", "index": i, "reward": reward}
                    for i, reward in enumerate(rewards)
                ],
            }
        )
