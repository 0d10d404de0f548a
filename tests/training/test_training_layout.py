"""A run's layout (processes, strategy) and runtime settings (precision, gradient
checkpointing, QLoRA) through the command, the API and the form: what the training worker
cannot run is refused when the run is created, with nothing stored; what it can run trains
in several processes end to end."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from annotation.candidates.models import GenerationJob
from annotation.models import Response
from models_registry.services import ensure_base_model_from_folder
from tests.factories import make_preferences, make_version
from training.models import DatasetSnapshot, TrainingRun, TrainingStep

TINY = ["--set", "batch_size=2", "--set", "lora_r=4", "--set", "lora_alpha=8", "--set", "seed=1"]


@pytest.fixture(autouse=True)
def two_cpu_worker(settings):
    settings.TRAINING_DEVICES = "cpu:2"


def test_sft_then_dpo_train_in_two_processes_each_and_the_version_generates(
    project, labeler, tiny_model_dir
):
    # given: preferences on 4 prompts, a worker with 2 CPU cores
    make_preferences(project, labeler, 4)
    ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)
    out = StringIO()

    # when
    call_command(
        "train", "--project", project.slug, "--method", "dpo", "--base", "tiny",
        "--sft-first", "--processes", "2", "--set", "max_steps=3", *TINY, "--now",
        stdout=out,
    )  # fmt: skip

    # then: both stages ran in 2 processes, each step recorded once
    sft, dpo = TrainingRun.objects.order_by("pk")
    assert [(r.method, r.status, r.processes, r.strategy) for r in (sft, dpo)] == [
        ("sft", "succeeded", 2, "ddp"),
        ("dpo", "succeeded", 2, "ddp"),
    ]
    for run in (sft, dpo):
        assert list(TrainingStep.objects.filter(run=run).values_list("step", flat=True)) == [
            1,
            2,
            3,
        ]
        assert "launching 2 processes (ddp)" in run.log
    # and the final version loads and answers every prompt
    job = GenerationJob.objects.get()
    assert (job.model_version, job.status) == (dpo.model_version, "succeeded")
    assert Response.objects.filter(model_version=dpo.model_version).count() == 4
    assert json.loads(out.getvalue())["status"] == "succeeded"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--method", "dpo", "--processes", "3"], "3 processes asked for, but the training worker"),
        (["--method", "sft", "--strategy", "fsdp"], "FSDP shards the model across GPUs"),
        (["--method", "dpo", "--strategy", "deepspeed-zero2"], "DeepSpeed needs CUDA GPUs"),
        (["--method", "dpo", "--set", "qlora=true"], "QLoRA loads 4-bit base weights"),
        (["--method", "ppo", "--processes", "2"], "this method trains in one process"),
        (["--method", "rrhf", "--set", "qlora=true"], "qlora: not offered for RRHF"),
        (["--method", "ppo", "--set", "mixed_precision=bf16"], "mixed_precision: not offered"),
        (["--method", "dpo", "--set", "mixed_precision=fp8"], "mixed_precision must be one of"),
        (["--method", "dpo", "--set", "mixed_precision=fp16"], "fp16 mixed precision needs a CUDA"),
    ],
)
def test_layouts_the_worker_cannot_run_fail_clearly_and_store_nothing(
    project, labeler, arguments, message
):
    make_preferences(project, labeler, 2)
    make_version("tiny")

    with pytest.raises(CommandError, match=message):
        call_command(
            "train", "--project", project.slug, "--base", "tiny", *arguments, stdout=StringIO()
        )

    assert (TrainingRun.objects.count(), DatasetSnapshot.objects.count()) == (0, 0)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"processes": 4}, "4 processes asked for, but the training worker has 2 CPU cores"),
        ({"processes": 0}, "processes must be a whole number >= 1"),
        ({"strategy": "fsdp", "processes": 2}, "FSDP shards the model across GPUs"),
        ({"strategy": "megatron"}, "is not a valid choice"),
        ({"config": {"qlora": True}}, "QLoRA loads 4-bit base weights"),
    ],
)
def test_the_api_refuses_what_the_worker_cannot_run(
    login, admin_member, project, labeler, body, message
):
    make_preferences(project, labeler, 1)
    answer = login(admin_member).post(
        f"/api/projects/{project.slug}/training-runs/",
        {"method": "dpo", "base_version": make_version().pk, **body},
        content_type="application/json",
    )

    assert answer.status_code == 400
    assert message in json.dumps(answer.json())
    assert (TrainingRun.objects.count(), DatasetSnapshot.objects.count()) == (0, 0)


def test_the_api_queues_a_two_process_run_and_shows_its_layout(
    login, admin_member, project, labeler
):
    make_preferences(project, labeler, 1)
    answer = login(admin_member).post(
        f"/api/projects/{project.slug}/training-runs/",
        {"method": "kto", "base_version": make_version().pk, "processes": 2},
        content_type="application/json",
    )

    assert answer.status_code == 201, answer.content
    assert (answer.json()["processes"], answer.json()["strategy"]) == (2, "ddp")
    assert TrainingRun.objects.get().processes == 2


def test_a_run_left_to_the_default_takes_one_process_on_a_cpu_worker(
    login, admin_member, project, labeler
):
    make_preferences(project, labeler, 1)
    answer = login(admin_member).post(
        f"/api/projects/{project.slug}/training-runs/",
        {"method": "dpo", "base_version": make_version().pk},
        content_type="application/json",
    )

    assert answer.status_code == 201, answer.content
    assert TrainingRun.objects.get().processes == 1


def test_a_gpu_worker_elsewhere_gets_every_gpu_by_default(
    settings, login, admin_member, project, labeler
):
    settings.TRAINING_DEVICES = "cuda:4"
    make_preferences(project, labeler, 1)

    answer = login(admin_member).post(
        f"/api/projects/{project.slug}/training-runs/",
        {"method": "reward", "base_version": make_version().pk},
        content_type="application/json",
    )

    assert answer.status_code == 201, answer.content
    assert TrainingRun.objects.get().processes == 4


def test_the_form_offers_the_layout_and_shows_a_refusal(login, admin_member, project, labeler):
    make_preferences(project, labeler, 1)
    client = login(admin_member)
    page = client.get(f"/p/{project.slug}/training/?method=dpo").content.decode()
    for name in ("processes", "strategy", "mixed_precision", "gradient_checkpointing", "qlora"):
        assert f'name="{name}"' in page

    answer = client.post(
        f"/p/{project.slug}/training/",
        {"method": "dpo", "base_version": make_version().pk, "strategy": "fsdp", "seed": "0"},
    )

    assert answer.status_code == 400
    assert "FSDP shards the model across GPUs" in answer.content.decode()
    assert TrainingRun.objects.count() == 0


def test_the_strategies_of_runs_are_the_launcher_presets():
    from training.methods.launch import STRATEGIES, preset_path

    assert [value for value, _ in TrainingRun.Strategy.choices] == list(STRATEGIES)
    assert all(preset_path(strategy).is_file() for strategy in STRATEGIES)


def test_the_form_offers_only_the_runtime_settings_a_method_takes(login, admin_member, project):
    client = login(admin_member)

    pages = {
        method: client.get(f"/p/{project.slug}/training/?method={method}").content.decode()
        for method in ("dpo", "rrhf", "ppo")
    }

    assert all(f'name="{name}"' in pages["dpo"] for name in ("mixed_precision", "qlora"))
    assert 'name="mixed_precision"' in pages["rrhf"] and 'name="qlora"' not in pages["rrhf"]
    assert 'name="mixed_precision"' not in pages["ppo"] and 'name="qlora"' not in pages["ppo"]
