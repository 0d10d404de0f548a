"""Arena battles: services, the interactive task on tiny models, pages and API, permissions."""

import random
import uuid
from collections import Counter

import pytest

from annotation.arena import selectors, services
from annotation.arena.tasks import arena_replies_generate_task
from annotation.models import ArenaBattle, Judgment, Prompt, Response, Role
from config.celery import QueueUnavailable
from config.errors import Conflict, ServiceError
from models_registry.models import ModelVersion
from models_registry.services import ensure_base_model_from_folder
from tests.factories import make_member, make_prompt, make_version

FAST = {"max_new_tokens": 4}
NAMES = ("tiny-alpha", "tiny-beta")


@pytest.fixture(autouse=True)
def _short_replies(monkeypatch):
    """Pages and the API start battles with the default parameters: keep replies short."""
    monkeypatch.setitem(services.DEFAULT_PARAMS, "max_new_tokens", 4)


@pytest.fixture
def versions(db, tiny_model_dir):
    """Two contestants on the same tiny weights: two registry rows, two names."""
    return [ensure_base_model_from_folder(name=name, path=tiny_model_dir) for name in NAMES]


@pytest.fixture
def pool(project):
    return [make_prompt(project, "What is RLHF?"), make_prompt(project, "Name a prime.")]


def _start(project, labeler, prompt_text=None, seed=0, params=FAST):
    return services.arena_battle_start(
        project=project,
        labeler=labeler,
        prompt_text=prompt_text,
        params=params,
        rng=random.Random(seed),
    )


def _ready(project, labeler, **extra):
    """A battle whose replies the worker's job wrote in this process."""
    battle = _start(project, labeler, **extra)
    services.arena_replies_generate(battle_id=battle.pk)
    battle.refresh_from_db()
    return battle


def _vote(battle, choice, client_id=None, labeler=None, time_spent_ms=0):
    return services.arena_vote(
        project=battle.project,
        labeler=labeler or battle.labeler,
        battle_id=battle.pk,
        choice=choice,
        client_id=client_id or uuid.uuid4(),
        time_spent_ms=time_spent_ms,
    )


@pytest.fixture
def battle(project, labeler, versions, pool):
    return _ready(project, labeler)


# --- services -------------------------------------------------------------------------


def test_a_full_battle_with_two_tiny_models(
    project, labeler, versions, pool, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        battle = _start(project, labeler, seed=3)

    assert len(callbacks) == 1
    assert battle.status == "queued"
    assert battle.prompt_source == "pool"
    assert battle.pool_prompt in pool
    assert battle.prompt.text == battle.pool_prompt.text
    assert battle.prompt.pk not in {p.pk for p in pool}
    assert battle.prompt.metadata["arena_battle"] == battle.pk
    assert {battle.version_a, battle.version_b} == set(versions)
    seed = battle.generation_params["seed"]

    arena_replies_generate_task.apply(args=[battle.pk])
    arena_replies_generate_task.apply(args=[battle.pk])  # a redelivered message does nothing

    battle.refresh_from_db()
    assert battle.status == "ready"
    replies = list(Response.objects.filter(prompt=battle.prompt))
    assert len(replies) == 2
    assert (battle.response_a.model_version, battle.response_b.model_version) == (
        battle.version_a,
        battle.version_b,
    )
    for reply in replies:
        assert reply.sample_index == 0
        assert reply.generation_params["seed"] == seed
        assert reply.generation_params["max_new_tokens"] == 4
        assert set(reply.generation_params["timing"]) == {"load_seconds", "generate_seconds"}
        assert 0 < reply.completion_tokens <= 4
        assert reply.generation_seconds > 0

    judgment = _vote(battle, "b", time_spent_ms=1500)

    battle.refresh_from_db()
    assert (battle.status, battle.judgment) == ("voted", judgment)
    assert battle.voted_at is not None
    assert judgment.kind == "arena"
    assert judgment.source == "human"
    assert (judgment.project, judgment.prompt, judgment.labeler) == (
        project,
        battle.prompt,
        labeler,
    )
    assert judgment.task is None
    assert (judgment.response_a, judgment.response_b) == (battle.response_a, battle.response_b)
    assert judgment.shown_order == [battle.response_a.pk, battle.response_b.pk]
    assert judgment.choice == "b"
    assert judgment.chosen_and_rejected == (battle.response_b, battle.response_a)
    assert judgment.time_spent_ms == 1500


def test_a_typed_prompt_is_the_battles_prompt(project, labeler, versions):
    battle = _start(project, labeler, prompt_text="  Write a haiku about *gradients*.  ")

    assert battle.prompt_source == "typed"
    assert battle.pool_prompt is None
    assert battle.prompt.text == "Write a haiku about *gradients*."
    assert battle.prompt.project == project


@pytest.mark.parametrize(
    ("prompt_text", "message"),
    [
        ("", "Write a prompt"),
        ("  \n ", "Write a prompt"),
        (["hi"], "Write a prompt"),
        (42, "Write a prompt"),
        ("x" * (services.MAX_PROMPT_CHARS + 1), "under 8000 characters"),
    ],
)
def test_a_bad_prompt_is_refused_and_stores_nothing(
    project, labeler, versions, pool, prompt_text, message
):
    with pytest.raises(ServiceError, match=message):
        _start(project, labeler, prompt_text=prompt_text)

    assert ArenaBattle.objects.count() == 0
    assert Prompt.objects.count() == len(pool)


def test_a_prompt_of_the_longest_length_is_taken(project, labeler, versions):
    battle = _start(project, labeler, prompt_text="x" * services.MAX_PROMPT_CHARS)

    assert len(battle.prompt.text) == services.MAX_PROMPT_CHARS


def test_bad_generation_parameters_are_refused(project, labeler, versions, pool):
    with pytest.raises(ServiceError, match="Bad generation parameters"):
        _start(project, labeler, params={"temperature": 0})

    assert ArenaBattle.objects.count() == 0


def test_an_empty_pool_asks_for_a_typed_prompt(project, labeler, versions):
    with pytest.raises(ServiceError, match="no prompts in its pool"):
        _start(project, labeler)

    assert ArenaBattle.objects.count() == 0
    assert Prompt.objects.count() == 0


@pytest.mark.parametrize("live", [0, 1])
def test_fewer_than_two_live_policies_is_a_clear_error(project, labeler, pool, live):
    for index in range(live):
        make_version(f"live-{index}")
    make_version("old", state=ModelVersion.State.RETIRED)
    make_version("rm", kind=ModelVersion.Kind.REWARD)

    with pytest.raises(ServiceError, match="needs two models that are not retired"):
        _start(project, labeler)
    with pytest.raises(ServiceError, match="needs two models"):
        _start(project, labeler, prompt_text="Typed")

    assert ArenaBattle.objects.count() == 0
    assert Prompt.objects.count() == len(pool)


def test_retired_versions_never_battle_and_candidates_do(project, labeler, pool):
    serving = make_version("serving")
    candidate = make_version("candidate", state=ModelVersion.State.CANDIDATE)
    other = make_version("other-serving")
    retired = make_version("retired", state=ModelVersion.State.RETIRED)
    make_version("reward", kind=ModelVersion.Kind.REWARD)

    battles = [_start(project, labeler, seed=seed) for seed in range(30)]

    drawn = Counter(v for b in battles for v in (b.version_a, b.version_b))
    assert retired not in drawn
    assert set(drawn) == {serving, candidate, other}


def test_pairs_with_fewer_battles_come_first_and_sides_are_random(project, labeler, pool):
    versions = [make_version(f"v{index}") for index in range(3)]

    battles = [_start(project, labeler, seed=seed) for seed in range(12)]

    pairs = [frozenset((b.version_a_id, b.version_b_id)) for b in battles]
    # Every pair once in each round of three battles.
    for start in range(0, 12, 3):
        assert len(set(pairs[start : start + 3])) == 3
    assert Counter(pairs) == {frozenset((a.pk, b.pk)): 4 for a, b in _pairs(versions)}
    assert all(b.version_a_id != b.version_b_id for b in battles)
    # Sides: each version is A in some battles and B in others.
    for version in versions:
        sides = {("a" if b.version_a == version else "b") for b in battles if version in _vs(b)}
        assert sides == {"a", "b"}


def test_a_new_candidate_meets_everyone_before_a_pair_repeats(project, labeler, pool):
    first, second = make_version("first"), make_version("second")
    _start(project, labeler, seed=1)
    newcomer = make_version("newcomer", state=ModelVersion.State.CANDIDATE)

    battles = [_start(project, labeler, seed=seed) for seed in range(2, 4)]

    assert [newcomer in _vs(b) for b in battles] == [True, True]
    assert {v for b in battles for v in _vs(b)} == {first, second, newcomer}


def _pairs(versions):
    return [(a, b) for i, a in enumerate(versions) for b in versions[i + 1 :]]


def _vs(battle):
    return (battle.version_a, battle.version_b)


def test_battle_prompts_and_replies_never_enter_the_labeling_pool(project, labeler, versions, pool):
    pooled = _ready(project, labeler)
    typed = _ready(project, labeler, prompt_text="A typed one")

    assert set(Prompt.objects.labeling()) == set(pool)
    assert Response.objects.labeling().count() == 0
    assert Prompt.objects.filter(battle__in=[pooled, typed]).count() == 2
    assert Response.objects.filter(prompt__battle__in=[pooled, typed]).count() == 4


def test_the_same_client_id_twice_stores_one_vote(battle):
    client_id = uuid.uuid4()

    first = _vote(battle, "a", client_id=client_id)
    second = _vote(battle, "a", client_id=str(client_id))

    assert first.pk == second.pk
    assert Judgment.objects.count() == 1


def test_a_second_vote_on_a_voted_battle_is_a_conflict(battle):
    _vote(battle, "tie")

    with pytest.raises(Conflict, match="already voted"):
        _vote(battle, "a")

    battle.refresh_from_db()
    assert Judgment.objects.get().choice == "tie"
    assert battle.judgment.choice == "tie"


def test_a_client_id_of_another_judgment_is_a_conflict(project, labeler, battle):
    other = _ready(project, labeler, seed=5)
    client_id = uuid.uuid4()
    _vote(battle, "a", client_id=client_id)

    with pytest.raises(Conflict, match="already used"):
        _vote(other, "a", client_id=client_id)

    other.refresh_from_db()
    assert (other.status, other.judgment) == ("ready", None)


def test_voting_before_the_replies_exist_is_refused(project, labeler, versions, pool):
    battle = _start(project, labeler)

    with pytest.raises(Conflict, match="not there yet"):
        _vote(battle, "a")

    assert Judgment.objects.count() == 0


BAD_VOTES = [
    ("left", uuid.uuid4(), 0, "choice must be one of"),
    ("A", uuid.uuid4(), 0, "choice must be one of"),
    ("", uuid.uuid4(), 0, "choice must be one of"),
    (None, uuid.uuid4(), 0, "choice must be one of"),
    ("a", "not-a-uuid", 0, "client_id must be a UUID"),
    ("a", None, 0, "client_id must be a UUID"),
    ("a", uuid.uuid4(), -1, "time_spent_ms"),
    ("a", uuid.uuid4(), "5", "time_spent_ms"),
    ("a", uuid.uuid4(), True, "time_spent_ms"),
]


def test_a_bad_vote_is_refused_and_stores_nothing(battle):
    for choice, client_id, time_spent_ms, message in BAD_VOTES:
        with pytest.raises(ServiceError, match=message):
            services.arena_vote(
                project=battle.project,
                labeler=battle.labeler,
                battle_id=battle.pk,
                choice=choice,
                client_id=client_id,
                time_spent_ms=time_spent_ms,
            )

    assert Judgment.objects.count() == 0
    battle.refresh_from_db()
    assert (battle.status, battle.judgment) == ("ready", None)


def test_another_labelers_battle_is_not_found_anywhere(project, battle):
    other = make_member(project, Role.LABELER, "other-labeler")
    admin = make_member(project, Role.ADMIN, "other-admin")
    where = {"project": project, "battle_id": battle.pk}

    for intruder in (other, admin):
        with pytest.raises(selectors.BattleNotFound):
            selectors.arena_battle_for(labeler=intruder, **where)
        with pytest.raises(selectors.BattleNotFound):
            services.arena_vote(labeler=intruder, choice="a", client_id=uuid.uuid4(), **where)
        with pytest.raises(selectors.BattleNotFound):
            services.arena_battle_retry(labeler=intruder, **where)
        assert list(selectors.arena_battles_for(project=project, labeler=intruder)) == []
    battle.refresh_from_db()
    assert battle.status == "ready"
    assert Judgment.objects.count() == 0


def test_a_battle_of_another_project_is_not_found(battle, other_project):
    make_member(other_project, Role.LABELER, "lab-beta")

    with pytest.raises(selectors.BattleNotFound):
        selectors.arena_battle_for(
            project=other_project, labeler=battle.labeler, battle_id=battle.pk
        )


def test_a_broken_model_fails_the_battle_and_a_retry_writes_only_the_missing_reply(
    project, labeler, versions, pool, tmp_path, django_capture_on_commit_callbacks
):
    good = versions[0]
    broken = make_version("broken", path=str(tmp_path / "no-weights"))
    ModelVersion.objects.filter(pk=versions[1].pk).update(state=ModelVersion.State.RETIRED)
    battle = _start(project, labeler, seed=1)  # a seed that puts the good model first
    assert (battle.version_a, battle.version_b) == (good, broken)

    services.arena_replies_generate(battle_id=battle.pk)

    battle.refresh_from_db()
    assert battle.status == "failed"
    assert battle.error
    kept = Response.objects.get(prompt=battle.prompt)
    assert kept.model_version == good
    with pytest.raises(Conflict, match="not there yet"):
        _vote(battle, "a")

    # The admin fixes the weights; the labeler retries.
    ModelVersion.objects.filter(pk=broken.pk).update(base_path=good.base_path)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.arena_battle_retry(project=project, labeler=labeler, battle_id=battle.pk)
    assert len(callbacks) == 1
    battle.refresh_from_db()
    assert (battle.status, battle.error) == ("queued", "")
    services.arena_replies_generate(battle_id=battle.pk)

    battle.refresh_from_db()
    assert battle.status == "ready"
    assert kept in (battle.response_a, battle.response_b)
    assert Response.objects.filter(prompt=battle.prompt).count() == 2
    with pytest.raises(Conflict, match="Only a failed battle"):
        services.arena_battle_retry(project=project, labeler=labeler, battle_id=battle.pk)


def test_an_unreachable_broker_is_reported_on_the_battle(
    project, labeler, versions, pool, unreachable_broker, django_capture_on_commit_callbacks
):
    with (
        pytest.raises(QueueUnavailable, match="task queue could not be reached"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        _start(project, labeler)

    battle = ArenaBattle.objects.get()
    assert battle.status == "failed"
    assert "task queue could not be reached" in battle.error
    assert Response.objects.count() == 0


# --- pages ----------------------------------------------------------------------------


def test_names_are_hidden_until_the_vote_and_shown_after(login, project, labeler, versions, pool):
    client = login(labeler)
    htmx = {"HTTP_HX_REQUEST": "true"}

    started = client.post(f"/p/{project.slug}/arena/", {"source": "pool"})
    battle = ArenaBattle.objects.get()
    base = f"/p/{project.slug}/arena/{battle.pk}/"
    waiting = client.get(base).content.decode()
    services.arena_replies_generate(battle_id=battle.pk)
    battle.refresh_from_db()
    ready = client.get(base, **htmx).content.decode()
    listed_before = client.get(f"/p/{project.slug}/arena/").content.decode()
    voted = client.post(f"{base}vote/", {"choice": "a", "client_id": str(uuid.uuid4())}, **htmx)
    revealed = client.get(base).content.decode()
    listed_after = client.get(f"/p/{project.slug}/arena/").content.decode()

    assert started.status_code == 302
    assert started["Location"] == base
    assert 'hx-trigger="every 1s"' in waiting and "data-thinking" in waiting
    assert ready.strip().startswith('<section id="task"')
    assert "every 1s" not in ready
    assert "Model A" in ready and "Model B" in ready
    for key in ("1 a", "2 b", "3 t", "4 x"):
        assert f'data-key="{key}"' in ready
    for page in (waiting, ready, listed_before):
        for name in NAMES:
            assert name not in page
    assert f'data-response="{battle.response_a_id}"' in ready
    assert voted.status_code == 200
    fragment = voted.content.decode()
    assert "data-revealed" in fragment and "Next battle" in fragment
    for page in (fragment, revealed):
        assert f"Model A was <strong>{battle.version_a.name}</strong>" in page
        assert f"Model B was <strong>{battle.version_b.name}</strong>" in page
    assert f"<strong>{battle.version_a.name}</strong> (A) beat {battle.version_b.name}" in (
        listed_after
    )
    assert Judgment.objects.get().choice == "a"


def test_a_typed_prompt_from_the_page(login, project, labeler, versions):
    response = login(labeler).post(
        f"/p/{project.slug}/arena/", {"source": "typed", "prompt": "Why is the sky blue?"}
    )

    battle = ArenaBattle.objects.get()
    assert response["Location"] == f"/p/{project.slug}/arena/{battle.pk}/"
    assert (battle.prompt.text, battle.prompt_source) == ("Why is the sky blue?", "typed")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"source": "typed", "prompt": "  "}, "Write a prompt for the two models first."),
        ({"source": "typed", "prompt": "x" * 8001}, "Keep the prompt under 8000 characters."),
        ({"source": "pool"}, "no prompts in its pool yet"),
    ],
)
def test_a_refused_start_shows_the_error_and_stores_nothing(
    login, project, labeler, versions, data, message
):
    response = login(labeler).post(f"/p/{project.slug}/arena/", data)

    assert response.status_code == 400
    assert message in response.content.decode()
    assert ArenaBattle.objects.count() == 0
    assert Prompt.objects.count() == 0


def test_the_page_says_when_there_are_not_two_models(login, project, labeler, pool):
    make_version("lonely")
    client = login(labeler)

    page = client.get(f"/p/{project.slug}/arena/").content.decode()
    refused = client.post(f"/p/{project.slug}/arena/", {"source": "pool"})

    assert "there is one yet" in page
    assert refused.status_code == 400
    assert "needs two models that are not retired" in refused.content.decode()
    assert ArenaBattle.objects.count() == 0


def test_a_second_vote_from_the_page_shows_the_conflict(login, project, labeler, battle):
    _vote(battle, "b")
    client = login(labeler)

    response = client.post(
        f"/p/{project.slug}/arena/{battle.pk}/vote/",
        {"choice": "a", "client_id": str(uuid.uuid4())},
        HTTP_HX_REQUEST="true",
    )

    assert response.status_code == 409
    html = response.content.decode()
    assert "You already voted in this battle" in html
    assert "data-revealed" in html
    assert Judgment.objects.get().choice == "b"


def test_a_failed_battle_shows_the_error_and_the_retry_key(login, project, labeler, pool):
    make_version("broken-1")
    make_version("broken-2")
    battle = _start(project, labeler)
    services.arena_replies_generate(battle_id=battle.pk)

    html = login(labeler).get(f"/p/{project.slug}/arena/{battle.pk}/").content.decode()

    assert "The replies could not be written" in html
    assert 'data-key="r"' in html
    assert "broken-1" not in html and "broken-2" not in html


def test_a_vote_without_javascript_redirects_to_the_revealed_battle(
    login, project, labeler, battle
):
    client = login(labeler)
    base = f"/p/{project.slug}/arena/{battle.pk}/"

    response = client.post(f"{base}vote/", {"choice": "both_bad", "client_id": str(uuid.uuid4())})
    page = client.get(response["Location"]).content.decode()

    assert (response.status_code, response["Location"]) == (302, base)
    assert "data-revealed" in page and "Both are bad" in page


# --- API ------------------------------------------------------------------------------


def test_a_whole_battle_through_the_api(login, project, labeler, versions, pool):
    client = login(labeler)
    api = f"/api/projects/{project.slug}/battles/"

    started = client.post(api, {}, content_type="application/json")
    battle_id = started.json()["id"]
    services.arena_replies_generate(battle_id=battle_id)
    detail = client.get(f"{api}{battle_id}/").json()
    vote = {"choice": "tie", "client_id": str(uuid.uuid4()), "time_spent_ms": 900}
    voted = client.post(f"{api}{battle_id}/vote/", vote, content_type="application/json")
    again = client.post(f"{api}{battle_id}/vote/", vote, content_type="application/json")
    other = {**vote, "choice": "a", "client_id": str(uuid.uuid4())}
    conflict = client.post(f"{api}{battle_id}/vote/", other, content_type="application/json")
    listed = client.get(api).json()

    battle = ArenaBattle.objects.get()
    assert started.status_code == 201
    assert started.json()["status"] == "queued"
    assert started.json()["models"] == {"a": None, "b": None}
    assert started.json()["prompt_source"] == "pool"
    assert detail["status"] == "ready"
    assert detail["models"] == {"a": None, "b": None}
    assert detail["replies"]["a"]["id"] == battle.response_a_id
    assert detail["replies"]["b"]["id"] == battle.response_b_id
    for payload in (started.json(), detail):
        for name in NAMES:
            assert name not in str(payload)
    assert (voted.status_code, again.status_code, conflict.status_code) == (201, 200, 409)
    assert "already voted" in conflict.json()["detail"]
    revealed = voted.json()
    assert revealed["status"] == "voted"
    assert revealed["models"] == {
        "a": {"id": battle.version_a_id, "name": battle.version_a.name},
        "b": {"id": battle.version_b_id, "name": battle.version_b.name},
    }
    assert revealed["vote"]["choice"] == "tie"
    assert revealed["vote"]["kind"] == "arena"
    assert revealed["vote"]["shown_order"] == [battle.response_a_id, battle.response_b_id]
    assert revealed["vote"]["time_spent_ms"] == 900
    assert again.json()["vote"]["id"] == revealed["vote"]["id"]
    assert Judgment.objects.count() == 1
    assert [b["id"] for b in listed] == [battle_id]
    assert listed[0]["models"]["a"]["name"] == battle.version_a.name


def test_a_typed_prompt_through_the_api(login, project, labeler, versions):
    response = login(labeler).post(
        f"/api/projects/{project.slug}/battles/",
        {"prompt": "Say hi"},
        content_type="application/json",
    )

    assert response.status_code == 201
    assert response.json()["prompt"]["text"] == "Say hi"
    assert response.json()["prompt_source"] == "typed"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": ""}, "Write a prompt"),
        ({"prompt": "x" * 8001}, "under 8000 characters"),
        ({"prompt": 5}, "Write a prompt"),
        (["prompt"], "Send a JSON object"),
    ],
)
def test_a_bad_start_through_the_api_is_a_400_and_stores_nothing(
    login, project, labeler, versions, pool, body, message
):
    response = login(labeler).post(
        f"/api/projects/{project.slug}/battles/", body, content_type="application/json"
    )

    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert ArenaBattle.objects.count() == 0
    assert Prompt.objects.count() == len(pool)


def test_fewer_than_two_models_through_the_api(login, project, labeler, pool):
    make_version("lonely")

    response = login(labeler).post(
        f"/api/projects/{project.slug}/battles/", {}, content_type="application/json"
    )

    assert response.status_code == 400
    assert "needs two models" in response.json()["detail"]
    assert ArenaBattle.objects.count() == 0


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("vote/", {"choice": "left", "client_id": str(uuid.uuid4())}, 400, "choice must be"),
        ("vote/", {"choice": "a", "client_id": "x"}, 400, "client_id must be a UUID"),
        ("vote/", {"choice": "a", "client_id": str(uuid.uuid4()), "time_spent_ms": -5}, 400, ""),
        ("vote/", ["a"], 400, "Send a JSON object"),
        ("retry/", {}, 409, "Only a failed battle"),
    ],
)
def test_bad_api_input_on_a_battle_gets_a_clear_error(
    login, labeler, battle, path, body, status, message
):
    response = login(labeler).post(
        f"/api/projects/{battle.project.slug}/battles/{battle.pk}/{path}",
        body,
        content_type="application/json",
    )

    assert response.status_code == status
    assert message in response.json()["detail"]
    battle.refresh_from_db()
    assert (battle.status, battle.judgment) == ("ready", None)
    assert Judgment.objects.count() == 0


# --- permissions ----------------------------------------------------------------------

CALLERS = ("anonymous", "outsider", "owner", "labeler", "researcher", "admin")


@pytest.fixture
def caller(project, labeler, researcher, admin_member, outsider):
    """Users by name; `owner` is the labeler who owns `battle`, `labeler` another one."""
    return {
        "anonymous": None,
        "outsider": outsider,
        "owner": labeler,
        "labeler": make_member(project, Role.LABELER, "second-labeler"),
        "researcher": researcher,
        "admin": admin_member,
    }


def _project_routes(slug) -> dict:
    """Routes of the project as a whole: (method, url, body, status for a member)."""
    return {
        "GET arena": ("get", f"/p/{slug}/arena/", None, 200),
        "POST arena": ("post", f"/p/{slug}/arena/", {"source": "pool"}, 302),
        "GET api_battles": ("get", f"/api/projects/{slug}/battles/", None, 200),
        "POST api_battles": ("post_json", f"/api/projects/{slug}/battles/", {}, 201),
    }


def _battle_routes(slug, battle_id) -> dict:
    """Routes of one battle: (method, url, body, status for its owner). The battle is
    ready, so retrying it is a refusal the owner is allowed to hear (409)."""
    page = f"/p/{slug}/arena/{battle_id}/"
    api = f"/api/projects/{slug}/battles/{battle_id}/"
    vote = {"choice": "a", "client_id": str(uuid.uuid4())}
    return {
        "GET arena_battle": ("get", page, None, 200),
        "POST arena_vote": ("post", f"{page}vote/", vote, 302),
        "POST arena_retry": ("post", f"{page}retry/", {}, 302),
        "GET api_battle": ("get", api, None, 200),
        "POST api_battle_vote": ("post_json", f"{api}vote/", vote, 201),
        "POST api_battle_retry": ("post_json", f"{api}retry/", {}, 409),
    }


def _call(client, method, url, body):
    if method == "get":
        return client.get(url)
    if method == "post_json":
        return client.post(url, body, content_type="application/json")
    return client.post(url, body)


# Every arena route, each checked here for every caller (tests/annotation/test_permissions.py
# holds the annotation table and checks this set against the arena URLs).
ARENA_ROUTES_FOR_EVERY_CALLER = {
    route.split()[1] for route in [*_project_routes("x"), *_battle_routes("x", 1)]
}


@pytest.mark.parametrize("route", list(_project_routes("x")))
@pytest.mark.parametrize("name", CALLERS)
def test_project_routes_are_for_members_with_label(
    login, project, caller, versions, pool, name, route
):
    method, url, body, allowed = _project_routes(project.slug)[route]
    client = login(caller[name])

    response = _call(client, method, url, body)

    is_api = url.startswith("/api/")
    expected = {"anonymous": 401 if is_api else 302, "outsider": 403}.get(name, allowed)
    assert response.status_code == expected
    if name == "anonymous" and not is_api:
        assert response["Location"].startswith("/login/")
    created = route in ("POST arena", "POST api_battles") and name not in ("anonymous", "outsider")
    assert ArenaBattle.objects.count() == (1 if created else 0)
    if created:
        assert ArenaBattle.objects.get().labeler == caller[name]


@pytest.mark.parametrize("route", list(_battle_routes("x", 1)))
@pytest.mark.parametrize("name", CALLERS)
def test_battle_routes_are_for_the_owner_only(login, project, caller, battle, name, route):
    method, url, body, allowed = _battle_routes(project.slug, battle.pk)[route]
    client = login(caller[name])

    response = _call(client, method, url, body)

    is_api = url.startswith("/api/")
    refused = {"anonymous": 401 if is_api else 302, "outsider": 403}
    expected = refused.get(name, allowed if name == "owner" else 404)
    assert response.status_code == expected
    battle.refresh_from_db()
    voted = name == "owner" and route in ("POST arena_vote", "POST api_battle_vote")
    assert battle.status == ("voted" if voted else "ready")
    assert Judgment.objects.count() == (1 if voted else 0)


@pytest.mark.parametrize("name", ["researcher", "admin"])
def test_researchers_and_admins_battle_on_their_own(login, project, caller, versions, pool, name):
    client = login(caller[name])
    api = f"/api/projects/{project.slug}/battles/"

    started = client.post(api, {}, content_type="application/json")
    battle_id = started.json()["id"]
    services.arena_replies_generate(battle_id=battle_id)
    page = client.get(f"/p/{project.slug}/arena/{battle_id}/")
    voted = client.post(
        f"{api}{battle_id}/vote/",
        {"choice": "b", "client_id": str(uuid.uuid4())},
        content_type="application/json",
    )

    assert (started.status_code, page.status_code, voted.status_code) == (201, 200, 201)
    assert Judgment.objects.get().labeler == caller[name]


def test_the_nav_links_to_the_arena(login, project, labeler):
    html = login(labeler).get(f"/p/{project.slug}/").content.decode()

    assert f'href="/p/{project.slug}/arena/"' in html
