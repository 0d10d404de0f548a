"""RRHF: the loss, the ranked rows from labels, training on a tiny random Llama, and runs."""

from __future__ import annotations

import json
import math
from io import StringIO
from pathlib import Path

import pytest
import torch
from django.core.management import call_command
from safetensors.torch import load_file

from annotation.datasets.selectors import rrhf_rows
from annotation.models import Judgment, Response
from config.errors import ServiceError
from models_registry.engine.ml import (
    GenerationParams,
    generate_replies,
    load_policy,
    verify_artifact,
)
from models_registry.services import ensure_base_model_from_folder
from tests.annotation.judges.factories import (
    make_ai_judgment,
    make_constitution,
    make_remote_judge,
)
from tests.factories import judge, make_kind_task, make_preferences, make_task, make_version
from training.methods.common import Hooks
from training.methods.rrhf import (
    RRHFConfig,
    TrainingCancelled,
    keep_responses,
    read_ranked_rows,
    rrhf_losses,
    train_rrhf,
)
from training.models import TrainingRun
from training.services import training_run_execute, training_run_start

TINY = {"lora_r": 4, "lora_alpha": 8, "eval_fraction": 0.0}


def _row(prompt: str, responses: list[str], scores: list[float]) -> dict:
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "responses": responses,
        "scores": scores,
    }


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def ranked_file(tmp_path: Path) -> Path:
    """A separable toy set: "yes" is always best, "maybe so" next, "no" worst."""
    rows = [_row(f"Question number {i}?", ["no", "yes", "maybe so"], [0, 2, 1]) for i in range(8)]
    return _write_jsonl(tmp_path / "ranked.jsonl", rows)


# --- The loss -------------------------------------------------------------------------


def test_the_loss_on_hand_computed_numbers():
    # given: summed log-probs over lengths 2, 3, 1, 1 -> p = [-1, -2, -3, -1]
    logps = torch.tensor([-2.0, -6.0, -3.0, -1.0])
    counts = torch.tensor([2, 3, 1, 1])
    scores = torch.tensor([3.0, 1.0, 2.0, 1.0])  # responses 1 and 3 tie

    # when
    rank, sft, correct, pairs = rrhf_losses(logps, counts, scores)

    # then: pairs r_i < r_j: (1,0) max(0,-2+1)=0, (1,2) max(0,-2+3)=1, (2,0) max(0,-3+1)=0,
    # (3,0) max(0,-1+1)=0, (3,2) max(0,-1+3)=2; the tie (1,3) gives nothing.
    assert pairs == 5
    assert float(rank) == pytest.approx(3.0)
    # SFT on the best (score 3, response 0): its token-mean NLL, -p_0.
    assert float(sft) == pytest.approx(1.0)
    # Ordered right (p_better > p_worse): (1,0) and (2,0) only.
    assert correct == 2


def test_the_loss_pushes_the_better_response_up():
    logps = torch.tensor([-4.0, -2.0], requires_grad=True)  # the worse one is likelier
    rank, _, _, _ = rrhf_losses(logps, torch.tensor([2, 2]), torch.tensor([1.0, 0.0]))

    rank.backward()

    assert float(rank.detach()) == pytest.approx(1.0)  # max(0, -1 - (-2))
    assert logps.grad.tolist() == [-0.5, 0.5]  # descent raises the better, lowers the worse


def test_keep_responses_caps_k_keeping_the_best_and_the_worst():
    assert keep_responses([1, 5, 3, 4, 2], 3) == [1, 2, 0]
    assert keep_responses([1, 5], 4) == [1, 0]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": [{"role": "user", "content": "q"}], "responses": ["a", "b"]}, "'scores'"),
        (_row("q", ["a", "b"], [1, 1]), "at least two responses with different scores"),
        (_row("q", ["a", "b"], [1]), "2 responses but 1 scores"),
        (_row("q", ["a", ""], [1, 0]), "non-empty texts"),
        (_row("q", ["a", "b"], [1, "x"]), "list of numbers"),
    ],
)
def test_bad_rows_name_their_line(tmp_path, row, message):
    path = _write_jsonl(tmp_path / "bad.jsonl", [_row("ok", ["a", "b"], [1, 0]), row])

    with pytest.raises(ValueError, match=message) as error:
        read_ranked_rows(path)
    assert "line 2" in str(error.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"max_responses": 1}, "max_responses must be >= 2"),
        ({"rank_weight": -1}, "rank_weight must be >= 0"),
        ({"rank_weight": 0, "sft_weight": 0}, "cannot both be 0"),
        ({"learning_rate": 0}, "learning_rate must be > 0"),
        ({"k": 3}, "unknown RRHF config key"),
    ],
)
def test_bad_config_is_refused_with_the_field_named(data, message):
    with pytest.raises(ValueError, match=message):
        RRHFConfig.from_dict(data)


# --- Training on a tiny model ---------------------------------------------------------


def test_rrhf_learns_the_ranking_and_saves_a_loadable_adapter(
    tiny_model_dir, ranked_file, tmp_path
):
    # given
    config = RRHFConfig(learning_rate=5e-3, epochs=50, max_steps=12, batch_size=4, **TINY)
    history = []

    # when
    result = train_rrhf(
        config,
        dataset_path=ranked_file,
        base_model_path=tiny_model_dir,
        output_dir=tmp_path / "adapter",
        on_step=lambda step, total, metrics: history.append(metrics),
    )

    # then: the loss falls and the training prompts end up ranked right
    assert result.steps == 12 and len(history) == 12
    for metrics in history:
        assert {"loss", "rank_loss", "sft_loss", "ranking_accuracy", "tokens_per_s"} <= set(metrics)
        assert all(math.isfinite(value) for value in metrics.values())
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["rank_loss"] < history[0]["rank_loss"]
    before = result.metrics["initial_train_ranking_accuracy"]
    after = result.metrics["final_train_ranking_accuracy"]
    assert before < 1.0 and after == 1.0
    verify_artifact(tmp_path / "adapter")
    record = json.loads((tmp_path / "adapter" / "training_result.json").read_text())
    assert record["method"] == "rrhf" and record["config"]["max_responses"] == 4
    model, tokenizer = load_policy(tiny_model_dir, tmp_path / "adapter")
    [reply] = generate_replies(
        model,
        tokenizer,
        [[{"role": "user", "content": "Question number 3?"}]],
        GenerationParams(max_new_tokens=4, do_sample=False),
    )
    assert 1 <= reply.completion_tokens <= 4


def test_cancel_then_resume_ends_with_the_uninterrupted_weights(
    tiny_model_dir, ranked_file, tmp_path
):
    # given: 8 prompts in batches of 4, 2 epochs -> 4 steps, a checkpoint after every step
    config = RRHFConfig(
        learning_rate=1e-3, epochs=2, batch_size=4, checkpoint_every=1, max_responses=2, **TINY
    )
    checkpoints = tmp_path / "checkpoints"
    first_steps, resumed_steps, log = [], [], []

    def run(output_dir: Path, hooks: Hooks):
        return train_rrhf(
            config,
            dataset_path=ranked_file,
            base_model_path=tiny_model_dir,
            output_dir=output_dir,
            hooks=hooks,
        )

    # when: cancelled after its second step, then the same run again
    with pytest.raises(TrainingCancelled):
        run(
            tmp_path / "cancelled",
            Hooks(
                on_step=lambda step, total, metrics: first_steps.append(step),
                should_stop=lambda: len(first_steps) >= 2,
                checkpoint_dir=checkpoints,
            ),
        )
    resumed = run(
        tmp_path / "resumed",
        Hooks(
            on_step=lambda step, total, metrics: resumed_steps.append(step),
            log=log.append,
            checkpoint_dir=checkpoints,
        ),
    )
    uninterrupted = run(tmp_path / "uninterrupted", Hooks())

    # then
    assert first_steps == [1, 2]
    assert not (tmp_path / "cancelled").exists()
    assert resumed_steps == [3, 4]
    assert "resumed from the checkpoint at step 2 of 4" in log
    resumed_weights = load_file(tmp_path / "resumed" / "adapter_model.safetensors")
    expected = load_file(tmp_path / "uninterrupted" / "adapter_model.safetensors")
    assert resumed_weights.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.allclose(resumed_weights[name], tensor, atol=1e-7), name
    assert resumed.steps == uninterrupted.steps == 4


# --- Rows from labels -----------------------------------------------------------------


def _ranking_task(project, texts):
    task = make_kind_task(project, "ranking", responses=len(texts))
    links = list(task.links.order_by("position").select_related("response"))
    for link, text in zip(links, texts, strict=True):
        Response.objects.filter(pk=link.response_id).update(text=text)
    return task, [link.response_id for link in links]


def test_rows_from_a_ranking_a_demonstration_and_merged_comparisons(project, labeler):
    # given: a ranking of 3 with a demonstration for its prompt
    task, (a, b, c) = _ranking_task(project, ["alpha", "beta", "gamma"])
    judge(task, labeler, ranking=[b, c, a])
    Judgment.objects.create(
        kind="demonstration", project=project, prompt=task.prompt, text="written", labeler=labeler
    )
    # and three comparisons of one prompt's responses: x beats y twice, y beats z once
    first = make_task(project, texts=("x", "y"))
    second = make_task(project, prompt=first.prompt, texts=("y2", "z"))
    judge(first, labeler, choice="a")
    judge(first, labeler, choice="a")
    judge(second, labeler, choice="a")
    judge(second, labeler, choice="tie")  # counts for neither

    # when
    rows = list(rrhf_rows(project, ai="exclude"))

    # then
    ranking, comparisons = rows
    assert ranking["prompt"] == task.prompt.as_conversation()
    assert ranking["responses"] == ["written", "beta", "gamma", "alpha"]
    assert ranking["scores"] == [4.0, 3.0, 2.0, 1.0]  # k - position; the demonstration best + 1
    assert (ranking["scored_by"], ranking["demonstrations"], ranking["source"]) == (
        "ranking",
        1,
        "human",
    )
    assert comparisons["responses"] == ["x", "y2", "z", "y"]
    assert comparisons["scores"] == [2.0, 1.0, -1.0, -2.0]  # wins - losses
    assert comparisons["scored_by"] == "comparisons"


def test_rows_from_ratings_use_the_mean_rating_and_skip_what_cannot_be_ranked(project, labeler):
    # given: two ratings of "good" and one of "bad" for one prompt
    good_task = make_kind_task(project, "rating", responses=1)
    response = good_task.links.get().response
    Response.objects.filter(pk=response.pk).update(text="good")
    bad = Response.objects.create(prompt=good_task.prompt, author="t", text="bad")
    judge(good_task, labeler, scores={"helpful": 6, "honest": 7})
    judge(good_task, labeler, scores={"helpful": 5, "honest": 5})
    Judgment.objects.create(
        kind="rating", project=project, prompt=good_task.prompt, rated_response=bad,
        scores={"helpful": 2, "honest": 3}, labeler=labeler,
    )  # fmt: skip
    # and a prompt with one rated response only: nothing to rank
    lonely = make_kind_task(project, "rating", responses=1)
    judge(lonely, labeler, scores={"helpful": 4})

    # when
    (row,) = rrhf_rows(project, ai="exclude")

    # then: good = mean(6.5, 5.0), bad = 2.5
    assert row["responses"] == ["good", "bad"]
    assert row["scores"] == [5.75, 2.5]
    assert row["scored_by"] == "ratings"


def test_the_ai_choice_decides_whose_comparisons_go_in(project, labeler):
    # given: one prompt compared by a person (x over y) and by an AI judge (y2 over z)
    first = make_task(project, texts=("x", "y"))
    second = make_task(project, prompt=first.prompt, texts=("y2", "z"))
    judge(first, labeler, choice="a")
    constitution = make_constitution("loop-default", 3)
    remote = make_remote_judge("judge-remote", api_key="k", constitution=constitution)
    make_ai_judgment(second, remote, soft_label=0.9)

    # when
    people = list(rrhf_rows(project, ai="exclude"))
    only_ai = list(rrhf_rows(project, ai="only"))
    everyone = list(rrhf_rows(project, ai="include"))

    # then
    assert [row["responses"] for row in people] == [["x", "y"]]
    assert [(row["responses"], row["source"]) for row in only_ai] == [(["y2", "z"], "ai")]
    assert everyone[0]["source"] == "mixed"
    assert everyone[0]["judge"] == "judge-remote"
    assert set(everyone[0]["responses"]) == {"x", "y", "y2", "z"}


# --- Runs -----------------------------------------------------------------------------


@pytest.fixture
def base(tiny_model_dir, db):
    return ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)


def test_a_run_through_the_service_registers_an_rrhf_version(project, labeler, base):
    make_preferences(project, labeler, 4)

    run = training_run_start(
        project=project,
        base_version=base,
        method="rrhf",
        config={"max_steps": 2, "batch_size": 2, "lora_r": 4, "lora_alpha": 8},
    )
    training_run_execute(run_id=run.pk)
    run.refresh_from_db()

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert (run.snapshot.format, run.snapshot.row_count) == ("rankings", 4)
    assert run.snapshot.filters["ai"] == "exclude"
    assert run.model_version.method == "rrhf"
    assert run.model_version.parent == base
    assert {"rank_loss", "sft_loss", "ranking_accuracy"} <= set(run.steps.last().metrics)
    assert "final_train_ranking_accuracy" in run.final_metrics


def test_the_train_command_takes_rrhf(project, labeler, base):
    make_preferences(project, labeler, 2)
    out = StringIO()

    call_command(
        "train", "--project", project.slug, "--method", "rrhf", "--base", "tiny",
        "--set", "max_steps=1", "--set", "eval_fraction=0", "--now", stdout=out,
    )  # fmt: skip

    summary = json.loads(out.getvalue())
    assert summary["status"] == "succeeded"


def test_a_project_with_nothing_to_rank_is_refused_and_no_run_is_stored(project, labeler, base):
    # given: only ties, and a demonstration without any other response scored
    task = make_task(project)
    judge(task, labeler, choice="tie")
    Judgment.objects.create(
        kind="demonstration", project=project, prompt=task.prompt, text="mine", labeler=labeler
    )

    with pytest.raises(ServiceError, match="nothing to rank yet"):
        training_run_start(project=project, base_version=base, method="rrhf")
    assert TrainingRun.objects.count() == 0


def test_the_run_form_and_the_api_start_rrhf_runs(login, project, labeler, admin_member):
    # given: four prompts, each with a decisive comparison
    make_preferences(project, labeler, 4)
    base = make_version("base-policy")
    client = login(admin_member)

    # when
    form = client.get("/p/alpha/training/?method=rrhf").content.decode()
    posted = client.post(
        "/p/alpha/training/",
        {"method": "rrhf", "base_version": base.pk, "ai": "exclude", "seed": "0"},
    )
    api = client.post(
        "/api/projects/alpha/training-runs/",
        {"method": "rrhf", "base_version": base.pk, "config": {"max_responses": 3}},
        content_type="application/json",
    )

    # then
    assert 'name="ai"' in form and 'name="max_responses"' in form
    assert posted.status_code == 302
    assert api.status_code == 201, api.content
    runs = list(TrainingRun.objects.order_by("id"))
    assert [run.method for run in runs] == ["rrhf", "rrhf"]
    assert {run.snapshot.format for run in runs} == {"rankings"}
    assert runs[1].config["max_responses"] == 3


def test_the_api_refuses_a_project_with_nothing_to_rank(login, project, admin_member):
    base = make_version("base-policy")

    answer = login(admin_member).post(
        "/api/projects/alpha/training-runs/",
        {"method": "rrhf", "base_version": base.pk},
        content_type="application/json",
    )

    assert answer.status_code == 400
    assert "nothing to rank yet" in answer.json()["detail"]
    assert TrainingRun.objects.count() == 0
