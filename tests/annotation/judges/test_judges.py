"""Pairwise AI judge jobs end to end: a tiny local model, this product's own
OpenAI-compatible endpoint, and scripted endpoints that fail (500s, timeouts, garbage)."""

import random
import uuid

import pytest
from django.db import connection

from annotation.judges import jobs, prompts, selectors, services
from annotation.judges.backends import LocalBackend
from annotation.models import Constitution, Judge, JudgeJob, Judgment, Role
from config.celery import app as celery_app
from config.errors import Conflict, ServiceError
from models_registry.models import ModelVersion
from models_registry.services import ensure_base_model_from_folder
from tests.annotation.judges.fake_endpoint import Answer, FakeEndpoint, completion, option_text
from tests.factories import make_api_key, make_member, make_task, make_version

KEY = "sk-judge-secret-key-0123456789abcdef"


@pytest.fixture(autouse=True)
def _fast_remote(settings):
    settings.AI_JUDGE_TIMEOUT_S = 0.3
    settings.AI_JUDGE_MAX_RETRIES = 2
    settings.AI_JUDGE_BACKOFF_S = 0.02


@pytest.fixture
def memory_broker(monkeypatch):
    """Jobs started with the database committing for real go to an in-memory broker."""
    saved = celery_app.conf.broker_url, celery_app.conf.broker_transport_options
    # kombu keeps producer pools per URL for the process: a fresh URL gets a fresh pool.
    url = f"memory://localhost/{uuid.uuid4().hex}"
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    celery_app.conf.broker_url = url
    celery_app.conf.broker_transport_options = {}
    _drop_pool()
    yield
    celery_app.conf.broker_url, celery_app.conf.broker_transport_options = saved
    _drop_pool()


def _drop_pool():
    if celery_app._pool is not None:
        celery_app._pool.force_close_all()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def constitution(db):
    return services.ensure_default_constitution()


def _tasks(project, count):
    return [make_task(project, texts=(f"good answer {i}", f"bad answer {i}")) for i in range(count)]


def _remote_judge(
    workspace,
    url,
    constitution,
    *,
    name="remote",
    chain_of_thought=False,
    key=KEY,
    model="judge-model",
):
    return services.judge_create(
        workspace=workspace,
        name=name,
        backend="remote",
        endpoint_url=url,
        endpoint_model=model,
        api_key=key,
        constitution=constitution,
        chain_of_thought=chain_of_thought,
    )


def _start(project, judge, *, options=None, budget=200):
    return jobs.judge_job_start(
        project=project,
        judge=judge,
        kind="pairwise",
        options=options or {},
        max_requests=budget,
    )


def _run(job):
    jobs.judge_job_execute(job_id=job.pk)
    job.refresh_from_db()
    return job


def _prefers_good(number, payload):
    """A sensible judge with log-probs: P(A) = 0.9 when (A) is the good answer."""
    p_a = 0.9 if option_text(payload, "A").startswith("good") else 0.1
    return Answer(body=completion("A", {"A": p_a, "B": 1 - p_a}))


def _assert_key_hidden(job):
    job.refresh_from_db()
    assert KEY not in job.error
    assert KEY not in job.log


# --- a tiny local model -----------------------------------------------------------------------


@pytest.fixture
def tiny_version(db, tiny_model_dir):
    return make_version("tiny-judge", path=str(tiny_model_dir))


def test_a_local_judge_judges_both_orders_and_stores_the_mean_as_soft_label(
    project, constitution, tiny_version, tiny_model_dir
):
    tasks = _tasks(project, 3)
    judge = services.judge_create(
        workspace=project.workspace,
        name="tiny",
        backend="local",
        model_version=tiny_version,
        constitution=constitution,
    )

    job = _run(_start(project, judge, options={"limit": 3}))

    assert (job.status, job.total, job.done, job.failed, job.error) == ("succeeded", 3, 3, 0, "")
    assert job.requests_made == 6  # two orders per pair, one forward pass each
    judgments = Judgment.objects.filter(judge_job=job).order_by("task_id")
    assert [j.task for j in judgments] == tasks
    backend = LocalBackend(str(tiny_model_dir))
    names = {p["name"]: p for p in constitution.principles}
    for judgment in judgments:
        a, b = judgment.task.ordered_responses()
        assert (judgment.response_a, judgment.response_b) == (a, b)
        assert (judgment.kind, judgment.source, judgment.labeler) == ("comparison", "ai", None)
        assert (judgment.judge, judgment.judge_job, judgment.constitution) == (
            judge,
            job,
            constitution,
        )
        principle = names[judgment.principle]
        conversation = [{"role": "user", "content": judgment.prompt.text}]
        p1 = backend.choice_probabilities(
            prompts.comparison_messages(conversation, a.text, b.text, principle), ["A", "B"]
        )
        p2 = backend.choice_probabilities(
            prompts.comparison_messages(conversation, b.text, a.text, principle), ["A", "B"]
        )
        first, second = judgment.ai_details["orders"]
        assert first["shown_order"] == [a.pk, b.pk]
        assert second["shown_order"] == [b.pk, a.pk]
        assert first["probabilities"] == pytest.approx(p1)
        assert second["probabilities"] == pytest.approx(p2)
        assert first["p_x"] == pytest.approx(p1["A"])
        assert second["p_x"] == pytest.approx(p2["B"])
        assert judgment.soft_label == pytest.approx((p1["A"] + p2["B"]) / 2)
        expected_choice = "a" if judgment.soft_label > 0.5 else "b"
        assert judgment.choice == expected_choice
        assert judgment.ai_details["method"] == "logprobs"
        assert judgment.ai_details["agree"] == ((p1["A"] > 0.5) == (p2["B"] > 0.5))
        assert judgment.shown_order == [a.pk, b.pk]


def test_a_local_chain_of_thought_judge_critiques_then_clamps(project, constitution, tiny_version):
    _tasks(project, 1)
    judge = services.judge_create(
        workspace=project.workspace,
        name="tiny-cot",
        backend="local",
        model_version=tiny_version,
        constitution=constitution,
        chain_of_thought=True,
    )

    job = _run(_start(project, judge, options={"critique_max_tokens": 8}))

    assert (job.status, job.done, job.requests_made) == ("succeeded", 1, 4)
    judgment = Judgment.objects.get(judge_job=job)
    for order in judgment.ai_details["orders"]:
        assert order["p_x"] == pytest.approx(min(max(order["p_x_raw"], 0.4), 0.6))
        assert 0.4 <= order["p_x"] <= 0.6
        assert order["method"] == "logprobs"
    assert 0.4 <= judgment.soft_label <= 0.6


def test_a_confident_chain_of_thought_judge_is_clamped_to_40_60(project, constitution):
    _tasks(project, 2)

    def script(number, payload):
        if payload.get("logprobs"):
            return _prefers_good(number, payload)
        return Answer(body=completion("The good one is kinder."))

    with FakeEndpoint(script) as endpoint:
        judge = _remote_judge(project.workspace, endpoint.url, constitution, chain_of_thought=True)
        job = _run(_start(project, judge))

    assert (job.status, job.done, job.requests_made) == ("succeeded", 2, 8)
    for judgment in Judgment.objects.filter(judge_job=job):
        orders = judgment.ai_details["orders"]
        assert [o["p_x_raw"] for o in orders] == pytest.approx([0.9, 0.9])
        assert [o["p_x"] for o in orders] == pytest.approx([0.6, 0.6])
        assert judgment.soft_label == pytest.approx(0.6)
        assert judgment.choice == "a"
        assert "The good one is kinder." in judgment.rationale
        assert judgment.ai_details["agree"] is True


def test_a_judge_biased_to_the_first_position_gives_ties_not_wins(project, constitution):
    _tasks(project, 2)
    always_a = completion("A", {"A": 0.8, "B": 0.2})

    with FakeEndpoint(lambda n, p: Answer(body=always_a)) as endpoint:
        job = _run(_start(project, _remote_judge(project.workspace, endpoint.url, constitution)))

    assert job.status == "succeeded"
    for judgment in Judgment.objects.filter(judge_job=job):
        assert judgment.soft_label == pytest.approx(0.5)
        assert judgment.choice == "tie"
        assert judgment.ai_details["agree"] is False
        assert judgment.ai_details["unsure"] is True


def test_principles_are_drawn_per_pair_seeded_by_the_job(project, constitution):
    _tasks(project, 6)

    with FakeEndpoint(_prefers_good) as endpoint:
        judge = _remote_judge(project.workspace, endpoint.url, constitution)
        job = _run(_start(project, judge))

    drawn = list(
        Judgment.objects.filter(judge_job=job)
        .order_by("task_id")
        .values_list("principle", flat=True)
    )
    rng = random.Random(job.pk)
    assert drawn == [rng.choice(constitution.principles)["name"] for _ in range(6)]


# --- this product's own OpenAI-compatible endpoint -------------------------------------------


@pytest.mark.timeout(120)
def test_the_products_own_endpoint_as_remote_judge_asks_twice_per_order_and_gets_no_verdict(
    transactional_db, live_server, tiny_model_dir, memory_broker, settings
):
    """Every request reaches the live server's /v1 and is answered, and the job fails each
    pair with the judge's (empty) words. Greedy, the tiny random model (two layers of width
    32, tied embeddings) predicts the prompt's last token again, the newline after
    "assistant", and again after that, so every verdict is empty once stripped; its five
    likeliest first tokens are that newline and near-ties among random tokens, never "A" or
    "B" under any principle of the default constitution in either order, so the log-prob
    reading gives nothing either: the principle the job id draws per pair changes none of
    this."""
    from tests.factories import make_project

    settings.AI_JUDGE_TIMEOUT_S = 60  # the first request loads the model

    project = make_project("own")
    ensure_base_model_from_folder(name="tiny-chat", path=tiny_model_dir)
    key = make_api_key(make_member(project, Role.LABELER, "api-user"))
    constitution = services.ensure_default_constitution()
    tasks = sorted(_tasks(project, 2), key=lambda task: task.pk)
    judge = _remote_judge(
        project.workspace, f"{live_server.url}/v1", constitution, key=key, model="tiny-chat"
    )
    job = _start(project, judge)  # queued on the in-memory broker; the test is the worker

    job = _run(job)

    # Each order asks for log-probs, then, with neither label among them, for a verdict.
    assert job.requests_made == 2 * 2 * 2
    assert (job.status, job.done, job.failed, job.total) == ("failed", 0, 2, 2)
    reasons = [
        f"task {task.pk}: The judge named neither option in either order (it wrote ''; '')."
        for task in tasks
    ]
    assert job.error == f"2 of 2 items failed (last: {reasons[1]})"
    lines = [line.split(" ", 2)[2] for line in job.log.splitlines()]
    assert [line for line in lines if line.startswith("Item failed: ")] == [
        f"Item failed: {reason}" for reason in reasons
    ]
    assert not Judgment.objects.exists()
    assert key not in job.log and key not in job.error


# --- failing endpoints ---------------------------------------------------------------------


def test_500s_fail_the_job_after_retries_with_backoff(project, constitution):
    _tasks(project, 2)

    with FakeEndpoint(lambda n, p: Answer(500, b"internal error")) as endpoint:
        job = _run(_start(project, _remote_judge(project.workspace, endpoint.url, constitution)))

    assert job.status == "failed"
    assert "HTTP 500" in job.error
    assert "after 3 tries" in job.error
    assert len(endpoint.hits) == 3  # one request, retried twice
    first_gap, second_gap = endpoint.gaps()
    assert first_gap >= 0.02 and second_gap >= 0.04
    assert job.requests_made == 1  # the budget counts requests, not retries
    assert not Judgment.objects.exists()
    _assert_key_hidden(job)


def test_an_endpoint_that_breaks_midway_leaves_a_partial_job_with_its_judgments(
    project, constitution
):
    _tasks(project, 3)

    def script(number, payload):
        return _prefers_good(number, payload) if number <= 2 else Answer(502, b"bad gateway")

    with FakeEndpoint(script) as endpoint:
        job = _run(_start(project, _remote_judge(project.workspace, endpoint.url, constitution)))

    assert (job.status, job.done, job.total) == ("partial", 1, 3)
    assert "HTTP 502" in job.error
    judgment = Judgment.objects.get(judge_job=job)
    assert judgment.choice == "a"
    assert judgment.soft_label == pytest.approx(0.9)


def test_a_transient_500_is_retried_and_the_job_succeeds(project, constitution):
    _tasks(project, 1)

    def script(number, payload):
        return Answer(500) if number == 1 else _prefers_good(number, payload)

    with FakeEndpoint(script) as endpoint:
        job = _run(_start(project, _remote_judge(project.workspace, endpoint.url, constitution)))

    assert (job.status, job.done, len(endpoint.hits), job.requests_made) == ("succeeded", 1, 3, 2)


def test_timeouts_fail_the_job_with_a_clear_message(project, constitution):
    _tasks(project, 1)

    with FakeEndpoint(lambda n, p: Answer(body=completion("A"), delay=1.0)) as endpoint:
        job = _run(_start(project, _remote_judge(project.workspace, endpoint.url, constitution)))

    assert job.status == "failed"
    assert "did not answer within 0.3 s (timeout)" in job.error
    assert len(endpoint.hits) == 3
    assert not Judgment.objects.exists()


def test_a_garbage_body_fails_at_once(project, constitution):
    _tasks(project, 2)

    with FakeEndpoint(lambda n, p: Answer(body=b"<html>")) as endpoint:
        job = _run(_start(project, _remote_judge(project.workspace, endpoint.url, constitution)))

    assert job.status == "failed"
    assert "not JSON" in job.error
    assert len(endpoint.hits) == 1


def test_unparseable_verdicts_fail_each_item_with_a_clear_message(project, constitution):
    _tasks(project, 2)

    with FakeEndpoint(lambda n, p: Answer(body=completion("lorem ipsum dolor"))) as endpoint:
        job = _run(_start(project, _remote_judge(project.workspace, endpoint.url, constitution)))

    assert (job.status, job.done, job.failed, job.total) == ("failed", 0, 2, 2)
    assert "2 of 2 items failed" in job.error
    assert "named neither option in either order" in job.error
    assert "lorem ipsum" in job.error
    assert not Judgment.objects.exists()
    assert job.requests_made == 3 + 2


def test_some_unparseable_verdicts_make_a_partial_job(project, constitution):
    tasks = _tasks(project, 2)

    def script(number, payload):
        good_first = option_text(payload, "A").startswith("good")
        if option_text(payload, "A").endswith(" 0"):  # the first task: a clear verdict
            return Answer(body=completion("(A)" if good_first else "Answer: B"))
        return Answer(body=completion("???"))

    with FakeEndpoint(script) as endpoint:
        job = _run(_start(project, _remote_judge(project.workspace, endpoint.url, constitution)))

    assert (job.status, job.done, job.failed) == ("partial", 1, 1)
    assert "1 of 2 items failed" in job.error
    judgment = Judgment.objects.get(judge_job=job)
    assert judgment.task == tasks[0]
    assert (judgment.soft_label, judgment.choice) == (1.0, "a")
    assert [o["verdict_text"] for o in judgment.ai_details["orders"]] == ["(A)", "Answer: B"]


def test_the_budget_stops_the_job_as_partial(project, constitution):
    _tasks(project, 3)

    with FakeEndpoint(_prefers_good) as endpoint:
        judge = _remote_judge(project.workspace, endpoint.url, constitution)
        job = _run(_start(project, judge, budget=3))

    assert (job.status, job.done, job.requests_made) == ("partial", 1, 3)
    assert "budget" in job.error
    assert len(endpoint.hits) == 3
    assert Judgment.objects.filter(judge_job=job).count() == 1


def test_a_budget_too_small_for_one_pair_fails_the_job(project, constitution):
    _tasks(project, 1)

    with FakeEndpoint(_prefers_good) as endpoint:
        judge = _remote_judge(project.workspace, endpoint.url, constitution)
        job = _run(_start(project, judge, budget=1))

    assert (job.status, job.done) == ("failed", 0)
    assert "budget" in job.error


def test_the_key_is_masked_even_when_the_endpoint_echoes_it(project, constitution):
    _tasks(project, 1)

    def script(number, payload):
        return Answer(401, {"error": f"invalid key {KEY}"})

    with FakeEndpoint(script) as endpoint:
        job = _run(_start(project, _remote_judge(project.workspace, endpoint.url, constitution)))

    assert job.status == "failed"
    assert "HTTP 401" in job.error
    assert len(endpoint.hits) == 1  # 4xx is not retried
    _assert_key_hidden(job)


def test_the_key_stays_out_of_the_python_logs_too(project, constitution, caplog):
    _tasks(project, 1)
    caplog.set_level("DEBUG")

    with FakeEndpoint(lambda n, p: Answer(500, {"error": f"upstream saw {KEY}"})) as endpoint:
        job = _run(_start(project, _remote_judge(project.workspace, endpoint.url, constitution)))

    assert job.status == "failed"
    assert "retrying" in caplog.text  # the retries were logged ...
    assert KEY not in caplog.text  # ... without the key
    _assert_key_hidden(job)


# --- cancel -----------------------------------------------------------------------------------


def test_a_queued_job_is_cancelled_at_once_and_never_runs(project, constitution):
    _tasks(project, 1)
    with FakeEndpoint(_prefers_good) as endpoint:
        job = _start(project, _remote_judge(project.workspace, endpoint.url, constitution))

        jobs.judge_job_cancel(job=job)
        assert jobs.judge_job_execute(job_id=job.pk) is None

    job.refresh_from_db()
    assert job.status == "cancelled"
    assert endpoint.hits == []
    with pytest.raises(Conflict, match="already ended"):
        jobs.judge_job_cancel(job=job)


def test_a_running_job_stops_at_the_next_pair_and_keeps_what_it_judged(
    transactional_db, memory_broker
):
    from tests.factories import make_project

    project = make_project("cancel")
    constitution = services.ensure_default_constitution()
    _tasks(project, 3)
    job_ids = []

    def script(number, payload):
        if number == 2:  # someone presses Cancel while the first pair is judged
            jobs.judge_job_cancel(job=JudgeJob.objects.get(pk=job_ids[0]))
            connection.close()
        return _prefers_good(number, payload)

    with FakeEndpoint(script) as endpoint:
        job = _start(project, _remote_judge(project.workspace, endpoint.url, constitution))
        job_ids.append(job.pk)
        job = _run(job)

    assert (job.status, job.done, job.total) == ("cancelled", 1, 3)
    assert len(endpoint.hits) == 2
    assert Judgment.objects.filter(judge_job=job).count() == 1
    assert "Cancelled." in job.log


def test_a_job_runs_once_even_if_its_message_comes_twice(project, constitution):
    _tasks(project, 1)
    with FakeEndpoint(_prefers_good) as endpoint:
        job = _run(_start(project, _remote_judge(project.workspace, endpoint.url, constitution)))
        assert jobs.judge_job_execute(job_id=job.pk) is None

    assert len(endpoint.hits) == 2
    assert Judgment.objects.count() == 1


# --- what gets judged, constitutions and versions -------------------------------------------


def test_pairs_already_judged_by_this_judge_and_version_are_skipped(project, constitution):
    _tasks(project, 3)
    with FakeEndpoint(_prefers_good) as endpoint:
        judge = _remote_judge(project.workspace, endpoint.url, constitution)
        first = _run(_start(project, judge, options={"limit": 2}))
        second = _run(_start(project, judge))
        third = _run(_start(project, judge))

    assert (first.done, second.done, third.total, third.status) == (2, 1, 0, "succeeded")
    assert Judgment.objects.filter(judge=judge).values("task").distinct().count() == 3


def test_listed_task_ids_limit_the_job(project, constitution):
    tasks = _tasks(project, 3)
    with FakeEndpoint(_prefers_good) as endpoint:
        job = _run(
            _start(
                project,
                _remote_judge(project.workspace, endpoint.url, constitution),
                options={"task_ids": [tasks[2].pk, tasks[0].pk]},
            )
        )

    assert job.options["task_ids"] == sorted([tasks[0].pk, tasks[2].pk])
    assert sorted(Judgment.objects.values_list("task_id", flat=True)) == sorted(
        [tasks[0].pk, tasks[2].pk]
    )


def test_an_edit_makes_a_new_version_and_old_judgments_keep_the_old_one(project, constitution):
    _tasks(project, 1)
    with FakeEndpoint(_prefers_good) as endpoint:
        judge = _remote_judge(project.workspace, endpoint.url, constitution)
        first = _run(_start(project, judge))
        edited = [
            {**p, "comparison_question": p["comparison_question"] + " Be strict."}
            for p in constitution.principles
        ]
        v2 = services.constitution_edit(
            workspace=project.workspace, constitution=constitution, principles=edited, note="strict"
        )
        services.judge_constitution_set(judge=judge, constitution=v2)
        second = _run(_start(project, judge))

    constitution.refresh_from_db()
    assert (v2.name, v2.version, v2.note) == (constitution.name, 2, "strict")
    assert constitution.version == 1
    assert constitution.principles != v2.principles
    assert Judgment.objects.get(judge_job=first).constitution == constitution
    assert Judgment.objects.get(judge_job=second).constitution == v2  # judged again under v2
    assert "Be strict." in endpoint.hits[-1].payload["messages"][0]["content"]
    assert "Be strict." not in endpoint.hits[0].payload["messages"][0]["content"]


def test_edits_number_versions_and_keep_every_one(project, constitution):
    edit = {"workspace": project.workspace, "principles": constitution.principles}
    v2 = services.constitution_edit(constitution=constitution, **edit)
    v3 = services.constitution_edit(constitution=v2, **edit)

    assert [c.version for c in Constitution.objects.filter(name=constitution.name)] == [3, 2, 1]
    assert (v2.version, v3.version) == (2, 3)
    assert (v2.workspace, v3.workspace) == (project.workspace, project.workspace)
    assert selectors.constitutions_latest(workspace=project.workspace) == [v3]
    # The built-in version 1 stays the default every other workspace starts from.
    assert services.ensure_default_constitution() == constitution


def test_a_new_constitution_starts_at_version_one_and_names_are_unique(project):
    principles = [
        {"name": "n", "critique_request": "c", "revision_request": "r", "comparison_question": "q"}
    ]
    made = services.constitution_create(
        workspace=project.workspace, name=" mine ", principles=principles, note="first"
    )

    assert (made.name, made.version, made.principles, made.note) == ("mine", 1, principles, "first")
    assert made.workspace == project.workspace
    with pytest.raises(Conflict, match="exists"):
        services.constitution_create(
            workspace=project.workspace, name="mine", principles=principles
        )


# --- bad input: refused, nothing stored ------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"kind": "summarise"}, "Choose what the job does"),
        ({"max_requests": 0}, "budget must be a whole number from 1 to 10000"),
        ({"max_requests": 10_001}, "budget"),
        ({"max_requests": "lots"}, "budget"),
        ({"max_requests": True}, "budget"),
        ({"options": "not json"}, "Options must be a JSON object"),
        ({"options": [1, 2]}, "Options must be a JSON object"),
        ({"options": {"limit": 0}}, "limit must be a whole number from 1 to 10000"),
        ({"options": {"colour": "red"}}, "Unknown options for pairwise judging: colour"),
        ({"options": {"task_ids": [999999]}}, "Not comparison tasks of this project: 999999"),
        ({"options": {"task_ids": "1,2"}}, "task_ids must be a list"),
        ({"options": {"unsure_threshold": 0.9}}, "unsure_threshold"),
        ({"options": {"critique_max_tokens": 0}}, "critique_max_tokens"),
        ({"judge": None}, "Choose a judge"),
    ],
)
def test_a_bad_job_is_refused_and_nothing_is_stored(project, constitution, change, message):
    judge = _remote_judge(project.workspace, "http://127.0.0.1:9/v1", constitution)
    arguments = {
        "project": project,
        "judge": judge,
        "kind": "pairwise",
        "options": {},
        "max_requests": 10,
        **change,
    }

    with pytest.raises(ServiceError, match=message):
        jobs.judge_job_start(**arguments)
    assert not JudgeJob.objects.exists()


def test_a_task_of_another_project_is_refused(project, other_project, constitution):
    foreign = make_task(other_project)
    judge = _remote_judge(project.workspace, "http://127.0.0.1:9/v1", constitution)

    with pytest.raises(ServiceError, match=str(foreign.pk)):
        _start(project, judge, options={"task_ids": [foreign.pk]})
    assert not JudgeJob.objects.exists()


def test_a_judge_on_a_retired_model_cannot_start_a_job(project, constitution):
    version = make_version("old-judge")
    judge = services.judge_create(
        workspace=project.workspace,
        name="old",
        backend="local",
        model_version=version,
        constitution=constitution,
    )
    ModelVersion.objects.filter(pk=version.pk).update(state=ModelVersion.State.RETIRED)
    judge.refresh_from_db()

    with pytest.raises(ServiceError, match="retired"):
        _start(project, judge)
    assert not JudgeJob.objects.exists()


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"name": ""}, "name"),
        ({"backend": "cloud"}, "local or remote"),
        ({"constitution": 999_999}, "constitution"),
        ({"constitution": "x"}, "constitution"),
        ({"backend": "remote", "endpoint_url": ""}, "endpoint URL"),
        ({"backend": "remote", "endpoint_url": "ftp://host/v1"}, "endpoint URL"),
        ({"backend": "remote", "endpoint_url": "not a url"}, "endpoint URL"),
        ({"backend": "remote", "endpoint_model": ""}, "model name"),
        ({"backend": "remote", "api_key": "k" * 501}, "API key is longer"),
        ({"backend": "local", "model_version": None}, "model version"),
        ({"backend": "local", "model_version": "retired"}, "not retired"),
        ({"backend": "local", "model_version": "reward"}, "not retired"),
    ],
)
def test_a_bad_judge_is_refused_and_nothing_is_stored(project, constitution, fields, message):
    retired = make_version("retired-model", state=ModelVersion.State.RETIRED)
    reward = make_version("reward-model", kind=ModelVersion.Kind.REWARD)
    arguments = {
        "workspace": project.workspace,
        "name": "j",
        "backend": "remote",
        "endpoint_url": "https://judge.example/v1",
        "endpoint_model": "m",
        "api_key": "",
        "constitution": constitution.pk,
        **fields,
    }
    arguments["model_version"] = {"retired": retired, "reward": reward}.get(
        fields.get("model_version"), fields.get("model_version")
    )

    with pytest.raises(ServiceError, match=message):
        services.judge_create(**arguments)
    assert not Judge.objects.exists()


def test_a_judge_name_is_used_once_in_a_workspace(project, other_project, constitution):
    _remote_judge(project.workspace, "https://judge.example/v1", constitution, name="same")

    with pytest.raises(Conflict, match="exists"):
        _remote_judge(project.workspace, "https://judge.example/v1", constitution, name="same")
    assert Judge.objects.count() == 1
    # Another workspace has names of its own.
    _remote_judge(other_project.workspace, "https://judge.example/v1", constitution, name="same")
    assert Judge.objects.count() == 2


def test_local_judges_go_to_the_gpu_queue_and_remote_ones_to_default(
    project, constitution, django_capture_on_commit_callbacks, monkeypatch
):
    from annotation.judges import tasks

    _tasks(project, 1)
    local = services.judge_create(
        workspace=project.workspace,
        name="local",
        backend="local",
        model_version=make_version(),
        constitution=constitution,
    )
    remote = _remote_judge(project.workspace, "https://judge.example/v1", constitution)
    sent = []
    for task in (tasks.judge_job_run_gpu_task, tasks.judge_job_run_task):
        monkeypatch.setattr(
            task, "apply_async", lambda args, task=task, **kw: sent.append((task.queue, args))
        )

    with django_capture_on_commit_callbacks(execute=True):
        local_job = _start(project, local)
        remote_job = _start(project, remote)

    assert sent == [("gpu", [local_job.pk]), ("default", [remote_job.pk])]
    # Workers find both tasks through annotation/tasks.py (Celery autodiscovers it).
    import annotation.tasks  # noqa: F401

    assert {"annotation.judge_job_run_gpu_task", "annotation.judge_job_run_task"} <= set(
        celery_app.tasks
    )
    assert local_job.status == remote_job.status == "queued"


def test_an_unreachable_broker_fails_the_job_with_the_reason(
    project, constitution, unreachable_broker, django_capture_on_commit_callbacks
):
    from config.celery import QueueUnavailable

    judge = _remote_judge(project.workspace, "https://judge.example/v1", constitution)
    with (
        pytest.raises(QueueUnavailable),
        django_capture_on_commit_callbacks(execute=True),
    ):
        _start(project, judge)

    job = JudgeJob.objects.get()
    assert job.status == "failed"
    assert "task queue could not be reached" in job.error
