"""RRHF scored by a reward model: every response of a prompt, from any source, scored by a
score function at train time instead of people (method, rows, runs, refusals)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from annotation.datasets.selectors import rrhf_candidate_rows, rrhf_rows
from annotation.models import CHAT_TURN_KEY, Judgment, Prompt, Response
from config.errors import ServiceError
from models_registry.engine.ml import load_policy
from models_registry.services import ensure_base_model_from_folder, model_version_register
from tests.factories import make_prompt, make_version
from training.methods.common import collate, encode_chat_reply, sequence_logps
from training.methods.rrhf import (
    SCORES_FILE,
    RRHFConfig,
    load_ranked_prompts,
    read_ranked_rows,
    score_rows,
    train_rrhf,
)
from training.models import DatasetSnapshot, TrainingRun
from training.services import training_run_execute, training_run_start

TINY = {"lora_r": 4, "lora_alpha": 8, "eval_fraction": 0.0}
SMALL = {"max_steps": 2, "batch_size": 2, "lora_r": 4, "lora_alpha": 8, "seed": 1}


def by_length(prompts: list[list[dict]], replies: list[str]) -> list[float]:
    """A deterministic score function: the longer reply is the better one."""
    assert len(prompts) == len(replies)
    return [float(len(reply)) for reply in replies]


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def people_disagree(tmp_path: Path) -> Path:
    """People's scores put "no" first and "maybe so" last; by length it is the reverse."""
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Question number {i}?"}],
            "responses": ["no", "yes", "maybe so"],
            "scores": [2, 1, 0],
        }
        for i in range(8)
    ]
    return _write_jsonl(tmp_path / "ranked.jsonl", rows)


def _normalised_logps(model_dir, adapter_dir, prompt: str, replies: list[str]) -> list[float]:
    model, tokenizer = load_policy(model_dir, adapter_dir)
    conversation = [{"role": "user", "content": prompt}]
    encoded = [
        encode_chat_reply(
            tokenizer,
            conversation,
            [{"role": "assistant", "content": reply}],
            max_length=128,
            max_prompt_length=64,
        )
        for reply in replies
    ]
    device = next(model.parameters()).device
    batch = collate(encoded, pad_token_id=tokenizer.pad_token_id, device=device)
    with torch.no_grad():
        logps, counts = sequence_logps(model, batch)
    return (logps / counts).tolist()


# --- The method -----------------------------------------------------------------------


def test_a_score_function_ranks_the_responses_instead_of_the_rows_scores(
    tiny_model_dir, people_disagree, tmp_path
):
    # given: the rows' own (people's) order is the opposite of the score function's
    config = RRHFConfig(learning_rate=5e-3, epochs=50, max_steps=12, batch_size=4, **TINY)

    # when
    result = train_rrhf(
        config,
        dataset_path=people_disagree,
        base_model_path=tiny_model_dir,
        output_dir=tmp_path / "adapter",
        score=by_length,
    )

    # then: the scores written next to the artifact are the function's, best first
    scored = [
        json.loads(line) for line in (tmp_path / "adapter" / SCORES_FILE).read_text().splitlines()
    ]
    assert len(scored) == 8
    assert {tuple(row["responses"]) for row in scored} == {("maybe so", "yes", "no")}
    assert scored[0]["scores"] == [8.0, 3.0, 2.0]
    assert result.metrics["scored_responses"] == 24.0
    assert result.metrics["reward_best_mean"] == 8.0
    assert result.metrics["final_train_ranking_accuracy"] == 1.0
    record = json.loads((tmp_path / "adapter" / "training_result.json").read_text())
    assert record["metrics"]["scored_responses"] == 24.0
    # and the trained policy itself now orders them by length, not as people did
    p_maybe, p_yes, p_no = _normalised_logps(
        tiny_model_dir, tmp_path / "adapter", "Question number 3?", ["maybe so", "yes", "no"]
    )
    assert p_maybe > p_yes > p_no


def test_max_responses_keeps_the_best_and_the_worst_by_the_function(
    tiny_model_dir, people_disagree
):
    from transformers import AutoTokenizer

    # given: three responses per prompt, k = 2
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    config = RRHFConfig(max_responses=2, **TINY)

    # when
    scored = score_rows(read_ranked_rows(people_disagree, scored=False), by_length)
    prompts = load_ranked_prompts(people_disagree, tokenizer, config, rows=scored)

    # then: the function's best ("maybe so", 8) and worst ("no", 2) are kept; people's
    # best ("no") would have been kept first
    assert [prompt.scores for prompt in prompts] == [[8.0, 2.0]] * 8


def test_rows_need_no_scores_when_a_function_scores_them(tmp_path):
    path = _write_jsonl(
        tmp_path / "unscored.jsonl",
        [
            {"prompt": [_user("q")], "responses": ["a", "bb"], "scores": None},
            {"prompt": [_user("r")], "responses": ["same", "same", "x"]},
        ],
    )

    scored = score_rows(read_ranked_rows(path, scored=False), by_length)

    # each distinct text scored once, best first
    assert [row["responses"] for _, row in scored] == [["bb", "a"], ["same", "x"]]
    with pytest.raises(ValueError, match="'scores' must be a list of numbers"):
        read_ranked_rows(path)  # people's scores are needed without a function


@pytest.mark.parametrize(
    ("score", "message"),
    [
        (lambda prompts, replies: [1.0], "score returned 1 values for 2 replies"),
        (lambda prompts, replies: [1.0, float("nan")], "not a finite number"),
        (lambda prompts, replies: [0.5, 0.5], "gave every prompt's responses the same score"),
    ],
)
def test_a_score_function_that_cannot_rank_is_refused(tmp_path, score, message):
    path = _write_jsonl(
        tmp_path / "unscored.jsonl",
        [{"prompt": [{"role": "user", "content": "q"}], "responses": ["a", "b"], "scores": None}],
    )

    with pytest.raises(ValueError, match=message):
        score_rows(read_ranked_rows(path, scored=False), score)


def test_a_row_with_one_distinct_response_is_refused_naming_its_line(tmp_path):
    path = _write_jsonl(
        tmp_path / "unscored.jsonl",
        [{"prompt": [{"role": "user", "content": "q"}], "responses": ["a", "a"], "scores": None}],
    )

    with pytest.raises(ValueError, match="line 1: needs at least two different responses"):
        read_ranked_rows(path, scored=False)


# --- Rows from every source -----------------------------------------------------------


def _candidates(project):
    """Two prompts answered by two model versions, one of them also by an imported response
    and a demonstration; a prompt with one distinct text; a chat turn's prompt."""
    first, second = make_version("policy-v1"), make_version("policy-v2")
    one, two = make_prompt(project, "Name a colour."), make_prompt(project, "Name a fruit.")
    for prompt, texts in ((one, ("red", "blue")), (two, ("apple", "pear"))):
        Response.objects.create(prompt=prompt, model_version=first, text=texts[0])
        Response.objects.create(prompt=prompt, model_version=second, text=texts[1])
    Response.objects.create(prompt=one, author="import", text="green")
    Response.objects.create(prompt=one, author="import", text="red")  # the same text once
    lonely = make_prompt(project, "Say hi.")
    Response.objects.create(prompt=lonely, model_version=first, text="hi")
    Response.objects.create(prompt=lonely, model_version=second, text="hi")
    chat = Prompt.objects.create(project=project, text="chat", metadata={CHAT_TURN_KEY: 1})
    Response.objects.create(prompt=chat, model_version=first, text="a")
    Response.objects.create(prompt=chat, model_version=second, text="b")
    return one, two


def test_candidate_rows_hold_every_response_of_a_prompt_unscored(project, labeler):
    # given: model candidates and an imported response, no judgment, one demonstration
    one, two = _candidates(project)
    Judgment.objects.create(
        kind="demonstration", project=project, prompt=one, text="teal", labeler=labeler
    )

    # when
    rows = list(rrhf_candidate_rows(project, ai="exclude"))

    # then: people's rows are empty (nothing judged), the candidate rows have it all
    assert list(rrhf_rows(project, ai="exclude")) == []
    colour, fruit = rows
    assert colour["prompt"] == one.as_conversation()
    assert colour["responses"] == ["red", "blue", "green", "teal"]
    assert (colour["scores"], colour["scored_by"]) == (None, "reward-model")
    assert colour["model_versions"] == ["policy-v1", "policy-v2"]
    assert (colour["demonstrations"], colour["source"]) == (1, "human")
    assert fruit["responses"] == ["apple", "pear"]
    assert (fruit["demonstrations"], fruit["source"], fruit["judge"]) == (0, "", "")


# --- Runs -----------------------------------------------------------------------------


@pytest.fixture
def base(tiny_model_dir, db):
    return ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)


@pytest.fixture
def reward(tiny_model_dir, tiny_reward_dir, db):
    return model_version_register(
        name="tiny-reward",
        kind="reward",
        method="reward",
        base_path=str(tiny_model_dir),
        adapter_path=str(tiny_reward_dir),
    )


def test_an_rrhf_run_scored_by_a_reward_model_trains_on_unjudged_candidates(project, base, reward):
    # given: candidates of two model versions and nobody's judgment
    _candidates(project)
    with pytest.raises(ServiceError, match="nothing to rank yet"):
        training_run_start(project=project, base_version=base, method="rrhf")

    # when
    run = training_run_start(
        project=project, base_version=base, method="rrhf", config=SMALL, reward_version=reward
    )
    training_run_execute(run_id=run.pk)
    run.refresh_from_db()

    # then
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.reward_version == reward and run.processes == 1
    assert run.snapshot.filters["scores"] == "reward-model"
    assert (run.snapshot.format, run.snapshot.row_count) == ("rankings", 2)
    assert run.final_metrics["scored_responses"] == 5.0
    assert "the score function scored 5 responses of 2 prompts" in run.log
    assert run.model_version.method == "rrhf"
    assert run.evaluation["judge"] == reward.name


def test_rrhf_scored_by_a_reward_model_through_the_api_and_the_form(
    login, project, admin_member, reward
):
    _candidates(project)
    policy = make_version("base-policy")
    client = login(admin_member)

    form = client.get("/p/alpha/training/?method=rrhf").content.decode()
    api = client.post(
        "/api/projects/alpha/training-runs/",
        {"method": "rrhf", "base_version": policy.pk, "reward_version": reward.pk},
        content_type="application/json",
    )
    posted = client.post(
        "/p/alpha/training/",
        {"method": "rrhf", "base_version": policy.pk, "reward_version": reward.pk, "seed": "0"},
    )

    assert 'name="reward_version"' in form and "people&#x27;s scores" in form
    assert api.status_code == 201, api.content
    assert posted.status_code == 302
    runs = list(TrainingRun.objects.order_by("id"))
    assert [(run.reward_version, run.snapshot.filters["scores"]) for run in runs] == [
        (reward, "reward-model"),
        (reward, "reward-model"),
    ]


def test_a_policy_is_not_a_reward_model_for_rrhf(login, project, admin_member, base):
    _candidates(project)

    answer = login(admin_member).post(
        "/api/projects/alpha/training-runs/",
        {"method": "rrhf", "base_version": base.pk, "reward_version": base.pk},
        content_type="application/json",
    )

    assert answer.status_code == 400
    assert "is not a reward model" in answer.json()["detail"]
    assert TrainingRun.objects.count() == 0 and DatasetSnapshot.objects.count() == 0


def test_rrhf_scored_by_a_reward_model_trains_in_one_process(settings, project, base, reward):
    settings.TRAINING_DEVICES = "cpu:2"
    _candidates(project)

    with pytest.raises(ServiceError, match="RRHF scored by a reward model trains in one process"):
        training_run_start(
            project=project, base_version=base, method="rrhf", reward_version=reward, processes=2
        )
    assert TrainingRun.objects.count() == 0 and DatasetSnapshot.objects.count() == 0
    # left out, a worker with 2 devices still gives it one process
    run = training_run_start(
        project=project, base_version=base, method="rrhf", reward_version=reward, queue=False
    )
    assert run.processes == 1


@pytest.mark.parametrize(
    ("filters", "with_reward", "message"),
    [
        ({"scores": "reward-model"}, False, "scores reward-model needs a reward model"),
        ({"scores": "people"}, True, "leave the scores filter out"),
        ({"scores": "vibes"}, False, "scores must be one of people, reward-model"),
    ],
)
def test_a_scores_filter_that_contradicts_the_run_is_refused(
    project, base, reward, filters, with_reward, message
):
    _candidates(project)

    with pytest.raises(ServiceError, match=message):
        training_run_start(
            project=project,
            base_version=base,
            method="rrhf",
            filters=filters,
            reward_version=reward if with_reward else None,
        )
    assert TrainingRun.objects.count() == 0


def test_the_train_command_takes_a_reward_model_for_rrhf(project, base, reward):
    from io import StringIO

    from django.core.management import call_command

    _candidates(project)
    out = StringIO()

    call_command(
        "train", "--project", project.slug, "--method", "rrhf", "--base", "tiny",
        "--reward", "tiny-reward", "--set", "max_steps=1", "--set", "eval_fraction=0",
        "--now", stdout=out,
    )  # fmt: skip

    assert json.loads(out.getvalue())["status"] == "succeeded"
    run = TrainingRun.objects.get()
    assert (run.reward_version, run.snapshot.filters["scores"]) == (reward, "reward-model")
