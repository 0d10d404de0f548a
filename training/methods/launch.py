"""One training method in several processes: ``accelerate launch`` starts them, and this
module carries their progress back to the caller's ``Hooks``.

The caller (the ``gpu`` worker, through ``training/services.py``) calls
``train_in_processes``, which writes the job to a private channel folder, starts
``accelerate launch --config_file <preset> --num_processes N -m training.methods.launch
<job>`` and, while the processes train, replays what the main process reports (each step's
metrics, log lines) to ``Hooks`` and turns a cancel request into a file every rank can see
(the main process reads it, and ``trl_runtime``'s bridge broadcasts its decision). When the
processes end it returns the method's result, raises ``TrainingCancelled``, or raises
``LaunchFailed`` with the reason (the rank that died and its last error line).

Each rank runs ``main()`` below: the same ``train_<method>`` as a single-process run, with
hooks that write events from the main process only. The presets (``training/launch_configs/``)
follow TRL's own accelerate configs; ``check_launch`` refuses, before anything is stored, a
layout the worker's hardware cannot run.

Why our own code: ``accelerate launch`` and torchrun start and watch the processes, but
nothing in them reports progress to a caller, forwards a cancel, or explains a dead rank.
Nothing here imports Django.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.methods.common import Hooks, TrainingCancelled, write_json

STRATEGIES = ("ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3")
PRESETS_DIR = Path(__file__).resolve().parent.parent / "launch_configs"
EVENTS = "events.jsonl"
CANCEL = "cancel"
RESULT = "result.json"
LOG = "processes.log"
POLL_SECONDS = 0.5
CANCEL_GRACE_SECONDS = 60
MAIN_GONE_GRACE_SECONDS = 5


class LaunchFailed(RuntimeError):
    """The processes of a run ended without a result; the message says why."""


@dataclass(frozen=True)
class Devices:
    """What a training worker can run on: ``kind`` "cuda" or "cpu" and how many (GPUs, or
    CPU cores), and whether DeepSpeed and bitsandbytes are installed."""

    kind: str
    count: int
    deepspeed: bool = False
    bitsandbytes: bool = False

    @classmethod
    def detect(cls) -> Devices:
        import importlib.util

        import torch

        installed = importlib.util.find_spec
        cuda = torch.cuda.is_available()
        return cls(
            kind="cuda" if cuda else "cpu",
            count=torch.cuda.device_count() if cuda else (os.cpu_count() or 1),
            deepspeed=installed("deepspeed") is not None,
            bitsandbytes=installed("bitsandbytes") is not None,
        )

    @classmethod
    def parse(cls, text: str) -> Devices:
        """``"cuda:8"``, ``"cpu:4"``, with ``+deepspeed`` / ``+bitsandbytes`` when the
        worker has them (e.g. ``"cuda:8+deepspeed+bitsandbytes"``): an operator's
        description of a training worker on another machine."""
        head, *extras = text.strip().split("+")
        match = re.fullmatch(r"(cuda|cpu):(\d+)", head.strip())
        if match is None or int(match[2]) < 1 or set(extras) - {"deepspeed", "bitsandbytes"}:
            raise ValueError(
                f"bad training devices {text!r}: expected e.g. 'cuda:8', 'cpu:4' or "
                "'cuda:8+deepspeed+bitsandbytes'"
            )
        return cls(match[1], int(match[2]), "deepspeed" in extras, "bitsandbytes" in extras)

    def default_processes(self) -> int:
        """Every visible GPU, else one process."""
        return self.count if self.kind == "cuda" else 1

    def describe(self) -> str:
        unit = "GPU" if self.kind == "cuda" else "CPU core"
        return f"{self.count} {unit}{'s' if self.count != 1 else ''}"


def check_launch(
    *,
    processes: int,
    strategy: str,
    qlora: bool,
    distributable: bool,
    devices: Devices,
    precision: str = "auto",
) -> None:
    """Raise ``ValueError`` with a clear message when ``devices`` cannot run this layout."""
    if precision == "fp16" and devices.kind != "cuda":
        raise ValueError(
            "fp16 mixed precision needs a CUDA GPU; on CPU use auto (bf16 where the CPU has "
            "it) or fp32"
        )
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
        raise ValueError("processes must be a whole number >= 1")
    if processes > 1 and not distributable:
        raise ValueError("this method trains in one process; set processes to 1")
    if processes > devices.count:
        raise ValueError(
            f"{processes} processes asked for, but the training worker has "
            f"{devices.describe()}: use at most {devices.count}"
        )
    if strategy == "fsdp" and (devices.kind != "cuda" or processes < 2):
        raise ValueError(
            "FSDP shards the model across GPUs: it needs at least 2 processes on 2 GPUs "
            f"(the training worker has {devices.describe()}, {processes} asked for)"
        )
    if strategy.startswith("deepspeed"):
        if devices.kind != "cuda":
            raise ValueError(
                f"DeepSpeed needs CUDA GPUs; the training worker has {devices.describe()}"
            )
        if not devices.deepspeed:
            raise ValueError("DeepSpeed is not installed on the training worker")
    if qlora:
        if devices.kind != "cuda":
            raise ValueError(
                "QLoRA loads 4-bit base weights with bitsandbytes, which needs a CUDA GPU; "
                f"the training worker has {devices.describe()}"
            )
        if not devices.bitsandbytes:
            raise ValueError("QLoRA needs bitsandbytes, which the training worker lacks")
        if strategy != "ddp":
            raise ValueError("QLoRA runs with the ddp strategy only")


def preset_path(strategy: str) -> Path:
    return PRESETS_DIR / f"{strategy}.yaml"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_command(job_file: Path, *, processes: int, strategy: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(preset_path(strategy)),
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "training.methods.launch",
        str(job_file),
    ]


def train_in_processes(
    *,
    module: str,
    method: str,
    config_name: str,
    config: dict[str, Any],
    dataset_path: str | Path,
    base_model_path: str | Path,
    output_dir: str | Path,
    channel: Path,
    hooks: Hooks,
    processes: int,
    strategy: str = "ddp",
) -> dict[str, Any]:
    """Train ``module.train_<method>`` (config class ``module.<config_name>``) in
    ``processes`` processes; returns the result the main process wrote (``steps``,
    ``metrics``, ``library_versions``). ``channel`` is an empty private folder for the job,
    the events and the processes' log. Without a checkpoint folder in ``hooks`` the ranks
    share ``channel/checkpoints`` (TRL's trainers pass files between ranks there)."""
    channel.mkdir(parents=True, exist_ok=True)
    for leftover in (EVENTS, CANCEL, RESULT):  # of an earlier attempt in the same folder
        (channel / leftover).unlink(missing_ok=True)
    job_file = channel / "job.json"
    write_json(
        job_file,
        {
            "module": module,
            "method": method,
            "config_name": config_name,
            "config": config,
            "dataset_path": str(dataset_path),
            "base_model_path": str(base_model_path),
            "output_dir": str(output_dir),
            "checkpoint_dir": str(hooks.checkpoint_dir or channel / "checkpoints"),
            "channel": str(channel),
            "caller_pid": os.getpid(),
        },
    )
    command = launch_command(job_file, processes=processes, strategy=strategy)
    hooks.say(f"launching {processes} processes ({strategy})")
    with open(channel / LOG, "wb") as log:
        child = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(Path(__file__).resolve().parents[2]),
            start_new_session=True,  # one group: a cancel or a failure stops every rank
        )
        returncode = _watch(child, channel, hooks)
    return _outcome(returncode, channel)


def _watch(child: subprocess.Popen, channel: Path, hooks: Hooks) -> int:
    """Replay events and forward a cancel until the processes end. A cancel the ranks do
    not act on within ``CANCEL_GRACE_SECONDS`` (one seen before training started stops
    the main process alone, while the others wait for it) ends them all."""
    events = _EventReader(channel / EVENTS)
    cancel_sent_at: float | None = None
    try:
        while child.poll() is None:
            events.replay(hooks)
            if cancel_sent_at is None and hooks.should_stop is not None and hooks.should_stop():
                (channel / CANCEL).touch()
                cancel_sent_at = time.monotonic()
            grace = CANCEL_GRACE_SECONDS if not events.cancelled else MAIN_GONE_GRACE_SECONDS
            if cancel_sent_at and time.monotonic() - cancel_sent_at > grace:
                _stop_group(child)
            time.sleep(POLL_SECONDS)
    except BaseException:
        _stop_group(child)
        raise
    events.replay(hooks)
    return child.returncode


def _stop_group(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(timeout=30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def _outcome(returncode: int, channel: Path) -> dict[str, Any]:
    if (channel / CANCEL).exists() and not (channel / RESULT).exists():
        raise TrainingCancelled("training cancelled")
    if returncode == 0 and (channel / RESULT).exists():
        return json.loads((channel / RESULT).read_text(encoding="utf-8"))
    raise LaunchFailed(failure_reason(channel / LOG, returncode))


def failure_reason(log_file: Path, returncode: int) -> str:
    """The rank that failed and the last error line of the processes' log."""
    try:
        lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    text = "\n".join(lines)
    # torchrun's summary: the root cause (the first rank that failed) last, then the others.
    summary = re.compile(r"^\s+rank\s*:\s*(\d+) \(local_rank.*\n\s+exitcode\s*:\s*(-?\d+)", re.M)
    root, _, others = text.rpartition("Root Cause")
    exits: dict[str, str] = {}
    for match in [*summary.finditer(others), *summary.finditer(root)]:
        exits.setdefault(match[1], match[2])
    ranks = [f"rank {rank} exited with code {code}" for rank, code in exits.items()]
    errors = [
        line.strip()
        for line in lines
        if re.search(r"\w+(Error|Exception):", line) and "ChildFailedError" not in line
    ]
    detail = "; ".join(ranks) or f"the processes exited with code {returncode}"
    if errors:
        detail += f": {errors[-1][:300]}"
    return f"training processes failed ({detail})"


class _EventReader:
    """Reads the events the main process appends, a whole line at a time."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0
        self.cancelled = False  # the main process stopped on a cancel

    def replay(self, hooks: Hooks) -> None:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.decode("utf-8").splitlines():
            event = json.loads(line)
            if event["type"] == "step":
                hooks.step_done(event["step"], event["total"], event["metrics"])
            elif event["type"] == "log":
                hooks.say(event["message"])
            elif event["type"] == "cancelled":
                self.cancelled = True


# --- Inside each process ----------------------------------------------------------------


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _event_writer(path: Path):
    def write(event: dict[str, Any]) -> None:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(event) + "\n")

    return write


def process_hooks(channel: Path, checkpoint_dir: Path | None) -> Hooks:
    """The hooks of one rank: the main process reports and reads the cancel file; the
    others only checkpoint (the bridge gives them the main process's cancel decision)."""
    if _rank() != 0:
        return Hooks(checkpoint_dir=checkpoint_dir)
    write = _event_writer(channel / EVENTS)
    return Hooks(
        on_step=lambda step, total, metrics: write(
            {"type": "step", "step": step, "total": total, "metrics": metrics}
        ),
        should_stop=lambda: (channel / CANCEL).exists(),
        log=lambda message: write({"type": "log", "message": message}),
        checkpoint_dir=checkpoint_dir,
    )


def _exit_when_gone(pid: int, every: float = 2.0) -> None:
    """End this rank when the process that launched the run is gone (a worker killed
    outright): the ranks run in their own session, so nothing else would stop them, and a
    rank that exits makes torchrun end the others."""
    import threading

    def watch() -> None:
        while True:
            time.sleep(every)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass  # it exists, under another user

    threading.Thread(target=watch, name="caller-watch", daemon=True).start()


def main(job_file: str) -> None:
    import importlib

    job = json.loads(Path(job_file).read_text(encoding="utf-8"))
    if job.get("caller_pid"):
        _exit_when_gone(job["caller_pid"])
    module = importlib.import_module(job["module"])
    train = getattr(module, f"train_{job['method']}")
    config_class = getattr(module, job["config_name"])
    channel = Path(job["channel"])
    checkpoints = Path(job["checkpoint_dir"])
    try:
        result = train(
            config_class.from_dict(job["config"]),
            dataset_path=job["dataset_path"],
            base_model_path=job["base_model_path"],
            output_dir=job["output_dir"],
            hooks=process_hooks(channel, checkpoints),
        )
    except TrainingCancelled:
        if _rank() == 0:
            _event_writer(channel / EVENTS)({"type": "cancelled"})
        return
    if _rank() == 0:
        write_json(
            channel / RESULT,
            {
                "steps": result.steps,
                "metrics": result.metrics,
                "library_versions": result.library_versions,
            },
        )


if __name__ == "__main__":
    main(sys.argv[1])
