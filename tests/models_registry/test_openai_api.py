"""The OpenAI-compatible API, answered to the official ``openai`` client over a real HTTP
server (pytest-django's live server) with a tiny model."""

import threading
from urllib.parse import quote

import openai
import pytest

from annotation.models import Role
from models_registry.engine import ml
from models_registry.engine.serving import default_service
from models_registry.models import ApiKey, ModelVersion
from models_registry.services import (
    ensure_base_model_from_folder,
    model_version_register,
)
from tests.factories import (
    make_api_key,
    make_member,
    make_outsider_key,
    make_trained_version,
)

HELLO = [{"role": "user", "content": "Say hello."}]
# The tiny random model's greedy reply is a run of newlines (empty once stripped); a seeded
# sample gives varied text. A request alone in its batch samples exactly as
# ml.generate_replies does with the same seed.
SAMPLED = {"temperature": 1.0, "top_p": 1.0, "seed": 7}


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def tiny(transactional_db, tiny_model_dir):
    return ensure_base_model_from_folder(name="tiny-chat", path=tiny_model_dir)


@pytest.fixture
def member_key(project):
    return make_api_key(make_member(project, Role.LABELER, "api-user"))


@pytest.fixture
def client_for(live_server):
    def _client(key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=key, max_retries=0)

    return _client


def _reply(model_dir, messages, max_new_tokens: int, *, sampled=True) -> ml.GeneratedReply:
    model, tokenizer = ml.load_policy(model_dir)
    settings = {**SAMPLED, "do_sample": True} if sampled else {"do_sample": False}
    params = ml.GenerationParams(max_new_tokens=max_new_tokens, **settings)
    return ml.generate_replies(model, tokenizer, [messages], params)[0]


def test_a_plain_completion_is_the_models_reply(tiny, tiny_model_dir, member_key, client_for):
    expected = _reply(tiny_model_dir, HELLO, 12)
    assert expected.text.strip()

    answer = client_for(member_key).chat.completions.create(
        model="tiny-chat", messages=HELLO, max_tokens=12, **SAMPLED
    )

    assert answer.object == "chat.completion"
    assert answer.model == "tiny-chat"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == expected.text
    assert answer.choices[0].finish_reason == ("stop" if expected.finished else "length")
    assert answer.usage.completion_tokens == expected.completion_tokens
    assert answer.usage.prompt_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + expected.completion_tokens
    record = answer.choices[0].model_extra["generation"]
    assert record["params"] == {**SAMPLED, "do_sample": True, "max_new_tokens": 12}
    assert record["batch_size"] >= 1
    assert record["seconds"] > 0


def test_a_streamed_completion_arrives_in_pieces_that_add_up_to_the_reply(
    tiny, tiny_model_dir, member_key, client_for
):
    expected = _reply(tiny_model_dir, HELLO, 12)

    chunks = list(
        client_for(member_key).chat.completions.create(
            model="tiny-chat",
            messages=HELLO,
            max_tokens=12,
            **SAMPLED,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(piece or "" for piece in content) == expected.text
    assert len([piece for piece in content if piece]) > 1
    assert {c.id for c in chunks} == {chunks[0].id}
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == ("stop" if expected.finished else "length")
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == expected.completion_tokens


def _stop_inside(text: str) -> str:
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    assert stop.strip(), "the tiny model's reply is too short for this test"
    return stop


def test_a_stop_sequence_cuts_the_reply(tiny, tiny_model_dir, member_key, client_for):
    expected = _reply(tiny_model_dir, HELLO, 12).text
    stop = _stop_inside(expected)

    answer = client_for(member_key).chat.completions.create(
        model="tiny-chat", messages=HELLO, max_tokens=12, stop=stop, **SAMPLED
    )

    assert answer.choices[0].message.content == expected[: expected.find(stop)]
    assert answer.choices[0].finish_reason == "stop"


def test_a_streamed_reply_stops_at_a_stop_sequence(tiny, tiny_model_dir, member_key, client_for):
    expected = _reply(tiny_model_dir, HELLO, 12).text
    stop = _stop_inside(expected)

    chunks = list(
        client_for(member_key).chat.completions.create(
            model="tiny-chat", messages=HELLO, max_tokens=12, stop=[stop], stream=True, **SAMPLED
        )
    )

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected[: expected.find(stop)]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_several_choices_are_generated_in_one_batch(tiny, member_key, client_for):
    answer = client_for(member_key).chat.completions.create(
        model="tiny-chat", messages=HELLO, max_tokens=6, n=3, **SAMPLED
    )

    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert [c.model_extra["generation"]["params"]["seed"] for c in answer.choices] == [7, 8, 9]
    assert {c.model_extra["generation"]["batch_size"] for c in answer.choices} == {3}
    assert len({c.message.content for c in answer.choices}) == 3
    assert answer.usage.completion_tokens == 18


def test_concurrent_requests_share_a_batch(tiny, tiny_model_dir, member_key, client_for):
    client = client_for(member_key)
    prompts = [[{"role": "user", "content": f"Count to {i}."}] for i in range(6)]
    answers = [None] * len(prompts)
    service = default_service()
    gate = threading.Event()

    def ask(index):
        gate.wait()
        answers[index] = client.chat.completions.create(
            model="tiny-chat", messages=prompts[index], temperature=0, max_tokens=8
        )

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    ml.load_policy(tiny_model_dir)  # loaded before the burst, so the burst queues together
    gate.set()
    for thread in threads:
        thread.join(60)

    assert service.running
    sizes = [a.choices[0].model_extra["generation"]["batch_size"] for a in answers]
    assert max(sizes) > 1
    for prompt, answer in zip(prompts, answers, strict=True):
        solo = _reply(tiny_model_dir, prompt, 8, sampled=False)
        assert answer.choices[0].message.content == solo.text
        assert answer.usage.completion_tokens == solo.completion_tokens


def test_the_model_list_holds_every_version_not_retired(tiny, member_key, client_for):
    model_version_register(
        name="old",
        method=ModelVersion.Method.BASE,
        base_path=tiny.base_path,
        state=ModelVersion.State.RETIRED,
    )

    listed = client_for(member_key).models.list()

    assert [m.id for m in listed.data] == ["tiny-chat"]
    assert listed.data[0].model_extra["state"] == "serving"
    assert client_for(member_key).models.retrieve("tiny-chat").id == "tiny-chat"


def test_a_version_named_with_slashes_is_served_under_a_url_safe_id(
    project, tiny, member_key, client_for
):
    sft = make_trained_version(tiny, method="sft", project=project)
    dpo = make_trained_version(sft, method="dpo", project=project)
    client = client_for(member_key)

    retrieved = client.models.retrieve(dpo.model_id)
    listed = {m.id: m.model_extra["name"] for m in client.models.list().data}
    answer = client.chat.completions.create(model=dpo.model_id, messages=HELLO, max_tokens=2)

    assert sft.model_id == f"tiny-chat-sft{sft.training_run_id}"
    assert dpo.model_id == f"tiny-chat-sft{sft.training_run_id}-dpo{dpo.training_run_id}"
    assert retrieved.id == dpo.model_id
    assert retrieved.model_extra["name"] == dpo.name
    assert retrieved.model_extra["parent"] == sft.model_id
    assert listed[dpo.model_id] == dpo.name
    assert answer.model == dpo.model_id


def test_the_old_readable_names_still_name_a_version(project, tiny, member_key, client_for, client):
    dpo = make_trained_version(
        make_trained_version(tiny, method="sft", project=project), method="dpo", project=project
    )
    headers = {"HTTP_AUTHORIZATION": f"Bearer {member_key}"}

    by_name = client_for(member_key).chat.completions.create(
        model=dpo.name, messages=HELLO, max_tokens=2
    )
    encoded = client.get(f"/v1/models/{quote(dpo.name, safe='')}", **headers)

    assert by_name.model == dpo.model_id
    assert encoded.status_code == 200
    assert encoded.json()["id"] == dpo.model_id


def test_unknown_api_routes_answer_openai_json_not_a_page(tiny, member_key, client):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {member_key}"}

    missing_model = client.get("/v1/models/no-such-model", **headers)
    missing_route = client.post("/v1/completions", {}, **headers)

    assert missing_model.status_code == 404
    assert missing_model.json()["error"]["code"] == "model_not_found"
    assert missing_route.status_code == 404
    assert missing_route.json()["error"] == {
        "message": "Unknown route: POST /v1/completions",
        "type": "not_found_error",
        "param": None,
        "code": "not_found",
    }


def test_refusals_come_as_openai_errors(tiny, member_key, client_for):
    client = client_for(member_key)

    with pytest.raises(openai.AuthenticationError):
        client_for("not-a-key").models.list()
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="nope", messages=HELLO)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="tiny-chat", messages=HELLO, temperature=3)
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="tiny-chat", messages=[])
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="tiny-chat", messages=HELLO, max_tokens=100_000)


# --- the reward endpoint ---------------------------------------------------------------


@pytest.fixture
def reward_version(db, tiny_model_dir, tiny_reward_dir):
    return model_version_register(
        name="tiny-reward",
        kind=ModelVersion.Kind.REWARD,
        method=ModelVersion.Method.REWARD,
        base_path=str(tiny_model_dir),
        adapter_path=str(tiny_reward_dir),
    )


def _bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_a_reward_model_scores_replies_as_the_scorer_does(client, reward_version, member_key):
    from models_registry.services import reward_scorer

    question = [{"role": "user", "content": "Question 1?"}]
    body = {
        "model": "tiny-reward",
        "input": [
            [*question, {"role": "assistant", "content": "yes"}],
            [*question, {"role": "assistant", "content": "no"}],
        ],
    }

    answer = client.post(
        "/v1/rewards", body, content_type="application/json", headers=_bearer(member_key)
    )

    assert answer.status_code == 200
    rewards = [row["reward"] for row in answer.json()["data"]]
    assert rewards == pytest.approx(reward_scorer(reward_version)([question] * 2, ["yes", "no"]))
    assert rewards[0] > rewards[1]  # the fixture's reward model was trained to prefer "yes"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "tiny-reward", "input": []}, "input"),
        ({"model": "tiny-reward", "input": [[{"role": "user", "content": "hi"}]]}, "end with"),
        ({"model": "tiny-chat", "input": [[{"role": "assistant", "content": "x"}]]}, "policy"),
        ({"model": "nope", "input": [[{"role": "assistant", "content": "x"}]]}, "not exist"),
    ],
)
def test_bad_reward_requests_are_refused(client, reward_version, tiny, member_key, body, message):
    answer = client.post(
        "/v1/rewards", body, content_type="application/json", headers=_bearer(member_key)
    )

    assert answer.status_code in (400, 404)
    assert message in answer.json()["error"]["message"]


def test_chat_with_a_reward_model_is_refused(client, reward_version, member_key):
    answer = client.post(
        "/v1/chat/completions",
        {"model": "tiny-reward", "messages": HELLO},
        content_type="application/json",
        headers=_bearer(member_key),
    )

    assert answer.status_code == 400
    assert "/v1/rewards" in answer.json()["error"]["message"]


# --- who may call it -------------------------------------------------------------------


@pytest.mark.parametrize("role", ["anonymous", "outsider", *Role.values])
def test_only_project_members_with_a_key_reach_the_api(client, project, tiny, role):
    if role == "anonymous":
        headers = {}
    elif role == "outsider":
        headers = _bearer(make_outsider_key(project))
    else:
        headers = _bearer(make_api_key(make_member(project, role, role)))

    answer = client.get("/v1/models", headers=headers)

    expected = {"anonymous": 401, "outsider": 403}.get(role, 200)
    assert answer.status_code == expected
    if role == "anonymous":
        assert answer["WWW-Authenticate"].startswith("Bearer")
        assert answer.json()["error"]["type"] == "authentication_error"
    if role == "outsider":
        assert "no project" in answer.json()["error"]["message"]


# Every /v1 route, by URL name: (method, path). A member's request is let in and refused
# as bad input where it has no body; tests/models_registry/test_permissions.py checks this
# set against the registry's URLs, so that coverage is checked in one place.
KEY_AUTH_ROUTES = {
    "openai_models": ("get", "/v1/models"),
    "openai_model": ("get", "/v1/models/tiny-chat"),
    "openai_chat_completions": ("post", "/v1/chat/completions"),
    "openai_rewards": ("post", "/v1/rewards"),
    "openai_unknown": ("get", "/v1/no-such-route"),
}


@pytest.mark.parametrize("route", list(KEY_AUTH_ROUTES))
@pytest.mark.parametrize("role", ["anonymous", "outsider", "labeler"])
def test_every_v1_route_needs_a_members_key(client, project, tiny, role, route):
    method, path = KEY_AUTH_ROUTES[route]
    if role == "anonymous":
        headers = {}
    elif role == "outsider":
        headers = _bearer(make_outsider_key(project))
    else:
        headers = _bearer(make_api_key(make_member(project, role, role)))

    if method == "get":
        answer = client.get(path, headers=headers)
    else:
        answer = client.post(path, {}, content_type="application/json", headers=headers)

    if role == "anonymous":
        assert answer.status_code == 401
        assert answer.json()["error"]["type"] == "authentication_error"
    elif role == "outsider":
        assert answer.status_code == 403
        assert "no project" in answer.json()["error"]["message"]
    else:
        assert answer.status_code not in (401, 403)


def test_a_logged_in_browser_session_also_reaches_the_api(client, login, project, tiny):
    login(make_member(project, Role.RESEARCHER, "browser"))

    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny-chat"


# --- the API key page ------------------------------------------------------------------


def test_the_key_page_makes_a_named_key_and_shows_it_once(client, login, project):
    user = make_member(project, Role.LABELER, "keyholder")
    login(user)

    first = client.post(
        "/account/api-key/", {"name": "laptop", "workspace": str(project.workspace.pk)}
    )
    row = ApiKey.objects.get(user=user)
    secret = first.context["secret"]
    again = client.get("/account/api-key/")

    assert secret in first.content.decode()
    assert secret not in again.content.decode()
    assert f"<code>{row.prefix}…</code>" in again.content.decode()
    assert (row.name, row.workspace, row.prefix) == ("laptop", project.workspace, secret[:8])
    assert client.get("/v1/models", headers=_bearer(secret)).status_code == 200


@pytest.mark.parametrize("method", ["get", "post"])
def test_the_key_page_needs_a_login(client, db, method):
    answer = getattr(client, method)("/account/api-key/")

    assert answer.status_code == 302
    assert answer["Location"] == "/login/?next=/account/api-key/"
    assert not ApiKey.objects.exists()


def test_log_probabilities_are_the_models_own(tiny, tiny_model_dir, member_key, client_for):
    import torch

    answer = client_for(member_key).chat.completions.create(
        model="tiny-chat", messages=HELLO, max_tokens=4, logprobs=True, top_logprobs=5, **SAMPLED
    )

    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens  # no EOS in 4 tokens here
    model, tokenizer = ml.load_policy(tiny_model_dir)
    prompt = tokenizer.apply_chat_template(HELLO, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer("".join(item.token for item in content), add_special_tokens=False)[
        "input_ids"
    ]
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prompt_ids + reply_ids])).logits[0]
    expected = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)
    for position, (item, token) in enumerate(zip(content, reply_ids, strict=True)):
        assert item.logprob == pytest.approx(float(expected[position, token]), abs=1e-4)
        tops = [t.logprob for t in item.top_logprobs]
        assert len(tops) == 5 and tops == sorted(tops, reverse=True)
        assert tops[0] == pytest.approx(float(expected[position].max()), abs=1e-4)
        assert bytes(item.bytes).decode() == item.token


def test_greedy_log_probabilities_put_the_chosen_token_first(tiny, member_key, client_for):
    answer = client_for(member_key).chat.completions.create(
        model="tiny-chat", messages=HELLO, max_tokens=3, temperature=0, logprobs=True,
        top_logprobs=2,
    )  # fmt: skip

    for item in answer.choices[0].logprobs.content:
        assert item.top_logprobs[0].token == item.token
        assert item.top_logprobs[0].logprob == pytest.approx(item.logprob)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"top_logprobs": 3}, "needs logprobs"),
        ({"logprobs": True, "stream": True}, "not streamed"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ],
)
def test_bad_log_probability_requests_are_refused(client, tiny, member_key, extra, message):
    answer = client.post(
        "/v1/chat/completions",
        {"model": "tiny-chat", "messages": HELLO, **extra},
        content_type="application/json",
        headers=_bearer(member_key),
    )

    assert answer.status_code == 400
    assert message in answer.json()["error"]["message"]
