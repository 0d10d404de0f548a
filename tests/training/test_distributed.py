"""Several processes: a method trained under ``accelerate launch`` on CPU (gloo), reporting
to the caller's hooks through ``training.methods.launch``, and the layouts a worker cannot
run refused before anything starts. Tiny random Llama; every run is seeded."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from training.methods.common import Hooks, TrainingCancelled
from training.methods.launch import (
    STRATEGIES,
    Devices,
    LaunchFailed,
    check_launch,
    preset_path,
    train_in_processes,
)

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPU cores")

TINY = {"lora_r": 4, "lora_alpha": 8, "learning_rate": 1e-3, "eval_fraction": 0.0, "seed": 3}
SAME_LOSS_TOLERANCE = 1e-3  # relative, per step: float32 all-reduce order differs by rank


def _preferences(path: Path, n: int = 16) -> Path:
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Do you like item {i}?"}],
            "chosen": [{"role": "assistant", "content": f"yes, item {i} is fine"}],
            "rejected": [{"role": "assistant", "content": "no"}],
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _unpaired(path: Path, n: int = 16) -> Path:
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Question number {i}?"}],
            "completion": [{"role": "assistant", "content": "yes" if i % 2 else "no"}],
            "label": bool(i % 2),
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _ranked(path: Path, n: int = 16) -> Path:
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Rank replies to item {i}"}],
            "responses": [f"best answer {i}", "fine", "no"],
            "scores": [3.0, 2.0, 1.0],
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


class Recorder:
    """Hooks that keep what the processes reported, and cancel when told to."""

    def __init__(self, checkpoint_dir: Path | None = None, cancel_after: int | None = None):
        self.steps: list[tuple[int, int, dict]] = []
        self.logs: list[str] = []
        self.cancel_after = cancel_after
        self.hooks = Hooks(
            on_step=lambda step, total, metrics: self.steps.append((step, total, metrics)),
            should_stop=lambda: (
                self.cancel_after is not None and len(self.steps) >= self.cancel_after
            ),
            log=self.logs.append,
            checkpoint_dir=checkpoint_dir,
        )


METHODS = {
    "sft": ("training.methods.sft", "SFTConfig", _preferences),
    "dpo": ("training.methods.dpo", "DPOConfig", _preferences),
    "kto": ("training.methods.kto", "KTOConfig", _unpaired),
    "rrhf": ("training.methods.rrhf", "RRHFConfig", _ranked),
}


def _train(tmp_path, tiny_model_dir, method, *, processes, name, recorder, **config):
    module, config_name, make_data = METHODS[method]
    return train_in_processes(
        module=module,
        method=method,
        config_name=config_name,
        config={**TINY, **config},
        dataset_path=make_data(tmp_path / f"{method}.jsonl"),
        base_model_path=tiny_model_dir,
        output_dir=tmp_path / name,
        channel=tmp_path / f"channel-{name}",
        hooks=recorder.hooks,
        processes=processes,
    )


@pytest.mark.parametrize("method", sorted(METHODS))
def test_two_processes_match_one_with_the_same_global_batch(method, tiny_model_dir, tmp_path):
    from models_registry.engine.ml import GenerationParams, generate_replies, load_policy

    # given: 2 processes x 2 rows and 1 process x 4 rows see the same 4 rows per step
    two, one = Recorder(), Recorder()

    # when
    result = _train(
        tmp_path, tiny_model_dir, method, processes=2, name="two", recorder=two,
        batch_size=2, max_steps=4,
    )  # fmt: skip
    _train(
        tmp_path, tiny_model_dir, method, processes=1, name="one", recorder=one,
        batch_size=4, max_steps=4,
    )  # fmt: skip

    # then: each step reported once, by the main process
    assert [step for step, _, _ in two.steps] == [1, 2, 3, 4]
    assert result["steps"] == 4
    assert any("launching 2 processes (ddp)" in line for line in two.logs)
    # and the loss curves agree step by step
    for (_, _, a), (_, _, b) in zip(two.steps, one.steps, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=SAME_LOSS_TOLERANCE)
    # and the artifact, written once, loads and generates
    record = json.loads((tmp_path / "two" / "training_result.json").read_text())
    assert record["steps"] == 4
    model, tokenizer = load_policy(tiny_model_dir, tmp_path / "two")
    [reply] = generate_replies(
        model,
        tokenizer,
        [[{"role": "user", "content": "Hello?"}]],
        GenerationParams(max_new_tokens=4, do_sample=False),
    )
    assert reply.completion_tokens >= 1


@pytest.mark.parametrize("method", ["kto", "rrhf"])  # TRL's Trainer, and our own loop
def test_cancel_reaches_every_rank_and_a_rerun_resumes_from_the_checkpoint(
    method, tiny_model_dir, tmp_path
):
    # given: checkpoints every 2 steps, cancelled once 3 steps were reported (the ranks
    # read the request at their next step's end, so they may do a few more first)
    checkpoints = tmp_path / "checkpoints"
    first = Recorder(checkpoints, cancel_after=3)
    common = {"batch_size": 2, "max_steps": 60, "epochs": 20, "checkpoint_every": 2}

    # when
    with pytest.raises(TrainingCancelled):
        _train(tmp_path, tiny_model_dir, method, processes=2, name="out", recorder=first, **common)

    # then: both ranks stopped at the same step (else they would wait on each other),
    # before the end, and nothing was saved
    stopped = len(first.steps)
    assert [step for step, _, _ in first.steps] == list(range(1, stopped + 1))
    assert 3 <= stopped < 60
    assert not (tmp_path / "out" / "training_result.json").exists()

    # when: the same run again, with the same checkpoint folder
    second = Recorder(checkpoints)
    result = _train(
        tmp_path, tiny_model_dir, method, processes=2, name="out", recorder=second, **common
    )

    # then: it went on from the last checkpoint before the cancel to the end
    resumed_at = stopped - stopped % 2
    assert any("resum" in line and str(resumed_at) in line for line in second.logs)
    assert [step for step, _, _ in second.steps] == list(range(resumed_at + 1, 61))
    assert result["steps"] == 60
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()


def _rank_pids(rank: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"training.methods.launch" in command and f"RANK={rank}".encode() in environ:
            found.append(int(proc.name))
    return found


def test_a_dead_rank_fails_the_run_with_the_reason(tiny_model_dir, tmp_path):
    # given: a long run whose rank 1 is killed once training started
    recorder = Recorder()

    def kill_rank_one():
        deadline = time.monotonic() + 300
        while not recorder.steps and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in _rank_pids(1):
            os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_rank_one)
    killer.start()

    # when / then
    with pytest.raises(LaunchFailed, match=r"rank 1 exited with code -9"):
        _train(
            tmp_path, tiny_model_dir, "kto", processes=2, name="dead", recorder=recorder,
            batch_size=2, max_steps=500,
        )  # fmt: skip
    killer.join()
    assert not (tmp_path / "dead" / "training_result.json").exists()


# --- What a worker can run ------------------------------------------------------------------

CPU2 = Devices("cpu", 2)
GPU1 = Devices("cuda", 1, deepspeed=True, bitsandbytes=True)
GPU8 = Devices("cuda", 8, deepspeed=True, bitsandbytes=True)


@pytest.mark.parametrize(
    ("layout", "devices", "message"),
    [
        ({"strategy": "fsdp", "processes": 2}, CPU2, "FSDP shards the model across GPUs"),
        ({"strategy": "fsdp", "processes": 1}, GPU1, "at least 2 processes on 2 GPUs"),
        ({"processes": 3}, CPU2, "3 processes asked for, but the training worker has 2 CPU"),
        ({"processes": 9}, GPU8, "use at most 8"),
        ({"qlora": True}, CPU2, "QLoRA loads 4-bit base weights with bitsandbytes"),
        ({"qlora": True}, Devices("cuda", 1), "QLoRA needs bitsandbytes"),
        ({"strategy": "deepspeed-zero3", "processes": 2}, CPU2, "DeepSpeed needs CUDA GPUs"),
        ({"strategy": "deepspeed-zero2"}, Devices("cuda", 2), "DeepSpeed is not installed"),
        ({"strategy": "megatron"}, GPU8, "strategy must be one of"),
        ({"processes": 0}, GPU8, "processes must be a whole number"),
        ({"processes": 2, "distributable": False}, GPU8, "this method trains in one process"),
    ],
)
def test_layouts_the_worker_cannot_run_are_refused(layout, devices, message):
    arguments = {"processes": 1, "strategy": "ddp", "qlora": False, "distributable": True}
    with pytest.raises(ValueError, match=message):
        check_launch(**{**arguments, **layout}, devices=devices)


@pytest.mark.parametrize(
    ("layout", "devices"),
    [
        ({"processes": 2}, CPU2),
        ({"strategy": "fsdp", "processes": 8}, GPU8),
        ({"strategy": "deepspeed-zero3", "processes": 8, "qlora": False}, GPU8),
        ({"qlora": True}, GPU1),
    ],
)
def test_layouts_the_worker_can_run_pass(layout, devices):
    arguments = {"processes": 1, "strategy": "ddp", "qlora": False, "distributable": True}
    check_launch(**{**arguments, **layout}, devices=devices)


def test_devices_of_a_worker_elsewhere_are_read_from_a_setting():
    assert Devices.parse("cuda:8+deepspeed") == Devices("cuda", 8, deepspeed=True)
    assert Devices.parse("cpu:4").default_processes() == 1
    assert Devices.parse("cuda:4").default_processes() == 4
    with pytest.raises(ValueError, match="expected e.g. 'cuda:8'"):
        Devices.parse("tpu:8")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_preset_is_read_by_accelerate(strategy):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(preset_path(strategy)))
    expected = {"ddp": "MULTI_GPU", "fsdp": "FSDP"}.get(strategy, "DEEPSPEED")
    assert config.distributed_type.value == expected
    if strategy.startswith("deepspeed"):
        assert config.deepspeed_config["zero_stage"] == int(strategy[-1])


def test_a_cancel_before_training_starts_ends_every_rank(tiny_model_dir, tmp_path):
    # given: the run is cancelled at once, before any step (the main process stops alone)
    recorder = Recorder(cancel_after=0)

    # when / then: the waiting rank is ended too, instead of waiting forever
    with pytest.raises(TrainingCancelled):
        _train(
            tmp_path, tiny_model_dir, "kto", processes=2, name="early", recorder=recorder,
            batch_size=2, max_steps=60,
        )  # fmt: skip
    assert recorder.steps == []
    assert _rank_pids(1) == []


def test_the_ranks_end_when_the_process_that_launched_them_is_killed(tiny_model_dir, tmp_path):
    import subprocess
    import sys

    # given: a long 2-process run launched by a process of its own (a worker, say)
    data = _unpaired(tmp_path / "kto.jsonl")
    channel = tmp_path / "channel"
    script = f"""
from pathlib import Path
from training.methods.common import Hooks
from training.methods.launch import train_in_processes
train_in_processes(
    module="training.methods.kto", method="kto", config_name="KTOConfig",
    config={{**{TINY!r}, "batch_size": 2, "max_steps": 5000}},
    dataset_path={str(data)!r}, base_model_path={str(tiny_model_dir)!r},
    output_dir={str(tmp_path / "out")!r}, channel=Path({str(channel)!r}),
    hooks=Hooks(), processes=2,
)
"""
    caller = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[2])
    deadline = time.monotonic() + 300
    while not (channel / "events.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.5)  # the main rank's first event: training has started
    assert _rank_pids(1), "the run did not start"

    # when: the caller is killed outright
    caller.kill()
    caller.wait()

    # then: every rank ends on its own, soon
    deadline = time.monotonic() + 60
    while (_rank_pids(0) or _rank_pids(1)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _rank_pids(0) == [] and _rank_pids(1) == []


def test_a_checkpoint_left_half_written_by_a_dead_worker_is_not_resumed_from(tmp_path):
    from training.methods.common import CHECKPOINT_INFO, write_json
    from training.methods.trl_runtime import last_checkpoint

    # given: step 2's checkpoint complete and marked, step 4's being written when it died
    (tmp_path / "checkpoint-2").mkdir()
    write_json(tmp_path / CHECKPOINT_INFO, {"step": 2})
    (tmp_path / "checkpoint-4").mkdir()

    # then
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    assert last_checkpoint(tmp_path / "nothing-yet") is None
