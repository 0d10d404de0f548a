"""Judge backends: a tiny local model's choice probabilities, and an OpenAI-compatible
endpoint (a real local HTTP server) with retries, timeouts, errors and log-probs."""

import math
import socket

import pytest
import torch

from annotation.judges import prompts
from annotation.judges.backends import BackendError, LocalBackend, RemoteBackend
from tests.annotation.judges.fake_endpoint import Answer, FakeEndpoint, completion

PRINCIPLE = {
    "name": "helpful",
    "critique_request": "Say what is unhelpful.",
    "revision_request": "Make it helpful.",
    "comparison_question": "Which response is more helpful?",
}
CONVERSATION = [{"role": "user", "content": "How do I boil an egg?"}]
MESSAGES = prompts.comparison_messages(
    CONVERSATION, "Put it in boiling water for 8 minutes.", "No.", PRINCIPLE
)
KEY = "sk-test-very-secret-0123456789"


# --- local ------------------------------------------------------------------------------


def test_local_labels_are_the_tokens_the_model_would_write_after_the_generation_prompt(
    tiny_model_dir,
):
    backend = LocalBackend(str(tiny_model_dir))
    _, tokenizer = backend._model()

    ids = backend.choice_token_ids(MESSAGES, ["A", "B"])

    # After the template's "assistant\n" the answer starts without a space: "A", not " A".
    assert ids == {
        "A": tokenizer.convert_tokens_to_ids("A"),
        "B": tokenizer.convert_tokens_to_ids("B"),
    }
    assert tokenizer(" A", add_special_tokens=False)["input_ids"] != [ids["A"]]


def test_local_choice_probabilities_are_the_next_token_softmax_renormalised(tiny_model_dir):
    backend = LocalBackend(str(tiny_model_dir))
    model, tokenizer = backend._model()
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    encoded = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        logits = model(**encoded).logits[0, -1]
    probabilities = torch.softmax(logits.float(), dim=-1)
    p_a = float(probabilities[tokenizer.convert_tokens_to_ids("A")])
    p_b = float(probabilities[tokenizer.convert_tokens_to_ids("B")])

    result = backend.choice_probabilities(MESSAGES, ["A", "B"])

    assert result == pytest.approx({"A": p_a / (p_a + p_b), "B": p_b / (p_a + p_b)})
    assert sum(result.values()) == pytest.approx(1.0)
    assert backend.logprobs_supported is True


def test_local_greedy_completion_repeats(tiny_model_dir):
    backend = LocalBackend(str(tiny_model_dir))

    first = backend.complete(MESSAGES, max_tokens=8)

    assert isinstance(first, str)
    assert backend.complete(MESSAGES, max_tokens=8) == first


def test_a_local_model_that_cannot_load_is_a_backend_error(tmp_path):
    backend = LocalBackend(str(tmp_path / "nothing-here"))

    with pytest.raises(BackendError, match="could not be loaded"):
        backend.choice_probabilities(MESSAGES, ["A", "B"])


# --- remote -----------------------------------------------------------------------------


def _remote(endpoint, **kwargs):
    # The fake endpoint listens on loopback, which only an operator's setting allows.
    settings = {"timeout": 2, "max_retries": 3, "backoff": 0.02, "allow_private": True, **kwargs}
    return RemoteBackend(endpoint.url, "judge-model", KEY, **settings)


def test_a_completion_sends_the_key_and_reads_the_content():
    with FakeEndpoint(lambda n, p: Answer(body=completion("(B) is better"))) as endpoint:
        text = _remote(endpoint).complete(MESSAGES, max_tokens=12, temperature=0.0)

    assert text == "(B) is better"
    (hit,) = endpoint.hits
    assert hit.headers["Authorization"] == f"Bearer {KEY}"
    assert hit.payload == {
        "model": "judge-model",
        "messages": MESSAGES,
        "max_tokens": 12,
        "temperature": 0.0,
    }


def test_log_probs_of_the_first_token_give_the_choice_probabilities():
    top = {"A": 0.6, " B": 0.2, "B": 0.1, "C": 0.05}
    with FakeEndpoint(lambda n, p: Answer(body=completion("A", top))) as endpoint:
        backend = _remote(endpoint)
        result = backend.choice_probabilities(MESSAGES, ["A", "B"])

    assert result == pytest.approx({"A": 0.6 / 0.9, "B": 0.3 / 0.9})
    assert backend.logprobs_supported is True
    (hit,) = endpoint.hits
    assert hit.payload["logprobs"] is True
    assert hit.payload["top_logprobs"] == 5
    assert hit.payload["max_tokens"] == 1


def test_an_endpoint_without_log_probs_gives_none_and_is_not_asked_again():
    with FakeEndpoint(lambda n, p: Answer(body=completion("A"))) as endpoint:
        backend = _remote(endpoint)
        first = backend.choice_probabilities(MESSAGES, ["A", "B"])
        second = backend.choice_probabilities(MESSAGES, ["A", "B"])

    assert (first, second) == (None, None)
    assert backend.logprobs_supported is False
    assert len(endpoint.hits) == 1


def test_neither_label_among_the_top_alternatives_gives_none():
    top = {"The": 0.5, "I": 0.3}
    with FakeEndpoint(lambda n, p: Answer(body=completion("The", top))) as endpoint:
        assert _remote(endpoint).choice_probabilities(MESSAGES, ["A", "B"]) is None


def test_5xx_is_retried_with_exponential_backoff_until_it_succeeds():
    def script(number, payload):
        return Answer(500, b"overloaded") if number <= 2 else Answer(body=completion("A"))

    with FakeEndpoint(script) as endpoint:
        text = _remote(endpoint, backoff=0.05).complete(MESSAGES)

    assert text == "A"
    assert len(endpoint.hits) == 3
    first_gap, second_gap = endpoint.gaps()
    assert first_gap >= 0.05
    assert second_gap >= 0.10  # doubled


def test_5xx_every_time_ends_in_a_retryable_error_after_all_tries():
    with (
        FakeEndpoint(lambda n, p: Answer(503, {"error": "down"})) as endpoint,
        pytest.raises(BackendError) as raised,
    ):
        _remote(endpoint, max_retries=2).complete(MESSAGES)

    assert len(endpoint.hits) == 3
    assert raised.value.retryable is True
    assert "HTTP 503" in raised.value.message
    assert "after 3 tries" in raised.value.message


def test_a_timeout_is_retried_and_reported():
    with (
        FakeEndpoint(lambda n, p: Answer(body=completion("A"), delay=0.6)) as endpoint,
        pytest.raises(BackendError, match="timeout") as raised,
    ):
        _remote(endpoint, timeout=0.15, max_retries=1).complete(MESSAGES)

    assert len(endpoint.hits) == 2
    assert raised.value.retryable is True


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_4xx_is_not_retried_and_the_key_stays_out_of_the_message(status):
    # A careless server echoes the Authorization header back.
    def script(number, payload):
        return Answer(status, {"error": f"bad key Bearer {KEY}"})

    with FakeEndpoint(script) as endpoint:
        backend = _remote(endpoint)
        with pytest.raises(BackendError) as raised:
            backend.complete(MESSAGES)

    assert len(endpoint.hits) == 1
    assert raised.value.retryable is False
    assert f"HTTP {status}" in raised.value.message
    assert KEY not in str(raised.value)
    assert KEY not in repr(backend)


@pytest.mark.parametrize(
    "body, message",
    [
        (b"<html>oops</html>", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        ({"choices": []}, "no choices"),
        ({"choices": [{"message": {"content": None}}]}, "no message content"),
    ],
)
def test_an_unparseable_body_is_not_retried(body, message):
    with (
        FakeEndpoint(lambda n, p: Answer(body=body)) as endpoint,
        pytest.raises(BackendError, match=message) as raised,
    ):
        _remote(endpoint).complete(MESSAGES)

    assert len(endpoint.hits) == 1
    assert raised.value.retryable is False


def test_a_closed_port_is_a_retryable_connection_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = RemoteBackend(
        f"http://127.0.0.1:{port}/v1", "m", KEY, max_retries=1, backoff=0.01, allow_private=True
    )

    with pytest.raises(BackendError, match="could not be reached") as raised:
        backend.complete(MESSAGES)

    assert raised.value.retryable is True
    assert backend.requests_sent == 2
    assert KEY not in str(raised.value)


def test_only_http_urls_are_accepted():
    with pytest.raises(ValueError, match="http"):
        RemoteBackend("file:///etc/passwd", "m")


def test_a_full_chat_completions_url_is_used_as_is():
    backend = RemoteBackend("https://host/v1/chat/completions/", "m")
    assert backend.endpoint == "https://host/v1/chat/completions"
    assert RemoteBackend("https://host/v1", "m").endpoint == "https://host/v1/chat/completions"


def test_probabilities_from_log_probs_are_exact():
    top = {"B": 0.25, "A": 0.25}
    with FakeEndpoint(lambda n, p: Answer(body=completion("B", top))) as endpoint:
        result = _remote(endpoint).choice_probabilities(MESSAGES, ["A", "B"])
    assert math.isclose(result["A"], 0.5) and math.isclose(result["B"], 0.5)


def test_a_local_backend_samples_each_call_from_the_next_seed(tiny_model_dir):
    from annotation.judges.backends import LocalBackend

    messages = [{"role": "user", "content": "Write a question."}]
    first, second = LocalBackend(tiny_model_dir, seed=5), LocalBackend(tiny_model_dir, seed=5)

    one, two = (first.complete(messages, max_tokens=8, temperature=1.0) for _ in range(2))

    assert one != two  # a new seed per call
    assert second.complete(messages, max_tokens=8, temperature=1.0) == one  # a rerun repeats
