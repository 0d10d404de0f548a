"""`manage.py runlocal` stops its web server and workers however it is stopped."""

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


@pytest.fixture
def runlocal(tmp_path):
    """runlocal on its own SQLite file and folder broker, started until it says it runs."""
    port = _free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "CELERY_BROKER_URL": "filesystem://",
        "PYTHONUNBUFFERED": "1",
    }
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
    children = _children(process.pid)
    yield process, children, port
    for pid in [process.pid, *children]:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=10)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 1):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_the_web_server_and_the_workers(runlocal):
    process, children, port = runlocal
    assert len(children) == 3 and all(_alive(pid) for pid in children)
    assert _port_open(port)

    process.send_signal(signal.SIGTERM)

    assert process.wait(timeout=30) == 0
    assert _wait_for(lambda: not any(_alive(pid) for pid in children), timeout=20)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_runlocal_takes_its_children_with_it(runlocal):
    process, children, port = runlocal
    assert len(children) == 3 and all(_alive(pid) for pid in children)
    assert _port_open(port)

    process.kill()
    process.wait(timeout=10)

    assert _wait_for(lambda: not any(_alive(pid) for pid in children), timeout=30)
