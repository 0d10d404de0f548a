import ctypes
import os
import signal
import socket
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Stop(Exception):
    """SIGTERM or SIGHUP arrived: stop as on Ctrl-C."""


def _raise_stop(signum, frame):
    raise Stop(signal.Signals(signum).name)


def _die_with_parent() -> None:
    """In a child, before exec: Linux sends it SIGTERM if runlocal itself is killed
    (even with SIGKILL), so no server or worker outlives it."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


class Command(BaseCommand):
    help = (
        "Run the web server, two Celery workers (gpu + default queues; interactive) and "
        "Celery beat (the periodic stale-job sweeps) until Ctrl-C or SIGTERM, then stop "
        "them all."
    )

    def add_arguments(self, parser):
        parser.add_argument("--addr", default=os.environ.get("RUN_ADDR", "127.0.0.1:8000"))

    def handle(self, *args, addr: str, **options):
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _raise_stop)
        children = []
        try:
            self._run(addr, children)
        except (KeyboardInterrupt, Stop):
            self.stdout.write("\nStopping…")
        finally:
            _stop(children)

    def _run(self, addr: str, children: list) -> None:
        python = sys.executable
        worker = [python, "-m", "celery", "-A", "config", "worker", "-Q", "gpu,default",
                  "--pool", "solo", "--loglevel", "INFO", "-n", "local@%h"]  # fmt: skip
        # Chat turns and arena battles on their own worker, so that they never wait behind
        # a generation job or a training run; it loads its own copy of the models.
        interactive = [python, "-m", "celery", "-A", "config", "worker", "-Q", "interactive",
                       "--pool", "solo", "--loglevel", "INFO", "-n", "interactive@%h"]  # fmt: skip
        # Sends each app's sweep of jobs whose worker died (config/celery.py's beat_schedule)
        # every JOB_SWEEP_INTERVAL_SECONDS; the interactive worker runs them.
        beat = [python, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO"]
        server = [python, "manage.py", "runserver", "--noreload", addr]
        # One at a time: a signal may come in between.
        for command in (worker, interactive, beat, server):
            children.append(subprocess.Popen(command, preexec_fn=_die_with_parent))
        _wait_until_listening(addr, children)
        self.stdout.write(self.style.SUCCESS(f"\nLoop is running at http://{addr}/"))
        self.stdout.write(
            f"Database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}"
            f", broker: {settings.CELERY_BROKER_URL.split('://')[0]}"
            f", data: {settings.DATA_DIR}"
        )
        self.stdout.write("Press Ctrl-C to stop the server, the workers and beat.\n")
        self.stdout.flush()
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        raise CommandError("A process stopped on its own; stopping the rest.")


def _wait_until_listening(addr: str, children, timeout: float = 120) -> None:
    """Announce the URL only once the web server accepts connections."""
    host, _, port = addr.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and all(child.poll() is None for child in children):
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), 1):
                return
        except OSError:
            time.sleep(0.3)


def _stop(children):
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut the stop short
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
