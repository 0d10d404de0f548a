"""The whole loop on real parts: PostgreSQL, the broker, a Celery worker process, a model."""

import json
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotation.candidates.models import GenerationJob
from annotation.models import Judgment, Response, Role, Task
from models_registry.models import ModelVersion
from models_registry.services import ensure_base_model_from_folder
from tests.factories import jsonl_bytes, make_member, make_project
from tests.worker_fixtures import wait_for
from training.models import TrainingRun

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(600)]

PROMPTS = [
    {"prompt": "Name a primary colour."},
    {"prompt": "What is two plus two?"},
    {"prompt": "Say hello politely."},
    {"prompt": "Give one word for happy."},
]


def _job_done(version):
    job = GenerationJob.objects.filter(model_version=version).first()
    if job and job.status == GenerationJob.Status.FAILED:
        pytest.fail(f"Generation failed: {job.error}")
    return job if job and job.status == GenerationJob.Status.SUCCEEDED else None


def _judge_everything(client, slug: str) -> int:
    judged = 0
    while True:
        answer = client.get(f"/api/projects/{slug}/tasks/next/")
        if answer.status_code == 204:
            return judged
        task = answer.json()
        # A learnable preference: the shorter answer wins.
        left, right = task["left"]["text"], task["right"]["text"]
        posted = client.post(
            f"/api/projects/{slug}/judgments/",
            {"assignment_id": task["assignment_id"], "client_id": str(uuid.uuid4()),
             "choice": "left" if len(left) <= len(right) else "right", "time_spent_ms": 900},
            content_type="application/json",
        )  # fmt: skip
        assert posted.status_code == 201, posted.content
        judged += 1


def test_feedback_becomes_a_model_whose_answers_return_to_the_queue(
    client, celery_worker_process, tiny_model_dir, settings
):
    project = make_project("loop")
    admin = make_member(project, Role.ADMIN, "loop-admin")
    labeler = make_member(project, Role.LABELER, "loop-labeler")
    base = ensure_base_model_from_folder(name="tiny-base", path=tiny_model_dir)
    log = settings.DATA_DIR / "worker.log"

    # Admin imports prompts and queues candidates from the base model.
    client.force_login(admin)
    imported = client.post(
        f"/api/projects/{project.slug}/prompts/import/",
        {"file": SimpleUploadedFile("prompts.jsonl", jsonl_bytes(PROMPTS))},
    )
    assert imported.status_code == 201
    queued = client.post(
        f"/api/projects/{project.slug}/generation-jobs/",
        {"model_version": base.pk, "max_new_tokens": 12, "temperature": 1.0},
        content_type="application/json",
    )
    assert queued.status_code == 201, queued.content
    job = wait_for(lambda: _job_done(base), timeout=180, what="base generation", log=log)
    assert (job.done, job.total) == (8, 8)  # two samples per prompt in a first round
    assert Task.objects.filter(project=project).count() == 4

    # A labeler judges every pair through HTTP.
    client.force_login(labeler)
    assert _judge_everything(client, project.slug) == 4

    # A researcher's export is TRL's conversational preference form.
    client.force_login(admin)
    exported = client.get(f"/api/projects/{project.slug}/export/?format=dpo")
    rows = [json.loads(line) for line in b"".join(exported.streaming_content).splitlines()]
    decisive = Judgment.objects.filter(project=project, choice__in=["a", "b"]).count()
    assert len(rows) == decisive == 4
    assert rows[0]["prompt"][0]["role"] == "user"
    assert rows[0]["chosen"][0]["role"] == "assistant"

    # Admin trains DPO through the worker; a new version is registered with its lineage.
    started = client.post(
        f"/api/projects/{project.slug}/training-runs/",
        {"base_version": base.pk, "config": {"max_steps": 3, "batch_size": 2, "seed": 7}},
        content_type="application/json",
    )
    assert started.status_code == 201, started.content
    run_id = started.json()["id"]

    def run_finished():
        run = TrainingRun.objects.get(pk=run_id)
        return run if run.status not in {"queued", "running"} else None

    run = wait_for(run_finished, timeout=240, what="the DPO run", log=log)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.steps.count() == 3
    version = ModelVersion.objects.get(training_run=run)
    assert [v.name for v in version.lineage()] == ["tiny-base", version.name]
    assert version.snapshot_hash == run.snapshot.content_hash
    assert set(version.library_versions) >= {"torch", "transformers", "peft"}

    # The new version's candidates appear in the labeling queue next to the base model's.
    wait_for(lambda: _job_done(version), timeout=180, what="new version generation", log=log)
    assert Response.objects.filter(model_version=version).count() == 4
    client.force_login(labeler)
    task = client.get(f"/api/projects/{project.slug}/tasks/next/").json()
    shown = {task["left"]["id"], task["right"]["id"]}
    authors = set(Response.objects.filter(pk__in=shown).values_list("model_version", flat=True))
    assert authors == {base.pk, version.pk}
