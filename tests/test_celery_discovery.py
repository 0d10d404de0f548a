"""Workers find every task of the annotation app (and the registry's old name of the
generation task), on its queue, by Celery's autodiscovery alone: the feature packages' task
modules are imported only through annotation/tasks.py. Beat's schedule names only tasks a
worker has, on the interactive queue."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DISCOVERY_SCRIPT = """
import json, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
from config.celery import app
app.loader.import_default_modules()
names = [name for name in app.tasks if name.startswith(("annotation.", "models_registry."))]
beat = {
    key: {
        "registered": entry["task"] in app.tasks,
        "queue": entry["options"]["queue"],
        "task_queue": getattr(app.tasks.get(entry["task"]), "queue", None),
        "every": entry["schedule"],
    }
    for key, entry in app.conf.beat_schedule.items()
}
print(json.dumps({"tasks": {name: app.tasks[name].queue for name in names}, "beat": beat}))
"""


@pytest.fixture(scope="module")
def discovered() -> dict:
    """What a fresh worker process finds, with JOB_SWEEP_INTERVAL_SECONDS set to 30."""
    found = subprocess.run(
        [sys.executable, "-c", DISCOVERY_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "JOB_SWEEP_INTERVAL_SECONDS": "30"},
    )
    return json.loads(found.stdout.strip().splitlines()[-1])


def test_a_fresh_worker_process_discovers_each_task_on_its_queue(discovered):
    assert discovered["tasks"] == {
        "annotation.arena_replies_generate_task": "interactive",
        "annotation.chat_replies_generate_task": "interactive",
        "annotation.generation_job_execute_task": "gpu",
        "annotation.judge_job_run_gpu_task": "gpu",
        "annotation.judge_job_run_task": "default",
        "annotation.sweep_stale_jobs_task": "interactive",
        # Messages queued before generation jobs moved from the registry still run.
        "models_registry.tasks.generation_job_execute_task": "gpu",
    }


def test_beat_sends_each_apps_stale_sweep_to_a_registered_task_on_the_interactive_queue(
    discovered,
):
    sweep = {"registered": True, "queue": "interactive", "task_queue": "interactive", "every": 30}
    assert discovered["beat"] == {
        "annotation.sweep_stale_jobs_task": sweep,
        "training.sweep_stale_runs_task": sweep,
    }
