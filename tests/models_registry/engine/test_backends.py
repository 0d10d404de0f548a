"""The engine's two generation backends (models_registry/engine/backends.py), without Django:
the in-process one on a tiny random Llama, and the OpenAI-compatible server one against
small local HTTP servers that answer well, garbage, an error, or never."""

import dataclasses
import json
import socket
import time

import pytest

from models_registry.engine import ml
from models_registry.engine.backends import (
    GenerationBackendError,
    Generator,
    InProcessGenerator,
    OpenAIServerGenerator,
)
from tests.models_registry.engine.fake_model_server import FakeServer, silent_server

CONVERSATIONS = [[{"role": "user", "content": text}] for text in ("Hi", "2+2?", "A colour?")]
GREEDY = ml.GenerationParams(max_new_tokens=6, do_sample=False, seed=3)
KEY = "sk-secret-key-123"


@pytest.fixture
def serve():
    servers = []

    def _serve(answer, **options) -> FakeServer:
        servers.append(FakeServer(answer, **options))
        return servers[-1]

    yield _serve
    for server in servers:
        server.close()


def json_answer(payload, status=200):
    return lambda body: (status, "application/json", json.dumps(payload).encode())


def echo_answer(body):
    """A well-formed completion whose text names the prompt and the seed it was asked with."""
    text = f"re: {body['messages'][-1]['content']} (seed {body['seed']})"
    payload = {
        "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
    }
    return 200, "application/json", json.dumps(payload).encode()


def test_both_backends_are_generators(tiny_model_dir):
    assert isinstance(InProcessGenerator(str(tiny_model_dir)), Generator)
    assert isinstance(OpenAIServerGenerator("http://localhost:1/v1", "m"), Generator)


def test_in_process_replies_are_the_engines_own(tiny_model_dir):
    model, tokenizer = ml.load_policy(tiny_model_dir)
    expected = ml.generate_replies(model, tokenizer, CONVERSATIONS, GREEDY, batch_size=2)

    replies = InProcessGenerator(str(tiny_model_dir)).generate(CONVERSATIONS, GREEDY, batch_size=2)

    def untimed(reply):
        return dataclasses.replace(reply, seconds=0.0)

    assert [untimed(r) for r in replies] == [untimed(r) for r in expected]


def test_the_server_gets_each_conversation_with_the_params_and_replies_come_in_order(serve):
    server = serve(echo_answer, delay=0.2)
    generator = OpenAIServerGenerator(server.url, "tiny-lora", KEY, timeout_s=5)
    sampled = ml.GenerationParams(max_new_tokens=9, temperature=0.5, top_p=0.9, seed=40)

    replies = generator.generate(CONVERSATIONS, sampled, batch_size=3)

    assert [r.text for r in replies] == [
        "re: Hi (seed 40)",
        "re: 2+2? (seed 41)",
        "re: A colour? (seed 42)",
    ]
    assert all(r.completion_tokens == 4 and r.finished and r.seconds >= 0.2 for r in replies)
    first = min(server.requests, key=lambda body: body["seed"])
    assert first == {
        "model": "tiny-lora",
        "messages": CONVERSATIONS[0],
        "max_tokens": 9,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 40,
    }
    assert server.keys == [f"Bearer {KEY}"] * 3
    assert server.most_in_flight == 3  # sent concurrently


def test_greedy_params_are_sent_as_temperature_zero_and_length_cut_replies_are_unfinished(serve):
    cut = {"choices": [{"message": {"content": "abc"}, "finish_reason": "length"}]}
    server = serve(json_answer(cut))

    (reply,) = OpenAIServerGenerator(server.url, "m").generate(CONVERSATIONS[:1], GREEDY)

    assert (server.requests[0]["temperature"], server.requests[0]["top_p"]) == (0.0, 1.0)
    assert (reply.text, reply.finished, reply.completion_tokens) == ("abc", False, 0)


def test_a_server_that_never_answers_times_out_with_a_clear_message():
    with silent_server() as url:
        started = time.perf_counter()
        with pytest.raises(GenerationBackendError) as failure:
            OpenAIServerGenerator(url, "m", timeout_s=0.3).generate(CONVERSATIONS[:1], GREEDY)
        assert time.perf_counter() - started < 5

    assert str(failure.value) == f"model server {url} did not answer within 0.3 s (timeout)"


def test_a_server_that_refuses_the_connection_is_named():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"  # closed again below

    with pytest.raises(GenerationBackendError) as failure:
        OpenAIServerGenerator(url, "m", timeout_s=2).generate(CONVERSATIONS[:1], GREEDY)

    assert str(failure.value).startswith(f"model server {url} could not be reached (")


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (
            lambda body: (200, "text/html", b"<html>Bad Gateway</html>"),
            "answered garbage (not JSON)",
        ),
        (
            json_answer({"object": "chat.completion", "usage": {}}),
            "answered garbage (no choices[0].message.content)",
        ),
        (
            json_answer({"choices": []}),
            "answered garbage (no choices[0].message.content)",
        ),
        (
            json_answer({"choices": [{"message": {"content": None}}]}),
            "answered garbage (no choices[0].message.content)",
        ),
        (json_answer([1, 2]), "answered garbage (no choices[0].message.content)"),
        (
            json_answer({"error": {"message": "model 'm' not found"}}, status=404),
            "answered HTTP 404",
        ),
        (lambda body: (500, "text/plain", b"boom"), "answered HTTP 500"),
    ],
    ids=["not-json", "no-choices", "empty-choices", "null-content", "a-list", "404", "500"],
)
def test_a_server_that_answers_garbage_or_an_error_is_named_with_the_cause(serve, answer, says):
    server = serve(answer)

    with pytest.raises(GenerationBackendError) as failure:
        OpenAIServerGenerator(server.url, "m", timeout_s=5).generate(CONVERSATIONS[:1], GREEDY)

    # The status or the fault, never what the server wrote.
    assert str(failure.value) == f"model server {server.url} {says}"


def test_the_api_key_never_appears_in_a_message_or_repr(serve):
    server = serve(lambda body: (401, "text/plain", f"bad key {KEY}".encode()))
    generator = OpenAIServerGenerator(server.url, "m", KEY, timeout_s=5)

    with pytest.raises(GenerationBackendError) as failure:
        generator.generate(CONVERSATIONS[:1], GREEDY)

    assert str(failure.value) == f"model server {server.url} answered HTTP 401"
    assert KEY not in repr(generator)


@pytest.mark.parametrize(
    ("url", "name", "says"),
    [
        ("ftp://host/v1", "m", "must start with http:// or https://"),
        ("http://host/v1", "", "served model name is required"),
    ],
)
def test_a_server_generator_needs_an_http_url_and_a_name(url, name, says):
    with pytest.raises(ValueError, match=says):
        OpenAIServerGenerator(url, name)
