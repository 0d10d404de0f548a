"""The in-process generation service (models_registry/engine/serving.py) on a tiny random Llama.

No database. Replies are compared with ``ml.generate_replies`` run on one conversation at
a time (batch size 1), which is what the service must reproduce for greedy requests.
"""

import shutil
import threading

import pytest

from models_registry.engine import ml
from models_registry.engine.serving import (
    GenerationCancelled,
    GenerationService,
    ServedModel,
    default_service,
)

PROMPTS = [
    "Hi",
    "What is the capital of France?",
    "Write a haiku about autumn leaves falling on a quiet pond.",
    "2+2?",
    "Tell me a long story about a dragon who learned to bake bread in a small village.",
    "Ça va ? Réponds en français, s'il te plaît.",
]


def chat(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def greedy(max_new_tokens: int) -> ml.GenerationParams:
    return ml.GenerationParams(max_new_tokens=max_new_tokens, do_sample=False)


def solo_reply(model_dir, prompt: str, params: ml.GenerationParams) -> ml.GeneratedReply:
    model, tokenizer = ml.load_policy(model_dir)
    return ml.generate_replies(model, tokenizer, [chat(prompt)], params, batch_size=1)[0]


def same_reply(a: ml.GeneratedReply, b: ml.GeneratedReply) -> bool:
    return (a.text, a.completion_tokens, a.finished) == (b.text, b.completion_tokens, b.finished)


@pytest.fixture(scope="module")
def varied_model_dir(tiny_model_dir, tmp_path_factory):
    """``tiny_model_dir`` re-initialised with larger weights (std 0.5).

    The shared tiny model's greedy reply is a run of newlines, which strips to "": every
    text comparison would pass. Larger weights make greedy replies varied words that
    depend on the prompt.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.initializer_range = 0.5
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    folder = tmp_path_factory.mktemp("tiny-llama-varied")
    model.save_pretrained(str(folder))
    for path in tiny_model_dir.iterdir():
        if path.name not in ("config.json", "model.safetensors"):
            shutil.copy(path, folder / path.name)  # tokenizer, chat template, generation config
    return folder


@pytest.fixture
def served(varied_model_dir) -> ServedModel:
    return ServedModel(key="tiny-v1", base_path=str(varied_model_dir))


@pytest.fixture
def make_service():
    services = []

    def make(**kwargs) -> GenerationService:
        service = GenerationService(**kwargs)
        services.append(service)
        return service

    yield make
    for service in services:
        service.close()


def test_concurrent_greedy_requests_share_a_batch_and_match_solo_replies(served, make_service):
    service = make_service(max_batch_size=8, max_wait_ms=300)
    start = threading.Barrier(len(PROMPTS))
    requests = [None] * len(PROMPTS)

    def client(index: int) -> None:
        start.wait()
        requests[index] = service.submit(served, chat(PROMPTS[index]), greedy(12))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(PROMPTS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    replies = [request.result(timeout=60) for request in requests]

    assert max(request.batch_size for request in requests) > 1
    assert sum(request.batch_size for request in requests) > len(PROMPTS)
    assert len({reply.text for reply in replies}) == len(PROMPTS)
    for prompt, request, reply in zip(PROMPTS, requests, replies, strict=True):
        assert same_reply(reply, solo_reply(served.base_path, prompt, greedy(12))), prompt
        assert request.prompt_tokens > 0
        assert request.queued_seconds >= 0
        assert reply.seconds > 0


def test_each_request_in_a_batch_stops_at_its_own_max_new_tokens(served, make_service):
    service = make_service(max_batch_size=3, max_wait_ms=5000)
    limits = [2, 9, 5]
    requests = [
        service.submit(served, chat(prompt), greedy(limit))
        for prompt, limit in zip(PROMPTS[:3], limits, strict=True)
    ]
    replies = [request.result(timeout=60) for request in requests]

    assert [request.batch_size for request in requests] == [3, 3, 3]
    assert [reply.completion_tokens for reply in replies] == limits
    assert [reply.finished for reply in replies] == [False, False, False]
    for prompt, limit, reply in zip(PROMPTS[:3], limits, replies, strict=True):
        assert same_reply(reply, solo_reply(served.base_path, prompt, greedy(limit)))
    # The short request is delivered when its own row stops, before the batch ends.
    assert replies[0].seconds < replies[1].seconds


def test_streamed_deltas_concatenate_to_the_final_text(served, make_service):
    service = make_service(max_batch_size=len(PROMPTS), max_wait_ms=5000)
    requests = [
        service.submit(served, chat(prompt), greedy(24), stream=index != 1)
        for index, prompt in enumerate(PROMPTS)
    ]

    for index, request in enumerate(requests):
        if index == 1:
            with pytest.raises(RuntimeError, match="stream=True"):
                request.stream()
            continue
        deltas = list(request.stream(timeout=60))
        reply = request.result(timeout=1)
        assert request.batch_size == len(PROMPTS)
        assert len(deltas) > 1
        assert all(deltas)
        assert "".join(deltas) == reply.text
        assert reply.completion_tokens == 24


def test_sampled_requests_with_different_settings_get_separate_batches(served, make_service):
    service = make_service(max_batch_size=3, max_wait_ms=300)
    warm = ml.GenerationParams(max_new_tokens=4, temperature=0.7, seed=1)
    hot = ml.GenerationParams(max_new_tokens=4, temperature=1.3, seed=1)
    nucleus = ml.GenerationParams(max_new_tokens=4, temperature=0.7, top_p=0.5, seed=1)
    first = service.submit(served, chat(PROMPTS[0]), warm)
    second = service.submit(served, chat(PROMPTS[1]), hot)
    third = service.submit(served, chat(PROMPTS[2]), warm)
    fourth = service.submit(served, chat(PROMPTS[3]), nucleus)
    fifth = service.submit(served, chat(PROMPTS[4]), greedy(4))

    for request in (first, second, third, fourth, fifth):
        assert request.result(timeout=60).completion_tokens == 4
    assert [r.batch_size for r in (first, second, third, fourth, fifth)] == [2, 1, 2, 1, 1]


def test_an_error_fails_its_batch_and_the_next_request_is_served(served, make_service, tmp_path):
    service = make_service(max_batch_size=2, max_wait_ms=300)
    missing = ServedModel(key="gone", base_path=str(tmp_path / "no-such-model"))
    broken = [service.submit(missing, chat(prompt), greedy(4)) for prompt in PROMPTS[:2]]

    errors = []
    for request in broken:
        with pytest.raises(Exception) as raised:  # noqa: B017 (transformers' own error type)
            request.result(timeout=60)
        errors.append(raised.value)
    assert errors[0] is errors[1]
    assert "no-such-model" in str(errors[0])
    assert [request.batch_size for request in broken] == [0, 0]

    after = service.submit(served, chat(PROMPTS[0]), greedy(4))
    assert same_reply(after.result(timeout=60), solo_reply(served.base_path, PROMPTS[0], greedy(4)))
    assert service.running


def test_close_stops_the_thread_and_fails_what_is_queued(served, make_service):
    service = make_service(max_batch_size=4, max_wait_ms=60_000)
    queued = service.submit(served, chat(PROMPTS[0]), greedy(4), stream=True)

    service.close()

    assert not service.running
    with pytest.raises(GenerationCancelled):
        queued.result(timeout=1)
    with pytest.raises(GenerationCancelled):
        list(queued.stream(timeout=1))
    with pytest.raises(RuntimeError, match="closed"):
        service.submit(served, chat(PROMPTS[0]), greedy(4))


def test_a_cancelled_request_fails_and_its_companions_finish(served, make_service):
    service = make_service(max_batch_size=2, max_wait_ms=500)
    cancelled = service.submit(served, chat(PROMPTS[0]), greedy(8))
    cancelled.cancel("client went away")
    kept = service.submit(served, chat(PROMPTS[1]), greedy(8))

    with pytest.raises(GenerationCancelled, match="client went away"):
        cancelled.result(timeout=60)
    assert same_reply(kept.result(timeout=60), solo_reply(served.base_path, PROMPTS[1], greedy(8)))


@pytest.mark.parametrize(
    "messages",
    [[], "hello", [{"role": "user"}], [{"role": "user", "content": 3}], [["user", "hi"]]],
)
def test_malformed_messages_are_refused_at_submit(served, make_service, messages):
    service = make_service()
    with pytest.raises(ValueError, match="messages"):
        service.submit(served, messages, greedy(4))


def test_default_service_is_one_per_process_until_closed():
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(default_service())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len({id(service) for service in seen}) == 1
    seen[0].close()
    fresh = default_service()
    assert fresh is not seen[0]
    assert fresh.running
