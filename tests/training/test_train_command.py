import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db.models.signals import post_save

from annotation.candidates.models import GenerationJob
from annotation.models import Response
from models_registry.models import ModelVersion
from models_registry.services import ensure_base_model_from_folder
from tests.factories import make_preferences, make_version
from training.models import DatasetSnapshot, TrainingRun, TrainingStep
from training.services import training_run_cancel


def test_train_now_trains_in_this_process_and_prints_the_run(project, labeler, tiny_model_dir):
    # given
    make_preferences(project, labeler, 4)
    ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)
    out = StringIO()

    # when
    call_command(
        "train",
        "--project", project.slug,
        "--method", "dpo",
        "--base", "tiny",
        "--set", "max_steps=2",
        "--set", "batch_size=2",
        "--set", "loss_type=ipo",
        "--now",
        stdout=out,
    )  # fmt: skip

    # then
    summary = json.loads(out.getvalue())
    run = TrainingRun.objects.get(pk=summary["run"])
    assert summary["status"] == "succeeded"
    assert (run.config["max_steps"], run.config["loss_type"]) == (2, "ipo")
    assert summary["model_version"] == ModelVersion.objects.get(training_run=run).name


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--project", "nope", "--method", "dpo", "--base", "tiny"], "No project with slug 'nope'"),
        (["--project", "alpha", "--method", "dpo", "--base", "missing"], "No model version"),
        (
            ["--project", "alpha", "--method", "dpo", "--base", "tiny", "--set", "beta=-1"],
            "Bad training config: beta must be > 0",
        ),
        (["--project", "alpha", "--method", "dpo", "--base", "tiny", "--set", "beta"], "key=value"),
        (["--project", "alpha", "--method", "ppo", "--base", "tiny"], "needs a reward model"),
        (
            ["--project", "alpha", "--method", "kto", "--base", "tiny", "--rating-threshold", "9"],
            "rating_threshold must be a number from 1 to 7",
        ),
    ],
)
def test_bad_arguments_fail_clearly_and_store_nothing(project, labeler, arguments, message):
    make_preferences(project, labeler, 2)
    make_version("tiny")

    with pytest.raises(CommandError, match=message):
        call_command("train", *arguments, stdout=StringIO())

    assert TrainingRun.objects.count() == 0
    assert DatasetSnapshot.objects.count() == 0


TINY = ["--set", "batch_size=2", "--set", "lora_r=4", "--set", "lora_alpha=8", "--set", "seed=1"]


def test_train_now_runs_every_stage_and_the_generation_in_this_process(
    project, labeler, tiny_model_dir
):
    # given: preferences on 4 prompts and no worker anywhere
    make_preferences(project, labeler, 4)
    ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)
    out = StringIO()

    # when
    call_command(
        "train", "--project", project.slug, "--method", "dpo", "--base", "tiny",
        "--sft-first", "--set", "max_steps=2", *TINY, "--now",
        stdout=out,
    )  # fmt: skip

    # then: both stages trained 2 steps, and the final version's candidates were generated
    summary = json.loads(out.getvalue())
    sft, dpo = TrainingRun.objects.order_by("pk")
    assert [(r.method, r.status, r.step) for r in (sft, dpo)] == [
        ("sft", "succeeded", 2),
        ("dpo", "succeeded", 2),
    ]
    assert sft.config["max_steps"] == 2
    job = GenerationJob.objects.get()  # none for the intermediate SFT stage
    assert (job.model_version, job.status) == (dpo.model_version, "succeeded")
    assert Response.objects.filter(model_version=dpo.model_version).count() == job.done == 4
    assert summary["left_queued"] == []
    assert [(s["method"], s["intermediate"]) for s in summary["stages"]] == [
        ("sft", True),
        ("dpo", False),
    ]
    assert summary["generation_jobs"][0]["status"] == "succeeded"


def test_without_now_the_command_says_what_it_left_queued(project, labeler, tiny_model_dir):
    make_preferences(project, labeler, 2)
    ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)
    out = StringIO()

    call_command(
        "train", "--project", project.slug, "--method", "dpo", "--base", "tiny", stdout=out
    )

    run = TrainingRun.objects.get()
    assert json.loads(out.getvalue())["left_queued"] == [f"training run {run.pk} (dpo)"]


def test_train_now_exits_non_zero_when_the_run_is_cancelled(project, labeler, tiny_model_dir):
    # given: an admin presses Cancel as soon as the run reports its first step
    make_preferences(project, labeler, 4)
    ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)

    def cancel_after_the_first_step(sender, instance, created, **kwargs):
        if created:
            training_run_cancel(run=instance.run)

    post_save.connect(cancel_after_the_first_step, sender=TrainingStep, weak=False)
    out = StringIO()
    try:
        # when / then
        with pytest.raises(CommandError, match=r"Run \d+ \(dpo\) was cancelled while it trained"):
            call_command(
                "train", "--project", project.slug, "--method", "dpo", "--base", "tiny",
                "--set", "max_steps=3", *TINY, "--now",
                stdout=out,
            )  # fmt: skip
    finally:
        post_save.disconnect(cancel_after_the_first_step, sender=TrainingStep)

    run = TrainingRun.objects.get()
    assert (run.status, run.step) == ("cancelled", 1)
    assert json.loads(out.getvalue())["status"] == "cancelled"
    assert not ModelVersion.objects.filter(training_run=run).exists()
    assert not GenerationJob.objects.exists()


def test_train_now_exits_non_zero_when_the_sft_stage_fails(project, labeler, tmp_path):
    make_preferences(project, labeler, 2)
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    make_version("broken", path=str(broken))

    with pytest.raises(CommandError, match=r"Run \d+ \(sft\) failed: "):
        call_command(
            "train", "--project", project.slug, "--method", "dpo", "--base", "broken",
            "--sft-first", "--now",
            stdout=StringIO(),
        )  # fmt: skip

    run = TrainingRun.objects.get()  # the DPO stage never started
    assert (run.method, run.status) == ("sft", "failed")
    assert not GenerationJob.objects.exists()


def test_a_kto_run_takes_its_rating_threshold_from_the_command(project, labeler, tiny_model_dir):
    make_preferences(project, labeler, 2)
    ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)
    err = StringIO()

    call_command(
        "train",
        *["--project", project.slug, "--method", "kto", "--base", "tiny"],
        *["--rating-threshold", "6"],
        stdout=StringIO(),
        stderr=err,
    )

    run = TrainingRun.objects.get()
    assert (run.method, run.snapshot.format) == ("kto", "unpaired")
    assert run.snapshot.filters["rating_threshold"] == 6.0
    assert err.getvalue().startswith("AI labels: excluded")
