"""Serving a model version from an OpenAI-compatible inference server: one generation path
(``generator_for``) with the in-process and the server backend giving the same greedy
replies (the server being this product's own ``/v1`` on a live test server); registering
the endpoint from the command, the API and the version page (who may, bad input); the
``/v1`` forwarding; and a broken server failing only the work that uses it."""

import json
import random

import openai
import pytest
from django.core.management import CommandError, call_command

from annotation.arena import services as arena
from annotation.judges.backends import BackendError, LocalBackend
from annotation.models import ArenaBattle, Role
from config.errors import ServiceError
from models_registry import endpoints
from models_registry.endpoints import generator_for, serving_endpoint_set
from models_registry.engine import ml
from models_registry.engine.backends import InProcessGenerator, OpenAIServerGenerator
from models_registry.models import ModelVersion
from models_registry.services import ensure_base_model_from_folder
from tests.factories import endpoint_fields, make_api_key, make_member, make_user, make_version
from tests.models_registry.engine.fake_model_server import FakeServer, answering, silent_server

PROMPTS = ["Say hello.", "What is two plus two?", "Name a colour.", "Write a haiku about rain."]
CONVERSATIONS = [[{"role": "user", "content": text}] for text in PROMPTS]
GREEDY = ml.GenerationParams(max_new_tokens=12, do_sample=False, seed=0)
KEY = "sk-upstream-secret-42"
GARBAGE = answering(b"<html>502 Bad Gateway</html>", content_type="text/html")


@pytest.fixture(scope="session")
def greedy_model_dir(tmp_path_factory, smollm2_tokenizer_dir):
    """A tiny random Llama whose greedy replies are words, different for each prompt (the
    shared tiny model's greedy reply is blank lines, which would compare nothing)."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir))
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        **ids,
    )
    torch.manual_seed(1)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(**ids)
    folder = tmp_path_factory.mktemp("greedy-llama")
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture
def serve():
    servers = []

    def _serve(answer, **options) -> FakeServer:
        servers.append(FakeServer(answer, **options))
        return servers[-1]

    yield _serve
    for server in servers:
        server.close()


# --- one generation path, two backends -----------------------------------------------------


def test_the_server_backend_on_the_live_v1_gives_the_in_process_greedy_replies(
    transactional_db, project, live_server, greedy_model_dir
):
    local = ensure_base_model_from_folder(name="tiny-greedy", path=greedy_model_dir)
    served = ensure_base_model_from_folder(name="tiny-served", path=greedy_model_dir)
    key = make_api_key(make_member(project, Role.LABELER, "api-user"))
    serving_endpoint_set(
        version=served, url=f"{live_server.url}/v1", served_model_name="tiny-greedy", api_key=key
    )

    in_process = generator_for(local)
    through_server = generator_for(served)
    expected = in_process.generate(CONVERSATIONS, GREEDY, batch_size=4)
    replies = through_server.generate(CONVERSATIONS, GREEDY, batch_size=4)

    assert isinstance(in_process, InProcessGenerator)
    assert isinstance(through_server, OpenAIServerGenerator)
    assert [r.text for r in replies] == [r.text for r in expected]
    assert [(r.completion_tokens, r.finished) for r in replies] == [
        (r.completion_tokens, r.finished) for r in expected
    ]
    assert all(r.text for r in expected)  # real words, not blank replies
    assert len({r.text for r in expected}) > 1


def test_v1_forwards_a_version_with_an_endpoint_to_its_server(
    transactional_db, project, live_server, greedy_model_dir
):
    ensure_base_model_from_folder(name="tiny-greedy", path=greedy_model_dir)
    served = ensure_base_model_from_folder(name="tiny-served", path=greedy_model_dir)
    key = make_api_key(make_member(project, Role.LABELER, "api-user"))
    serving_endpoint_set(
        version=served, url=f"{live_server.url}/v1", served_model_name="tiny-greedy", api_key=key
    )
    (expected,) = InProcessGenerator(str(greedy_model_dir)).generate(CONVERSATIONS[:1], GREEDY)
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=key, max_retries=0)

    answer = client.chat.completions.create(
        model="tiny-served", messages=CONVERSATIONS[0], max_tokens=12, temperature=0, n=2
    )
    chunks = list(
        client.chat.completions.create(
            model="tiny-served",
            messages=CONVERSATIONS[0],
            max_tokens=12,
            temperature=0,
            stream=True,
        )
    )

    assert answer.model == "tiny-served"
    assert [c.message.content for c in answer.choices] == [expected.text] * 2
    assert answer.choices[0].finish_reason == ("stop" if expected.finished else "length")
    assert answer.usage.completion_tokens == 2 * expected.completion_tokens
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == expected.text


def test_v1_answers_a_502_in_openai_shape_when_the_versions_server_fails(client, project, serve):
    server = serve(GARBAGE)
    version = make_version("broken-served")
    serving_endpoint_set(version=version, url=server.url, served_model_name="m")
    key = make_api_key(make_member(project, Role.LABELER, "api-user"))
    body = {"model": version.model_id, "messages": CONVERSATIONS[0], "temperature": 0}

    answer = client.post(
        "/v1/chat/completions",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    with_logprobs = client.post(
        "/v1/chat/completions",
        {**body, "logprobs": True},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )

    assert answer.status_code == 502
    assert answer.json()["error"] == {
        # What the server wrote is not passed on: only that it was not JSON.
        "message": f"model server {server.url} answered garbage (not JSON)",
        "type": "server_error",
        "param": None,
        "code": "model_server_error",
    }
    assert with_logprobs.status_code == 400
    assert "runs on an inference server" in with_logprobs.json()["error"]["message"]
    assert len(server.requests) == 1


# --- a broken server fails only the work that uses it --------------------------------------


@pytest.fixture
def contestants(db, tiny_model_dir):
    return [
        ensure_base_model_from_folder(name=name, path=tiny_model_dir)
        for name in ("tiny-alpha", "tiny-beta")
    ]


def _battle(project, labeler, seed):
    battle = arena.arena_battle_start(
        project=project,
        labeler=labeler,
        prompt_text="What is RLHF?",
        params={"max_new_tokens": 4},
        rng=random.Random(seed),
    )
    arena.arena_replies_generate(battle_id=battle.pk)
    battle.refresh_from_db()
    return battle


@pytest.mark.parametrize("broken", ["garbage", "no-choices", "timeout"])
def test_an_arena_battle_on_a_broken_server_fails_with_the_message_and_others_go_on(
    login, project, labeler, contestants, serve, monkeypatch, broken
):
    monkeypatch.setattr(endpoints, "SERVER_TIMEOUT_S", 0.3)
    in_process, on_server = contestants
    with silent_server() as silent_url:
        url = {
            "garbage": lambda: serve(GARBAGE).url,
            "no-choices": lambda: serve(answering({"object": "chat.completion"})).url,
            "timeout": lambda: silent_url,
        }[broken]()
        serving_endpoint_set(version=on_server, url=url, served_model_name="tiny-beta")

        failed = _battle(project, labeler, seed=0)

    says = {
        "garbage": "answered garbage (not JSON)",
        "no-choices": "answered garbage (no choices[0].message.content)",
        "timeout": "did not answer within 0.3 s (timeout)",
    }[broken]
    assert failed.status == ArenaBattle.Status.FAILED
    assert failed.error.startswith(f"GenerationBackendError: model server {url} {says}")
    page = login(labeler).get(f"/p/{project.slug}/arena/{failed.pk}/")
    assert page.status_code == 200
    assert "The replies could not be written" in page.content.decode()
    # Other work is unaffected: the same versions battle once the server is cleared.
    endpoints.serving_endpoint_clear(version=on_server)
    assert _battle(project, labeler, seed=1).status == ArenaBattle.Status.READY


def test_a_judge_on_a_broken_server_raises_the_judges_error_with_the_message(db, serve):
    server = serve(GARBAGE)
    version = make_version("judge-on-server")
    serving_endpoint_set(version=version, url=server.url, served_model_name="judge")
    backend = LocalBackend(generator=generator_for(version))

    with pytest.raises(BackendError) as failure:
        backend.complete(CONVERSATIONS[0])

    assert failure.value.message.startswith(f"model server {server.url} answered garbage")
    assert backend.choice_probabilities(CONVERSATIONS[0], ["A", "B"]) is None
    assert backend.logprobs_supported is False


def test_a_judge_on_a_server_reads_the_servers_reply(db, serve):
    reply = {"choices": [{"message": {"content": "Verdict: A"}, "finish_reason": "stop"}]}
    server = serve(answering(reply))
    version = make_version("judge-on-server")
    serving_endpoint_set(version=version, url=server.url, served_model_name="judge")

    text = LocalBackend(generator=generator_for(version)).complete(CONVERSATIONS[0])

    assert text == "Verdict: A"
    assert server.requests[0]["model"] == "judge"


# --- registering the endpoint: the service and the command ---------------------------------


@pytest.mark.parametrize(
    ("url", "name", "says"),
    [
        ("", "m", "Give the server's URL"),
        ("gpu-host:8000/v1", "m", "must start with http:// or https://"),
        ("ftp://gpu-host/v1", "m", "must start with http:// or https://"),
        ("http://", "m", "must start with http:// or https://"),
        ("http://gpu-host/" + "x" * 500, "m", "longer than 500 characters"),
        ("http://gpu-host:8000/v1", "  ", "Give the served model name"),
        ("http://gpu-host:8000/v1", None, "Give the served model name"),
    ],
)
def test_bad_endpoints_are_refused_and_store_nothing(db, url, name, says):
    version = make_version("v")

    with pytest.raises(ServiceError, match=says):
        serving_endpoint_set(version=version, url=url, served_model_name=name, api_key=KEY)

    assert endpoint_fields(version) == ("", "", "")


def test_a_reward_model_is_not_served_from_a_generation_server(db):
    version = make_version("rm", kind=ModelVersion.Kind.REWARD, method="reward")

    with pytest.raises(ServiceError, match="only policies generate from a server"):
        serving_endpoint_set(version=version, url="http://h/v1", served_model_name="rm")

    assert endpoint_fields(version) == ("", "", "")


def test_a_new_url_keeps_the_key_unless_one_is_given(db):
    version = make_version("v")
    serving_endpoint_set(version=version, url="http://a/v1/", served_model_name="m", api_key=KEY)
    serving_endpoint_set(version=version, url="http://b/v1", served_model_name="n")
    assert endpoint_fields(version) == ("http://b/v1", "n", KEY)

    serving_endpoint_set(version=version, url="http://b/v1", served_model_name="n", api_key="")
    assert endpoint_fields(version) == ("http://b/v1", "n", "")


def test_the_command_registers_and_clears_an_endpoint(db, monkeypatch, capsys):
    version = make_version("Tiny DPO", model_id="tiny-dpo")
    monkeypatch.setenv("UPSTREAM_KEY", KEY)

    call_command(
        "serve_endpoint",
        "tiny-dpo",
        "--url",
        "http://gpu-host:8000/v1",
        "--model",
        "tiny-dpo-lora",
        "--key-env",
        "UPSTREAM_KEY",
    )
    registered = endpoint_fields(version)
    call_command("serve_endpoint", str(version.pk), "--clear")

    assert registered == ("http://gpu-host:8000/v1", "tiny-dpo-lora", KEY)
    assert endpoint_fields(version) == ("", "", "")
    out = capsys.readouterr().out
    assert "Tiny DPO now generates on http://gpu-host:8000/v1 as 'tiny-dpo-lora'" in out
    assert KEY not in out


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["nope", "--url", "http://h/v1", "--model", "m"], "No model version 'nope'"),
        (["v", "--url", "h:8000", "--model", "m"], "must start with http:// or https://"),
        (["v", "--url", "http://h/v1"], "Give the served model name"),
        (["v", "--url", "http://h/v1", "--model", "m", "--key-env", "UNSET_VAR"], "UNSET_VAR"),
    ],
)
def test_the_command_refuses_bad_input_and_stores_nothing(db, monkeypatch, arguments, says):
    monkeypatch.delenv("UNSET_VAR", raising=False)
    version = make_version("v")

    with pytest.raises(CommandError, match=says):
        call_command("serve_endpoint", *arguments)

    assert endpoint_fields(version) == ("", "", "")


# --- the API ---------------------------------------------------------------------------


def _api(client, method, version, body=None):
    path = f"/api/projects/alpha/model-versions/{version.pk}/endpoint/"
    if method == "put":
        return client.put(path, json.dumps(body or {}), content_type="application/json")
    return client.delete(path)


GOOD = {"url": "http://gpu-host:8000/v1", "served_model_name": "tiny-lora", "api_key": KEY}


def test_an_admin_sets_and_clears_the_endpoint_and_never_sees_the_key(login, project, admin_member):
    version = make_version("v", workspace=project.workspace)
    client = login(admin_member)

    put = _api(client, "put", version, GOOD)
    detail = client.get(f"/api/model-versions/{version.pk}/")
    page = client.get(f"/p/alpha/models/{version.pk}/")
    deleted = _api(client, "delete", version)

    summary = {"url": GOOD["url"], "served_model_name": "tiny-lora", "api_key_set": True}
    assert put.status_code == 200
    assert put.json()["serving_endpoint"] == summary
    assert detail.json()["serving_endpoint"] == summary
    for answer in (put, detail, page):
        assert KEY not in answer.content.decode()
    html = page.content.decode()
    assert '<code id="endpoint-url">http://gpu-host:8000/v1</code>' in html
    assert '<code id="endpoint-model">tiny-lora</code>' in html
    assert '<span id="endpoint-key">API key set</span>' in html
    assert deleted.status_code == 200
    assert deleted.json()["serving_endpoint"] is None
    assert endpoint_fields(version) == ("", "", "")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            {},
            {"url": ["This field is required."], "served_model_name": ["This field is required."]},
        ),
        ({**GOOD, "url": "gpu-host:8000"}, "must start with http:// or https://"),
        ({**GOOD, "served_model_name": ""}, "Give the served model name"),
        ({**GOOD, "url": ["http://h"]}, {"url": ["Not a valid string."]}),
        (
            {**GOOD, "api_key": "k" * 501},
            {"api_key": ["Ensure this field has no more than 500 characters."]},
        ),
    ],
)
def test_bad_api_input_is_a_400_with_the_reason_and_stores_nothing(
    login, project, admin_member, body, says
):
    version = make_version("v", workspace=project.workspace)

    answer = _api(login(admin_member), "put", version, body)

    assert answer.status_code == 400
    if isinstance(says, dict):
        assert answer.json() == says
    else:
        assert says in answer.json()["detail"]
    assert endpoint_fields(version) == ("", "", "")


# --- the version page ------------------------------------------------------------------


def test_an_admin_sets_the_endpoint_from_the_page(login, project, admin_member):
    version = make_version("v", workspace=project.workspace)
    client = login(admin_member)

    answer = client.post(f"/p/alpha/models/{version.pk}/endpoint/", GOOD, follow=True)

    html = answer.content.decode()
    assert answer.status_code == 200
    assert "v now generates on http://gpu-host:8000/v1." in html
    assert '<span id="endpoint-key">API key set</span>' in html
    assert KEY not in html
    assert endpoint_fields(version) == ("http://gpu-host:8000/v1", "tiny-lora", KEY)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({}, "This field is required."),
        ({**GOOD, "url": "gpu-host:8000"}, "must start with http:// or https://"),
        ({**GOOD, "url": "javascript:alert(1)"}, "must start with http:// or https://"),
    ],
)
def test_bad_input_on_the_page_is_a_400_with_the_reason_and_stores_nothing(
    login, project, admin_member, body, says
):
    version = make_version("v", workspace=project.workspace)

    answer = login(admin_member).post(f"/p/alpha/models/{version.pk}/endpoint/", body)

    assert answer.status_code == 400
    assert says in answer.content.decode()
    assert KEY not in answer.content.decode()
    assert endpoint_fields(version) == ("", "", "")


def test_members_see_how_a_version_generates_without_the_form(login, researcher):
    version = make_version("v")
    serving_endpoint_set(version=version, url="http://gpu-host:8000/v1", served_model_name="m")
    local = make_version("w")
    client = login(researcher)

    served_html = client.get(f"/p/alpha/models/{version.pk}/").content.decode()
    local_html = client.get(f"/p/alpha/models/{local.pk}/").content.decode()

    assert '<span id="endpoint-key">no API key</span>' in served_html
    assert (
        'action="/p/alpha/models/'
        not in served_html.split('id="serving-endpoint"')[1].split("</section>")[0]
    )
    assert "Generates in-process from its files." in local_html


def test_the_django_admin_never_shows_the_key(login, db):
    version = make_version("v")
    serving_endpoint_set(version=version, url="http://h/v1", served_model_name="m", api_key=KEY)

    answer = login(make_user("root", is_superuser=True, is_staff=True)).get(
        f"/admin/models_registry/modelversion/{version.pk}/change/"
    )

    assert answer.status_code == 200
    assert "http://h/v1" in answer.content.decode()
    assert KEY not in answer.content.decode()
