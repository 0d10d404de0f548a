from annotation.models import Role
from tests.factories import make_member, make_version
from training.models import DatasetSnapshot, TrainingRun, TrainingStep


def _run(project, **fields):
    snapshot = DatasetSnapshot.objects.create(
        project=project, format="dpo", content_hash="f" * 64, path="/x", row_count=3
    )
    return TrainingRun.objects.create(
        project=project, method="dpo", base_version=make_version(), snapshot=snapshot, **fields
    )


def test_a_failed_run_shows_its_error(login, admin_member, project):
    run = _run(project, status=TrainingRun.Status.FAILED, error="ValueError: no pairs left")

    html = login(admin_member).get(f"/p/{project.slug}/training/{run.pk}/").content.decode()

    assert "ValueError: no pairs left" in html
    assert "every 2s" not in html  # a finished run stops polling


def test_a_running_run_polls_and_draws_its_curves(login, admin_member, project):
    run = _run(project, status=TrainingRun.Status.RUNNING, step=2, total_steps=4)
    for step, loss in [(1, 0.9), (2, 0.7)]:
        metrics = {"loss": loss, "dpo_loss": loss / 2, "nll_loss": loss / 2}
        TrainingStep.objects.create(run=run, step=step, loss=loss, metrics=metrics)
    client = login(admin_member)

    fragment = client.get(f"/p/{project.slug}/training/{run.pk}/", HTTP_HX_REQUEST="true")

    html = fragment.content.decode().strip()
    assert html.startswith('<section id="run-status"')
    assert 'hx-trigger="every 2s"' in html
    assert html.count('data-points="2"') == 3
    assert 'step <span class="run-step">2</span> of 4' in html


def test_cancel_from_the_page_asks_the_worker_to_stop(login, admin_member, project):
    run = _run(project, status=TrainingRun.Status.RUNNING)

    login(admin_member).post(f"/p/{project.slug}/training/{run.pk}/cancel/")

    run.refresh_from_db()
    assert run.cancel_requested is True


def test_the_start_form_refuses_bad_values_and_stores_nothing(login, admin_member, project):
    base = make_version()
    answer = login(admin_member).post(
        f"/p/{project.slug}/training/", {"base_version": base.pk, "beta": "-1", "seed": "0"}
    )

    assert answer.status_code == 400
    assert "beta must be &gt; 0" in answer.content.decode()
    assert TrainingRun.objects.count() == 0


def test_labelers_cannot_see_runs(login, project):
    run = _run(project)
    labeler = make_member(project, Role.LABELER)

    assert login(labeler).get(f"/p/{project.slug}/training/{run.pk}/").status_code == 403
