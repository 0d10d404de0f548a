"""`manage.py runlocal` starts its web server, workers and Celery beat, and stops them all
however it is stopped."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _children(pid: int) -> list[int]:
    listing = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in listing.read_text().split()] if listing.exists() else []


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def _env(tmp_path, **extra) -> dict:
    """runlocal's environment: its own SQLite file and folder broker."""
    return {
        **os.environ,
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "CELERY_BROKER_URL": "filesystem://",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def _start(env: dict, port: int) -> subprocess.Popen:
    """runlocal, started until it says it runs."""
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runlocal", "--addr", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started = time.monotonic()
    for line in process.stdout:
        if "Loop is running" in line or time.monotonic() - started > 120:
            break
    return process


def _kill_all(process, children) -> None:
    for pid in [process.pid, *children]:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.fixture
def runlocal(tmp_path):
    port = _free_port()
    process = _start(_env(tmp_path), port)
    children = _children(process.pid)
    yield process, children, port
    _kill_all(process, children)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 1):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_the_web_server_the_workers_and_beat(runlocal):
    process, children, port = runlocal
    assert len(children) == 4 and all(_alive(pid) for pid in children)
    assert _port_open(port)

    process.send_signal(signal.SIGTERM)

    assert process.wait(timeout=30) == 0
    assert _wait_for(lambda: not any(_alive(pid) for pid in children), timeout=20)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_runlocal_takes_its_children_with_it(runlocal):
    process, children, port = runlocal
    assert len(children) == 4 and all(_alive(pid) for pid in children)
    assert _port_open(port)

    process.kill()
    process.wait(timeout=10)

    assert _wait_for(lambda: not any(_alive(pid) for pid in children), timeout=30)


def _command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_beat_sends_the_stale_sweeps_through_the_folder_broker(tmp_path):
    env = _env(tmp_path, JOB_SWEEP_INTERVAL_SECONDS="1")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )
    process = _start(env, _free_port())
    children = _children(process.pid)
    try:
        assert any("beat" in _command_line(pid) for pid in children)
        swept, deadline = set(), time.monotonic() + 90
        # The interactive worker logs each sweep it ran: "Task <name>[<id>] succeeded ...".
        for line in process.stdout:
            for name in ("annotation.sweep_stale_jobs_task", "training.sweep_stale_runs_task"):
                if f"Task {name}[" in line and "succeeded" in line:
                    swept.add(name)
            if len(swept) == 2 or time.monotonic() > deadline:
                break
    finally:
        _kill_all(process, children)

    assert swept == {"annotation.sweep_stale_jobs_task", "training.sweep_stale_runs_task"}
