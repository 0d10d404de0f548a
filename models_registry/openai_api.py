"""OpenAI-compatible API over the registry: ``GET /v1/models``, ``POST /v1/chat/completions``
(plain and streamed as server-sent events) and ``POST /v1/rewards`` for reward models.

Any OpenAI client talks to it with ``base_url=<site>/v1`` and an API key from the
*API key* page (sent as ``Authorization: Bearer <key>``). Errors come in OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, so clients raise their usual
exceptions. Generation runs in this process through ``serving.default_service()``,
which loads each version once and batches concurrent requests; a version registered on
an inference server (``models_registry/endpoints.py``) is forwarded to that server.

Reference: https://platform.openai.com/docs/api-reference/chat
"""

import json
import secrets
import time
import uuid

from django.http import StreamingHttpResponse
from rest_framework import exceptions, serializers
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.projects.permissions import projects_visible_to
from models_registry import selectors, services
from models_registry.endpoints import generator_for
from models_registry.engine import ml
from models_registry.engine.backends import GenerationBackendError
from models_registry.engine.serving import GenerationCancelled, ServedModel, default_service
from models_registry.models import ModelVersion

MAX_TOKENS_LIMIT = 1024
DEFAULT_MAX_TOKENS = 256
MAX_CHOICES = 4
MAX_MESSAGE_CHARS = 32_000
MAX_REWARD_INPUTS = 64
MAX_TOP_LOGPROBS = 20
REPLY_TIMEOUT_SECONDS = 300


class BearerTokenAuthentication(TokenAuthentication):
    """DRF's token authentication with OpenAI's ``Authorization: Bearer <key>`` header."""

    keyword = "Bearer"


class ModelNotFound(exceptions.NotFound):
    default_code = "model_not_found"


class ModelServerFailed(exceptions.APIException):
    """The inference server a version is registered on failed (502, like a gateway)."""

    status_code = 502
    default_code = "model_server_error"


ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
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

    def get_exception_handler(self):
        return openai_exception_handler


# --- input ----------------------------------------------------------------------------


class MessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "user", "assistant"])
    content = serializers.JSONField()

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
    seed = serializers.IntegerField(min_value=0, required=False)
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

    def generation_params(self, choice_index: int) -> ml.GenerationParams:
        data = self.validated_data
        seed = data.get("seed", self.context["default_seed"])
        greedy = data["temperature"] == 0
        return ml.GenerationParams(
            max_new_tokens=data.get("max_completion_tokens")
            or data.get("max_tokens")
            or DEFAULT_MAX_TOKENS,
            temperature=data["temperature"] or 1.0,
            top_p=data["top_p"],
            do_sample=not greedy,
            seed=seed + choice_index,
        )


def _servable(name: str) -> ModelVersion:
    version = selectors.version_by_reference(name, among=selectors.servable_versions())
    if version is None:
        raise ModelNotFound(f"The model '{name}' does not exist or is retired.")
    return version


def _policy(name: str) -> ModelVersion:
    version = _servable(name)
    if version.kind != ModelVersion.Kind.POLICY:
        raise exceptions.ValidationError(
            {"model": f"'{name}' is a reward model: score replies with POST /v1/rewards."}
        )
    return version


def _served(version: ModelVersion) -> ServedModel:
    return ServedModel(
        key=version.model_id, base_path=version.base_path, adapter_path=version.adapter_path or None
    )


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


class ChatCompletionsApi(OpenAIApi):
    def post(self, request):
        data = ChatCompletionSerializer(
            data=request.data, context={"default_seed": secrets.randbelow(2**31)}
        )
        data.is_valid(raise_exception=True)
        version = _policy(data.validated_data["model"])
        messages = [dict(m) for m in data.validated_data["messages"]]
        n = data.validated_data["n"]
        stream = data.validated_data["stream"]
        params = [data.generation_params(i) for i in range(n)]
        if version.has_endpoint:
            return _forwarded(version, data.validated_data, messages, params)
        service = default_service()
        pending = [service.submit(_served(version), messages, p, stream=stream) for p in params]
        completion = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "created": int(time.time()),
            "model": version.model_id,
            "system_fingerprint": f"loop-{version.pk}",
        }
        stops = data.validated_data["stop"]
        if stream:
            include_usage = bool(data.validated_data["stream_options"].get("include_usage"))
            events = _stream_events(completion, pending, params, stops, include_usage)
            response = StreamingHttpResponse(events, content_type="text/event-stream")
            response["Cache-Control"] = "no-cache"
            response["X-Accel-Buffering"] = "no"
            return response
        body = _completion_body(completion, pending, params, stops)
        if data.validated_data["logprobs"]:
            _add_logprobs(body, version, messages, pending, data.validated_data["top_logprobs"])
        return Response(body)


def _forwarded(version: ModelVersion, data: dict, messages: list[dict], params) -> Response:
    """The completion from the inference server ``version`` is registered on: the n
    choices are asked concurrently (seeds ``seed``, ``seed + 1``, ... as in-process), stop
    sequences are applied here, and a stream carries each choice's text in one delta."""
    if data["logprobs"]:
        raise exceptions.ValidationError(
            {"logprobs": f"'{version.model_id}' runs on an inference server: ask without it."}
        )
    try:
        replies = generator_for(version).generate(
            [messages] * len(params), params[0], batch_size=len(params)
        )
    except GenerationBackendError as error:
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


def _reply(request) -> ml.GeneratedReply:
    try:
        return request.result(timeout=REPLY_TIMEOUT_SECONDS)
    except TimeoutError:
        request.cancel("timed out")
        raise exceptions.APIException("The model took too long to answer.") from None
    except GenerationCancelled as error:
        raise exceptions.APIException(f"Generation was cancelled: {error}") from None


def _completion_body(completion, pending, params, stops) -> dict:
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for index, (request, choice_params) in enumerate(zip(pending, params, strict=True)):
        reply = _reply(request)
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


def _stream_events(completion, pending, params, stops, include_usage):
    """Server-sent events, one choice after another, then ``data: [DONE]``. A client that
    goes away closes this generator, which cancels what is still generating."""
    chunk = {**completion, "object": "chat.completion.chunk"}
    prompt_tokens = completion_tokens = 0
    try:
        for index, (request, choice_params) in enumerate(zip(pending, params, strict=True)):
            yield _sse({**chunk, "choices": [_delta(index, {"role": "assistant", "content": ""})]})
            scanner = StopScanner(stops)
            try:
                for delta in request.stream(timeout=REPLY_TIMEOUT_SECONDS):
                    text = scanner.feed(delta)
                    if text:
                        yield _sse({**chunk, "choices": [_delta(index, {"content": text})]})
                    if scanner.stopped:
                        request.cancel("stop sequence reached")
                        break
                rest = scanner.flush()
                if rest:
                    yield _sse({**chunk, "choices": [_delta(index, {"content": rest})]})
                reply = request.result(timeout=REPLY_TIMEOUT_SECONDS)
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
        yield _sse(_stream_error("The model took too long to answer."))
    except GenerationCancelled as error:
        yield _sse(_stream_error(f"Generation was cancelled: {error}"))
    finally:
        for request in pending:
            if not request.done():
                request.cancel("client went away")
    yield "data: [DONE]\n\n"


def _stream_error(message: str) -> dict:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": None}}


def _delta(index: int, delta: dict) -> dict:
    return {"index": index, "delta": delta, "finish_reason": None, "logprobs": None}


class ModelListApi(OpenAIApi):
    def get(self, request):
        versions = selectors.servable_versions()
        return Response({"object": "list", "data": [model_payload(v) for v in versions]})


class ModelDetailApi(OpenAIApi):
    def get(self, request, model):
        return Response(model_payload(_servable(model)))


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


class RewardsApi(OpenAIApi):
    def post(self, request):
        """Scores the last assistant reply of each conversation in ``input`` with a reward
        model: ``{"model", "input": [[messages...], ...]}``. Rewards are normalised so the
        base policy's own replies have mean 0 and standard deviation 1."""
        data = RewardInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        name = data.validated_data["model"]
        version = _servable(name)
        if version.kind != ModelVersion.Kind.REWARD:
            raise exceptions.ValidationError(
                {"model": f"'{name}' is a policy, not a reward model."}
            )
        conversations = [[dict(m) for m in c] for c in data.validated_data["input"]]
        rewards = services.reward_scores(
            version,
            conversations=[c[:-1] for c in conversations],
            replies=[c[-1]["content"] for c in conversations],
        )
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
