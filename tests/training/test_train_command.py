import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from models_registry.models import ModelVersion
from models_registry.services import ensure_base_model_from_folder
from tests.factories import make_preferences, make_version
from training.models import DatasetSnapshot, TrainingRun


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
    ],
)
def test_bad_arguments_fail_clearly_and_store_nothing(project, labeler, arguments, message):
    make_preferences(project, labeler, 2)
    make_version("tiny")

    with pytest.raises(CommandError, match=message):
        call_command("train", *arguments, stdout=StringIO())

    assert TrainingRun.objects.count() == 0
    assert DatasetSnapshot.objects.count() == 0
