"""KTO: the unpaired rows a project's feedback gives, training.methods.kto on a tiny random
Llama (CPU, TRL's KTOTrainer), and KTO runs through the service, the API and the form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training.methods.common import Hooks, checkpoint_step
from training.methods.kto import KTOConfig, TrainingCancelled, train_kto

TINY = {"batch_size": 2, "lora_r": 4, "lora_alpha": 8, "learning_rate": 1e-3}


def _row(prompt: str, reply: str, label: bool) -> dict:
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "completion": [{"role": "assistant", "content": reply}],
        "label": label,
    }


@pytest.fixture
def unpaired_file(tmp_path: Path) -> Path:
    rows = [_row(f"Question number {i}?", "yes" if i % 2 else "no", bool(i % 2)) for i in range(8)]
    path = tmp_path / "unpaired.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


# --- The method, no Django ---------------------------------------------------------------


def test_train_kto_writes_an_adapter_that_loads_and_generates(
    tiny_model_dir, unpaired_file, tmp_path
):
    from models_registry.engine.ml import GenerationParams, generate_replies, load_policy

    # given
    config = KTOConfig(max_steps=3, eval_fraction=0.0, **TINY)
    steps = []
    output = tmp_path / "kto"

    # when
    result = train_kto(
        config,
        dataset_path=unpaired_file,
        base_model_path=tiny_model_dir,
        output_dir=output,
        on_step=lambda step, total, metrics: steps.append((step, total, metrics)),
    )

    # then
    assert result.steps == 3
    assert [(step, total) for step, total, _ in steps] == [(1, 3), (2, 3), (3, 3)]
    for _, _, metrics in steps:
        assert {"loss", "kl", "learning_rate"} <= set(metrics)
    assert (output / "adapter_config.json").is_file()
    record = json.loads((output / "training_result.json").read_text())
    assert (record["method"], record["steps"], len(record["history"])) == ("kto", 3, 3)
    assert record["config"]["beta"] == 0.1
    model, tokenizer = load_policy(tiny_model_dir, output)
    [reply] = generate_replies(
        model,
        tokenizer,
        [[{"role": "user", "content": "Hello"}]],
        GenerationParams(max_new_tokens=3, do_sample=False),
    )
    assert reply.completion_tokens >= 1


def test_should_stop_cancels_kto_and_saves_nothing(tiny_model_dir, unpaired_file, tmp_path):
    # given: a cancel request arrives after the first step
    config = KTOConfig(max_steps=4, eval_fraction=0.0, **TINY)
    steps = []

    # when / then
    with pytest.raises(TrainingCancelled):
        train_kto(
            config,
            dataset_path=unpaired_file,
            base_model_path=tiny_model_dir,
            output_dir=tmp_path / "kto",
            on_step=lambda step, total, metrics: steps.append(step),
            should_stop=lambda: len(steps) >= 1,
        )
    assert steps == [1]
    assert not (tmp_path / "kto").exists()


def test_a_cancelled_kto_run_resumes_from_its_checkpoint_to_the_same_adapter(
    tiny_model_dir, unpaired_file, tmp_path
):
    # given: an uninterrupted run, and the same run cancelled after its step-2 checkpoint
    config = KTOConfig(max_steps=4, checkpoint_every=2, eval_fraction=0.0, **TINY)
    straight = tmp_path / "straight"
    train_kto(
        config, dataset_path=unpaired_file, base_model_path=tiny_model_dir, output_dir=straight
    )
    checkpoints = tmp_path / "checkpoints"
    seen = []
    hooks = Hooks(
        on_step=lambda step, total, metrics: seen.append(step),
        should_stop=lambda: len(seen) >= 2,
        checkpoint_dir=checkpoints,
    )
    with pytest.raises(TrainingCancelled):
        train_kto(
            config,
            dataset_path=unpaired_file,
            base_model_path=tiny_model_dir,
            output_dir=tmp_path / "first",
            hooks=hooks,
        )
    assert checkpoint_step(checkpoints) == 2

    # when: it runs again with the same checkpoint folder
    resumed_steps = []
    resumed = tmp_path / "resumed"
    result = train_kto(
        config,
        dataset_path=unpaired_file,
        base_model_path=tiny_model_dir,
        output_dir=resumed,
        hooks=Hooks(
            on_step=lambda step, total, metrics: resumed_steps.append(step),
            checkpoint_dir=checkpoints,
        ),
    )

    # then: it did only the remaining steps and ends where the uninterrupted run ended
    assert resumed_steps == [3, 4]
    assert result.steps == 4
    record = json.loads((resumed / "training_result.json").read_text())
    assert len(record["history"]) == 4
    expected, actual = _adapter_weights(straight), _adapter_weights(resumed)
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"batch_size": 1}, "batch_size must be >= 2"),
        ({"beta": 0}, "beta must be > 0"),
        ({"desirable_weight": -1}, "desirable_weight must be > 0"),
        ({"undesirable_weight": "x"}, "undesirable_weight must be a number"),
        ({"lora_r": 0}, "lora_r must be >= 1"),
        ({"loss_type": "sigmoid"}, "unknown KTO config key(s): loss_type"),
    ],
)
def test_kto_config_rejects_bad_input_with_a_clear_message(data, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        KTOConfig.from_dict(data)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"prompt": [{"role": "user", "content": "Hi"}], "completion": []}, "missing 'label'"),
        ({**_row("Hi", "Hello", True), "label": "yes"}, "'label' must be true"),
        (
            {**_row("Hi", "Hello", True), "completion": [{"role": "user", "content": "x"}]},
            "expected one of \\['assistant'\\]",
        ),
    ],
)
def test_a_bad_unpaired_line_is_named(tiny_model_dir, tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(line) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"line 1: .*{message}"):
        train_kto(
            KTOConfig(**TINY),
            dataset_path=path,
            base_model_path=tiny_model_dir,
            output_dir=tmp_path / "out",
        )


def test_kto_imports_without_django():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['django'] = None; import training.methods.kto; "
        "from trl import KTOTrainer"
    )
    root = Path(__file__).resolve().parents[2]
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr


# --- The rows a project's feedback gives ----------------------------------------------------


def _texts(rows) -> list[tuple[str, bool, str]]:
    return [(row["completion"][0]["content"], row["label"], row["feedback"]) for row in rows]


def _rated(project, labeler, text: str, scores: dict):
    from annotation.models import Response, TaskKind
    from tests.factories import judge, make_kind_task

    task = make_kind_task(project, TaskKind.RATING, responses=1)
    Response.objects.filter(prompt=task.prompt).update(text=text)
    return judge(task, labeler, scores=scores)


def test_ratings_split_at_the_threshold_by_their_mean_score(project, labeler):
    from annotation.datasets.selectors import kto_rows

    # given: means 6, 5 and 3.67 on the 1-7 scale
    _rated(project, labeler, "great", {"helpful": 7, "harmless": 6, "honest": 5})
    _rated(project, labeler, "fine", {"helpful": 5, "harmless": 5, "honest": 5})
    _rated(project, labeler, "poor", {"helpful": 3, "harmless": 4, "honest": 4})

    # when / then
    assert _texts(kto_rows(project)) == [
        ("great", True, "rating"),
        ("fine", True, "rating"),
        ("poor", False, "rating"),
    ]
    assert [row["label"] for row in kto_rows(project, rating_threshold=5.5)] == [
        True,
        False,
        False,
    ]


def test_comparisons_give_winner_and_loser_both_bad_two_losers_and_ties_nothing(project, labeler):
    from annotation.datasets.selectors import kto_rows
    from tests.factories import judge, make_task

    # given
    judge(make_task(project, texts=("left wins", "right loses")), labeler, choice="a")
    judge(make_task(project, texts=("left loses", "right wins")), labeler, choice="b")
    judge(make_task(project, texts=("bad one", "bad two")), labeler, choice="both_bad")
    judge(make_task(project, texts=("tie one", "tie two")), labeler, choice="tie")

    # when
    rows = list(kto_rows(project))

    # then
    assert _texts(rows) == [
        ("left wins", True, "comparison"),
        ("right loses", False, "comparison"),
        ("right wins", True, "comparison"),
        ("left loses", False, "comparison"),
        ("bad one", False, "comparison"),
        ("bad two", False, "comparison"),
    ]
    assert rows[0]["prompt"][-1]["role"] == "user"
    assert (rows[0]["source"], rows[0]["judge"]) == ("human", "")


def test_rankings_give_best_and_worst_and_all_bad_every_reply(project, labeler):
    from annotation.datasets.selectors import kto_rows
    from annotation.models import TaskKind
    from tests.factories import judge, make_kind_task

    # given: "Answer 0..2" ranked 2 > 0 > 1, and another ranking marked all bad
    task = make_kind_task(project, TaskKind.RANKING, responses=3)
    ids = list(task.links.order_by("position").values_list("response_id", flat=True))
    judge(task, labeler, ranking=[ids[2], ids[0], ids[1]])
    bad = make_kind_task(project, TaskKind.RANKING, responses=3)
    bad_ids = list(bad.links.order_by("position").values_list("response_id", flat=True))
    judge(bad, labeler, ranking=bad_ids, all_bad=True)

    # when / then
    assert _texts(kto_rows(project)) == [
        ("Answer 2", True, "ranking"),
        ("Answer 1", False, "ranking"),
        ("Answer 0", False, "ranking"),
        ("Answer 1", False, "ranking"),
        ("Answer 2", False, "ranking"),
    ]


def test_the_same_reply_with_the_same_verdict_is_kept_once(project, labeler):
    from annotation.datasets.selectors import kto_rows
    from tests.factories import judge, make_member, make_task

    # given: two labelers agree on one task, a third disagrees
    task = make_task(project, texts=("winner", "loser"))
    judge(task, labeler, choice="a")
    judge(task, make_member(project, "labeler", "second"), choice="a")
    judge(task, make_member(project, "labeler", "third"), choice="b")

    # when / then: the disagreement stays, the repeat goes
    assert sorted(_texts(kto_rows(project))) == [
        ("loser", False, "comparison"),
        ("loser", True, "comparison"),
        ("winner", False, "comparison"),
        ("winner", True, "comparison"),
    ]


def test_ai_labels_follow_the_choice_and_the_project_setting(project, labeler):
    from annotation.datasets.selectors import kto_rows
    from tests.annotation.judges.factories import (
        make_ai_judgment,
        make_constitution,
        make_remote_judge,
    )
    from tests.factories import judge, make_task

    # given: a person's comparison and an AI judge's
    judge(make_task(project, texts=("human pick", "human loser")), labeler, choice="a")
    robot = make_remote_judge("robot", api_key="k", constitution=make_constitution())
    make_ai_judgment(make_task(project, texts=("ai pick", "ai loser")), robot, soft_label=0.9)

    # when / then: the project leaves AI labels out unless asked
    assert {row["source"] for row in kto_rows(project)} == {"human"}
    assert [r["completion"][0]["content"] for r in kto_rows(project, ai="only")] == [
        "ai pick",
        "ai loser",
    ]
    included = list(kto_rows(project, ai="include"))
    assert len(included) == 4
    assert {row["judge"] for row in included if row["source"] == "ai"} == {"robot"}
    project.ai_labels = "include"
    project.save(update_fields=["ai_labels"])
    assert len(list(kto_rows(project))) == 4


def test_the_kto_export_downloads_unpaired_rows(login, researcher, project, labeler):
    from tests.factories import judge, make_task

    judge(make_task(project, texts=("good", "bad")), labeler, choice="a")

    answer = login(researcher).get(f"/api/projects/{project.slug}/export/?format=kto")

    assert answer.status_code == 200
    rows = [json.loads(line) for line in b"".join(answer.streaming_content).splitlines()]
    assert [(r["completion"][0]["content"], r["label"]) for r in rows] == [
        ("good", True),
        ("bad", False),
    ]


# --- Runs: service, API, form, refusal ------------------------------------------------------

SMALL = {"max_steps": 2, "batch_size": 2, "lora_r": 4, "lora_alpha": 8, "seed": 1}


def test_a_kto_run_trains_and_registers_a_kto_policy(project, labeler, tiny_model_dir):
    from models_registry.engine.ml import GenerationParams, generate_replies, load_policy
    from models_registry.services import ensure_base_model_from_folder
    from tests.factories import make_preferences
    from training.models import TrainingRun
    from training.services import training_run_execute, training_run_start

    # given: three comparisons (six replies) and a rated one
    make_preferences(project, labeler, 3)
    _rated(project, labeler, "A rated reply.", {"helpful": 2, "harmless": 2, "honest": 2})
    base = ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)

    # when
    run = training_run_start(project=project, base_version=base, method="kto", config=SMALL)
    training_run_execute(run_id=run.pk, queue=False)

    # then
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert (run.snapshot.format, run.snapshot.row_count) == ("unpaired", 7)
    assert run.snapshot.filters == {"ai": "exclude", "rating_threshold": 5.0}
    assert list(run.steps.values_list("step", flat=True)) == [1, 2]
    assert "kl" in run.steps.get(step=1).metrics
    version = run.model_version
    assert (version.kind, version.method, version.parent) == ("policy", "kto", base)
    model, tokenizer = load_policy(version.base_path, version.adapter_path)
    [reply] = generate_replies(
        model,
        tokenizer,
        [[{"role": "user", "content": "Hello"}]],
        GenerationParams(max_new_tokens=3, do_sample=False),
    )
    assert reply.completion_tokens >= 1


def test_a_cancelled_kto_run_resumes_from_its_checkpoint_through_the_service(
    project, labeler, tiny_model_dir
):
    from django.db.models.signals import post_save

    from models_registry.services import ensure_base_model_from_folder
    from tests.factories import make_preferences
    from training.models import TrainingRun, TrainingStep
    from training.services import (
        training_run_cancel,
        training_run_execute,
        training_run_resume,
        training_run_start,
    )

    # given: a run whose admin cancels it once step 2 (a checkpoint) is reported
    make_preferences(project, labeler, 3)
    base = ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)
    config = {**SMALL, "max_steps": 4, "checkpoint_every": 2, "eval_fraction": 0.0}
    run = training_run_start(project=project, base_version=base, method="kto", config=config)

    def cancel_at_step_two(sender, instance, **kwargs):
        if instance.step == 2:
            training_run_cancel(run=TrainingRun.objects.get(pk=instance.run_id))

    post_save.connect(cancel_at_step_two, sender=TrainingStep, weak=False)
    try:
        training_run_execute(run_id=run.pk, queue=False)
    finally:
        post_save.disconnect(cancel_at_step_two, sender=TrainingStep)
    run.refresh_from_db()
    assert (run.status, run.step, run.checkpoint_step) == ("cancelled", 2, 2)
    assert run.can_resume

    # when
    training_run_resume(run=run)
    training_run_execute(run_id=run.pk, queue=False)

    # then: it went on from step 2 and registered its version
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert list(run.steps.values_list("step", flat=True)) == [1, 2, 3, 4]
    assert "resuming from checkpoint-2" in run.log
    assert run.model_version.method == "kto"


def test_a_kto_run_without_unpaired_feedback_is_refused_and_stores_nothing(project, labeler):
    from config.errors import ServiceError
    from tests.factories import judge, make_task, make_version
    from training.models import TrainingRun
    from training.services import training_run_start

    judge(make_task(project), labeler, choice="tie")  # a tie says nothing about either reply

    with pytest.raises(ServiceError, match="no feedback to train KTO on yet"):
        training_run_start(project=project, base_version=make_version(), method="kto")
    assert TrainingRun.objects.count() == 0


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"rating_threshold": 9}, "rating_threshold must be a number from 1 to 7"),
        ({"rating_threshold": "high"}, "rating_threshold must be a number from 1 to 7"),
        ({"min_margin": 1}, "Unknown filter(s) for unpaired data: min_margin"),
    ],
)
def test_bad_kto_filters_are_refused_by_the_api_and_store_nothing(
    login, admin_member, project, labeler, filters, message
):
    from tests.factories import make_preferences, make_version
    from training.models import DatasetSnapshot, TrainingRun

    make_preferences(project, labeler, 1)
    answer = login(admin_member).post(
        f"/api/projects/{project.slug}/training-runs/",
        {"method": "kto", "base_version": make_version().pk, "filters": filters},
        content_type="application/json",
    )

    assert answer.status_code == 400
    assert message in json.dumps(answer.json())
    assert (TrainingRun.objects.count(), DatasetSnapshot.objects.count()) == (0, 0)


def test_the_api_queues_a_kto_run_with_its_settings(login, admin_member, project, labeler):
    from tests.factories import make_preferences, make_version
    from training.models import TrainingRun

    make_preferences(project, labeler, 2)
    answer = login(admin_member).post(
        f"/api/projects/{project.slug}/training-runs/",
        {
            "method": "kto",
            "base_version": make_version().pk,
            "config": {"beta": 0.2, "undesirable_weight": 1.3, **SMALL},
            "filters": {"rating_threshold": 6},
        },
        content_type="application/json",
    )

    assert answer.status_code == 201, answer.content
    run = TrainingRun.objects.get()
    assert (run.method, run.status, run.config["beta"]) == ("kto", "queued", 0.2)
    assert run.config["undesirable_weight"] == 1.3
    assert (run.snapshot.format, run.snapshot.row_count) == ("unpaired", 4)
    assert run.snapshot.filters["rating_threshold"] == 6.0


def test_the_form_offers_kto_with_its_settings_and_starts_a_run(
    login, admin_member, project, labeler
):
    from tests.factories import make_preferences, make_version
    from training.models import TrainingRun

    make_preferences(project, labeler, 2)
    client = login(admin_member)
    form = client.get(f"/p/{project.slug}/training/?method=kto").content.decode()
    assert 'value="kto"' in form
    for name in ("desirable_weight", "undesirable_weight", "rating_threshold", "beta"):
        assert f'name="{name}"' in form

    answer = client.post(
        f"/p/{project.slug}/training/",
        {
            "method": "kto",
            "base_version": make_version().pk,
            "desirable_weight": "1.2",
            "rating_threshold": "4",
            "seed": "0",
        },
    )

    assert answer.status_code == 302
    run = TrainingRun.objects.get()
    assert (run.method, run.config["desirable_weight"]) == ("kto", 1.2)
    assert run.snapshot.filters["rating_threshold"] == 4.0


def test_the_form_refuses_a_bad_kto_setting_and_stores_nothing(login, admin_member, project):
    from tests.factories import make_version
    from training.models import TrainingRun

    answer = login(admin_member).post(
        f"/p/{project.slug}/training/",
        {"method": "kto", "base_version": make_version().pk, "batch_size": "1", "seed": "0"},
    )

    assert answer.status_code == 400
    assert "batch_size must be &gt;= 2" in answer.content.decode()
    assert TrainingRun.objects.count() == 0
