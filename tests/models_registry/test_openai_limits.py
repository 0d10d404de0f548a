"""/v1's limits (issue 14): prompt caps, seeds, the reply timeout, the bounded admission
gate, and generation that stops once nobody waits for it. With the tiny random model;
"how many tokens were generated" is counted by a forward hook on the loaded model, which
observes the real generation (one forward pass per token after the prompt's)."""

import threading
import time

import openai
import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from annotation.models import Role
from config.checks import v1_limits
from models_registry.endpoints import serving_endpoint_set
from models_registry.engine import ml
from models_registry.engine.serving import GenerationService, ServedModel
from models_registry.models import ModelVersion
from models_registry.openai_api import MAX_SEED, generation_gate
from models_registry.services import (
    ensure_base_model_from_folder,
    model_version_register,
)
from tests.factories import make_api_key, make_member

HELLO = [{"role": "user", "content": "Say hello."}]
# The tiny model's greedy reply is a run of newlines: no EOS, so it runs to max_tokens.
GREEDY = {"temperature": 0}
SAMPLED = {"temperature": 1.0, "top_p": 1.0, "seed": 7}


@pytest.fixture
def tiny(transactional_db, tiny_model_dir):
    return ensure_base_model_from_folder(name="tiny-chat", path=tiny_model_dir)


@pytest.fixture
def member_key(project):
    return make_api_key(make_member(project, Role.LABELER, "api-user"))


def _post(client, key, body, route="/v1/chat/completions"):
    return client.post(
        route, body, content_type="application/json", headers={"Authorization": f"Bearer {key}"}
    )


def _chat(client, key, **body):
    return _post(client, key, {"model": "tiny-chat", "messages": HELLO, **body})


class ForwardCounter:
    """Counts the loaded model's forward passes and can slow each one down."""

    def __init__(self, version: ModelVersion, delay: float = 0.0) -> None:
        model, _ = ml.load_policy(version.base_path, version.adapter_path or None)
        self.count = 0
        self.delay = delay
        self._handle = model.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.count += 1
        if self.delay:
            time.sleep(self.delay)

    def settled(self, quiet: float = 0.5, within: float = 10.0) -> int:
        """The count once no forward pass came for ``quiet`` seconds."""
        end = time.monotonic() + within
        last = self.count
        while time.monotonic() < end:
            time.sleep(quiet)
            if self.count == last:
                return last
            last = self.count
        raise AssertionError(f"generation went on for {within} s: {self.count} passes")

    def remove(self) -> None:
        self._handle.remove()


@pytest.fixture
def counter(tiny):
    made = []

    def _make(delay: float = 0.0) -> ForwardCounter:
        made.append(ForwardCounter(tiny, delay))
        return made[-1]

    yield _make
    for c in made:
        c.remove()


def _error(response) -> dict:
    return response.json()["error"]


# --- prompt caps ----------------------------------------------------------------------


def test_a_32000_character_message_is_refused_at_once(client, tiny, member_key):
    started = time.monotonic()
    answer = _chat(
        client, member_key, messages=[{"role": "user", "content": "word " * 6400}], max_tokens=1
    )

    assert answer.status_code == 400
    assert _error(answer) == {
        "message": _error(answer)["message"],
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
    assert "the limit is 24576 characters" in _error(answer)["message"]
    assert time.monotonic() - started < 2
    assert generation_gate().running == 0


@override_settings(V1_MAX_PROMPT_TOKENS=50)
def test_a_prompt_over_the_token_setting_is_refused_after_counting(client, tiny, member_key):
    # 200 characters: under the character cap (50 x 6), over 50 tokens.
    answer = _chat(client, member_key, messages=[{"role": "user", "content": "a b " * 50}])

    assert answer.status_code == 400
    assert _error(answer)["code"] == "context_length_exceeded"
    assert "at most 50 prompt tokens" in _error(answer)["message"]


def test_a_prompt_and_max_tokens_over_the_context_are_refused(client, tiny, member_key):
    # The tiny model's context is 1024 tokens; the chat template alone takes about 30.
    answer = _chat(client, member_key, max_tokens=1020)

    assert answer.status_code == 400
    assert _error(answer)["code"] == "context_length_exceeded"
    assert "maximum context length is 1024 tokens" in _error(answer)["message"]
    assert "max_tokens" in _error(answer)["message"]

    assert _chat(client, member_key, max_tokens=4, **GREEDY).status_code == 200


@override_settings(V1_MAX_PROMPT_TOKENS=10)
def test_reward_inputs_have_the_character_cap(client, tiny_model_dir, tiny_reward_dir, member_key):
    model_version_register(
        name="tiny-reward",
        kind=ModelVersion.Kind.REWARD,
        method=ModelVersion.Method.REWARD,
        base_path=str(tiny_model_dir),
        adapter_path=str(tiny_reward_dir),
    )
    conversation = [{"role": "user", "content": "x" * 100}, {"role": "assistant", "content": "y"}]

    answer = _post(
        client, member_key, {"model": "tiny-reward", "input": [conversation]}, "/v1/rewards"
    )

    assert answer.status_code == 400
    assert (_error(answer)["param"], _error(answer)["code"]) == ("input", "context_length_exceeded")


@override_settings(OUTBOUND_ALLOW_PRIVATE=True)
def test_a_version_on_an_inference_server_has_the_character_cap(client, tiny, member_key):
    # Nothing listens there: the refusal comes before any call to the server.
    serving_endpoint_set(version=tiny, url="http://127.0.0.1:9/v1", served_model_name="m")
    started = time.monotonic()

    answer = _chat(client, member_key, messages=[{"role": "user", "content": "x" * 30_000}])

    assert answer.status_code == 400
    assert _error(answer)["code"] == "context_length_exceeded"
    assert time.monotonic() - started < 2


# --- seeds ----------------------------------------------------------------------------


def test_a_seed_past_int64_is_refused_and_the_next_request_works(client, tiny, member_key):
    answer = _chat(client, member_key, seed=2**70, max_tokens=4)

    assert answer.status_code == 400
    assert _error(answer)["param"] == "seed"
    assert _error(answer)["type"] == "invalid_request_error"

    # The largest seed is accepted; its n choices use seed + i, past int64.
    answer = _chat(client, member_key, seed=MAX_SEED, n=4, max_tokens=4, temperature=1.0)
    assert answer.status_code == 200
    assert len(answer.json()["choices"]) == 4


def test_a_huge_seed_does_not_fail_the_batch_it_leads(tiny):
    service = GenerationService(max_wait_ms=300)
    served = ServedModel(key="tiny-chat", base_path=tiny.base_path)
    try:
        huge = ml.GenerationParams(max_new_tokens=4, seed=2**70)
        normal = ml.GenerationParams(max_new_tokens=4, seed=3)
        first = service.submit(served, HELLO, huge)
        second = service.submit(served, HELLO, normal)

        assert first.result(timeout=60).completion_tokens >= 1
        assert second.result(timeout=60).completion_tokens >= 1
        assert first.batch_size == second.batch_size == 2
    finally:
        service.close()


# --- the admission gate ---------------------------------------------------------------


def _hold_one_place_from_another_thread():
    gate = generation_gate()
    holder = threading.Thread(target=gate.acquire, args=(5,))
    holder.start()
    holder.join()
    assert gate.running == 1
    return gate


@override_settings(V1_MAX_CONCURRENT=1, V1_MAX_QUEUED=0)
def test_a_full_gate_answers_429_with_retry_after(client, tiny, member_key):
    gate = _hold_one_place_from_another_thread()
    try:
        answer = _chat(client, member_key, max_tokens=4)

        assert answer.status_code == 429
        assert int(answer["Retry-After"]) > 0
        assert _error(answer)["type"] == "rate_limit_error"
        assert _error(answer)["code"] == "server_busy"
    finally:
        gate.release()

    assert _chat(client, member_key, max_tokens=4).status_code == 200
    assert gate.running == 0


@override_settings(V1_MAX_CONCURRENT=1, V1_MAX_QUEUED=1)
def test_one_request_waits_for_the_place_and_the_next_is_refused(client, tiny, member_key):
    gate = _hold_one_place_from_another_thread()
    answers = []
    waiter = threading.Thread(
        target=lambda: answers.append(_chat(client, member_key, max_tokens=4, **GREEDY))
    )
    try:
        waiter.start()
        deadline = time.monotonic() + 10
        while gate.waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gate.waiting == 1

        assert _chat(client, member_key, max_tokens=4).status_code == 429
    finally:
        gate.release()
    waiter.join(30)

    assert answers[0].status_code == 200
    assert gate.running == gate.waiting == 0


@override_settings(V1_MAX_CONCURRENT=1, V1_MAX_QUEUED=1, V1_REPLY_TIMEOUT=0.5)
def test_a_request_that_waits_out_the_reply_timeout_gets_503(client, tiny, member_key):
    gate = _hold_one_place_from_another_thread()
    try:
        answer = _chat(client, member_key, max_tokens=4)
    finally:
        gate.release()

    assert answer.status_code == 503
    assert _error(answer)["code"] == "server_busy"
    assert int(answer["Retry-After"]) > 0


# --- timeouts and departed clients ----------------------------------------------------


@override_settings(V1_REPLY_TIMEOUT=1.0)
def test_a_reply_past_the_timeout_is_an_openai_error_and_generation_stops(
    client, tiny, member_key, counter
):
    slow = counter(delay=0.02)  # 900 tokens would take 18 s

    started = time.monotonic()
    answer = _chat(client, member_key, max_tokens=900, n=2, **GREEDY)
    answered = slow.count

    assert answer.status_code == 504
    assert _error(answer)["type"] == "server_error"
    assert _error(answer)["code"] == "timeout"
    assert time.monotonic() - started < 5
    assert slow.settled() <= answered + 3
    assert slow.count < 200
    assert generation_gate().running == 0


@override_settings(V1_REPLY_TIMEOUT=1.0)
def test_a_streamed_reply_past_the_timeout_ends_with_an_error_event(
    client, tiny, member_key, counter
):
    slow = counter(delay=0.02)

    answer = _chat(client, member_key, max_tokens=900, stream=True, **SAMPLED)
    body = b"".join(answer.streaming_content).decode()
    answer.close()

    assert answer.status_code == 200
    assert '"code": "timeout"' in body
    assert body.endswith("data: [DONE]\n\n")
    assert slow.settled() < 200
    assert generation_gate().running == 0


def test_closing_a_stream_stops_its_generation(tiny, member_key, live_server, counter):
    slow = counter(delay=0.01)  # 900 tokens would take 9 s
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=member_key, max_retries=0)

    stream = client.chat.completions.create(
        model="tiny-chat", messages=HELLO, max_tokens=900, stream=True, **SAMPLED
    )
    pieces = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces += 1
            if pieces == 3:
                break
    stream.close()
    closed_at = slow.count

    # The server sees the client gone at its next write or two, then stops generating.
    assert slow.settled() <= closed_at + 20
    assert slow.count < 200
    deadline = time.monotonic() + 5
    while generation_gate().running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert generation_gate().running == 0


def test_closing_an_unread_stream_cancels_it_and_frees_the_place(client, tiny, member_key, counter):
    slow = counter(delay=0.01)

    answer = _chat(client, member_key, max_tokens=900, stream=True, **GREEDY)
    time.sleep(0.3)  # let it start generating
    answer.close()  # what the WSGI server does when the client has gone

    assert slow.settled() < 100
    assert generation_gate().running == 0


# --- the system check -----------------------------------------------------------------


def test_the_check_fails_when_the_reply_timeout_is_not_below_the_web_timeout():
    with override_settings(V1_REPLY_TIMEOUT=60, WEB_TIMEOUT=60):
        assert "loop.E002" in [problem.id for problem in v1_limits()]
        with pytest.raises(SystemCheckError, match="V1_REPLY_TIMEOUT"):
            call_command("check")
    with override_settings(V1_REPLY_TIMEOUT=50, WEB_TIMEOUT=60):
        assert "loop.E002" not in [problem.id for problem in v1_limits()]
