"""Workers find every task of the annotation app, on its queue, by Celery's autodiscovery
alone: the feature packages' task modules are imported only through annotation/tasks.py."""

import json
import subprocess
import sys
from pathlib import Path

DISCOVERY_SCRIPT = """
import json, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
from config.celery import app
app.loader.import_default_modules()
names = [name for name in app.tasks if name.startswith("annotation.")]
print(json.dumps({name: app.tasks[name].queue for name in names}))
"""


def test_a_fresh_worker_process_discovers_each_task_on_its_queue():
    found = subprocess.run(
        [sys.executable, "-c", DISCOVERY_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )

    assert json.loads(found.stdout.strip().splitlines()[-1]) == {
        "annotation.arena_replies_generate_task": "interactive",
        "annotation.chat_replies_generate_task": "interactive",
        "annotation.generation_job_execute_task": "gpu",
        "annotation.judge_job_run_gpu_task": "gpu",
        "annotation.judge_job_run_task": "default",
    }
