import os
import signal
import socket
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the web server and a Celery worker (gpu + default queues) until Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default=os.environ.get("RUN_ADDR", "127.0.0.1:8000"))

    def handle(self, *args, addr: str, **options):
        python = sys.executable
        children = [
            subprocess.Popen(
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "-Q",
                    "gpu,default",
                    "--pool",
                    "solo",
                    "--loglevel",
                    "INFO",
                    "-n",
                    "local@%h",
                ]  # fmt: skip
            ),
            subprocess.Popen([python, "manage.py", "runserver", "--noreload", addr]),
        ]
        _wait_until_listening(addr, children)
        self.stdout.write(self.style.SUCCESS(f"\nLoop is running at http://{addr}/"))
        self.stdout.write(
            f"Database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}"
            f", broker: {settings.CELERY_BROKER_URL.split('://')[0]}"
            f", data: {settings.DATA_DIR}"
        )
        self.stdout.write("Press Ctrl-C to stop the server and the worker.\n")
        try:
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
            self.stderr.write("A process stopped on its own; stopping the rest.")
        except KeyboardInterrupt:
            self.stdout.write("\nStopping…")
        finally:
            _stop(children)


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
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
