from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import Role
from tests.factories import make_member, make_version
from training.models import DatasetSnapshot, TrainingRun, TrainingStep


def _run(project, **fields):
    snapshot, _ = DatasetSnapshot.objects.get_or_create(
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


def test_picking_a_method_swaps_in_its_own_settings(login, admin_member, project):
    client = login(admin_member)

    fragment = client.get(f"/p/{project.slug}/training/?method=ppo", HTTP_HX_REQUEST="true")

    html = fragment.content.decode().strip()
    assert html.startswith('<form method="post" id="run-form"')
    assert 'name="reward_version"' in html
    assert 'name="init_kl_coef"' in html
    assert 'name="beta"' not in html  # DPO's setting is gone
    assert "<html" not in html


def test_the_page_without_javascript_shows_the_chosen_method(login, admin_member, project):
    html = login(admin_member).get(f"/p/{project.slug}/training/?method=soup").content.decode()

    assert 'name="mix_with"' in html
    assert 'type="range" name="weight" value="0.5"' in html  # the soup's slider
    assert '<output for="id_weight">0.5</output>' in html
    assert '<option value="soup" selected>' in html


def test_ppo_without_a_reward_model_is_refused_on_the_form(login, admin_member, project):
    base = make_version()

    answer = login(admin_member).post(
        f"/p/{project.slug}/training/", {"method": "ppo", "base_version": base.pk}
    )

    assert answer.status_code == 400
    assert 'id="id_reward_version_error"' in answer.content.decode()
    assert TrainingRun.objects.count() == 0


def test_a_finished_run_shows_held_out_metrics_win_rate_and_log(login, admin_member, project):
    run = _run(
        project,
        status=TrainingRun.Status.SUCCEEDED,
        final_metrics={"loss": 0.5, "eval_reward_accuracy": 0.75},
        evaluation={
            "win_rate": 0.75,
            "wins": 5,
            "ties": 2,
            "losses": 1,
            "prompts": 8,
            "candidate_mean": 0.4,
            "parent_mean": -0.1,
            "judge": "rm-1",
            "examples": [],
        },
        log="2026-11-23 10:00:00 attempt 1 started on cpu\n",
    )

    html = login(admin_member).get(f"/p/{project.slug}/training/{run.pk}/").content.decode()

    assert "Win rate <strong>0.75</strong> on 8 held-out prompts" in html
    assert "(5 wins, 2 ties, 1 losses), judged by rm-1" in html
    assert "<dt>reward accuracy</dt><dd>0.750</dd>" in html
    assert "attempt 1 started on cpu" in html


def test_a_failed_run_with_a_checkpoint_offers_resume(login, admin_member, project):
    run = _run(project, status=TrainingRun.Status.FAILED, error="worker died", checkpoint_step=4)

    html = login(admin_member).get(f"/p/{project.slug}/training/{run.pk}/").content.decode()

    assert "Resume from step 4" in html


def test_the_form_gives_the_sft_stage_the_settings_it_shows(login, admin_member, project):
    from tests.factories import make_preferences

    make_preferences(project, make_member(project, Role.LABELER), 2)
    base = make_version()
    client = login(admin_member)
    form = client.get(f"/p/{project.slug}/training/?method=dpo").content.decode()

    answer = client.post(
        f"/p/{project.slug}/training/",
        {
            "method": "dpo",
            "base_version": base.pk,
            "sft_first": "on",
            "max_steps": "2",
            "batch_size": "2",
            "learning_rate": "0.0003",
            "seed": "3",
            "beta": "0.2",
        },
    )

    assert answer.status_code == 302
    stage = TrainingRun.objects.get()  # the SFT stage, queued; DPO follows it
    assert stage.method == "sft"
    assert (stage.config["max_steps"], stage.config["batch_size"], stage.seed) == (2, 2, 3)
    assert stage.config["learning_rate"] == 0.0003
    assert stage.follow_up["config"]["beta"] == 0.2
    assert "Both stages train with the settings below (beta, loss type, nll weight: DPO only)" in (
        form
    )


# --- where a run stands: place in line, time left, cancel from the list ---------------------


def _succeeded_in(project, seconds: int) -> TrainingRun:
    end = timezone.now() - timedelta(minutes=30)
    return _run(
        project,
        status=TrainingRun.Status.SUCCEEDED,
        started_at=end - timedelta(seconds=seconds),
        finished_at=end,
    )


def test_a_queued_run_shows_its_place_in_line_and_its_wait(login, admin_member, project):
    _succeeded_in(project, 120)
    _run(project)  # queued ahead
    mine = _run(project)
    client = login(admin_member)

    page = client.get(f"/p/{project.slug}/training/{mine.pk}/").content.decode()
    payload = client.get(f"/api/projects/{project.slug}/training-runs/{mine.pk}/").json()

    assert "queued — 2nd in line, about 4 min" in page
    assert (payload["queue_position"], payload["eta_seconds"]) == (2, 240)
    assert payload["outlook"] == "queued — 2nd in line, about 4 min"


def test_a_queued_run_without_history_says_its_wait_is_unknown(login, admin_member, project):
    _run(project)

    runs = login(admin_member).get(f"/api/projects/{project.slug}/training-runs/").json()

    assert [(r["queue_position"], r["eta_seconds"], r["outlook"]) for r in runs] == [
        (1, None, "queued — next in line, time unknown")
    ]


def test_a_running_run_shows_its_time_left_at_the_pace_of_its_steps(login, admin_member, project):
    run = _run(project, status=TrainingRun.Status.RUNNING, step=8, total_steps=35)
    TrainingStep.objects.create(run=run, step=7, loss=0.8)
    TrainingStep.objects.create(run=run, step=8, loss=0.7)
    now = timezone.now()
    run.steps.filter(step=7).update(created_at=now - timedelta(seconds=5))
    run.steps.filter(step=8).update(created_at=now)  # 5 s a step, 27 steps left
    client = login(admin_member)

    fragment = client.get(f"/p/{project.slug}/training/{run.pk}/", HTTP_HX_REQUEST="true")
    payload = client.get(f"/api/projects/{project.slug}/training-runs/{run.pk}/").json()

    assert "running 8/35 — about 2 min left" in fragment.content.decode()
    assert payload["queue_position"] is None
    assert payload["eta_seconds"] == pytest.approx(135, abs=2)


def test_the_runs_list_shows_where_runs_stand_and_offers_cancel(login, admin_member, project):
    queued = _run(project)
    finished = _run(project, status=TrainingRun.Status.SUCCEEDED)

    html = login(admin_member).get(f"/p/{project.slug}/training/").content.decode()

    assert "queued — next in line, time unknown" in html
    assert f'action="/p/{project.slug}/training/{queued.pk}/cancel/"' in html
    assert f"/training/{finished.pk}/cancel/" not in html
    assert 'hx-trigger="every 2s"' in html


POLL = {"HX-Request": "true", "HX-Target": "run-list"}


def test_the_runs_list_polls_while_a_run_is_active(login, admin_member, project):
    run = _run(project)
    client = login(admin_member)

    polled = client.get(f"/p/{project.slug}/training/", headers=POLL).content.decode().strip()
    run.status = TrainingRun.Status.CANCELLED
    run.save(update_fields=["status"])
    ended = client.get(f"/p/{project.slug}/training/", headers=POLL).content.decode()

    assert polled.startswith('<table id="run-list"')
    assert 'hx-trigger="every 2s"' in polled
    assert "queued — next in line" in polled
    assert "every 2s" not in ended


def test_cancel_of_an_ended_run_is_refused_and_changes_nothing(login, admin_member, project):
    run = _run(project, status=TrainingRun.Status.FAILED, error="out of memory")
    client = login(admin_member)

    page = client.post(f"/p/{project.slug}/training/{run.pk}/cancel/", follow=True)
    api = client.post(f"/api/projects/{project.slug}/training-runs/{run.pk}/cancel/")

    assert "The run has already failed." in page.content.decode()
    assert api.status_code == 400
    assert "The run has already failed." in api.content.decode()
    run.refresh_from_db()
    assert (run.status, run.cancel_requested, run.error) == ("failed", False, "out of memory")


def test_the_recipe_is_a_table_of_labels_values_and_meanings(login, admin_member, project):
    config = {
        "learning_rate": 0.0003,
        "beta": 0.2,
        "mixed_precision": "bf16",
        "lora_target_modules": ["q_proj", "<script>x</script>"],
        "mystery": "<b>odd</b>",
    }
    run = _run(project, status=TrainingRun.Status.SUCCEEDED, config=config)

    html = login(admin_member).get(f"/p/{project.slug}/training/{run.pk}/").content.decode()

    rows = html.split('class="recipe"')[1].split("</table>")[0]
    assert '<tr data-setting="learning_rate"><td>Learning rate</td><td><code>0.0003</code>' in rows
    assert "per_device_train_batch_size" not in rows  # only the settings the run has
    assert "Strength of the pull towards the reference model" in rows
    order = [rows.index(f'data-recipe-group="{g}"') for g in ("method", "optimisation")]
    assert order == sorted(order) and 'data-recipe-group="hardware"' in rows
    assert "q_proj, &lt;script&gt;x&lt;/script&gt;" in rows  # values are escaped
    assert "<td>mystery</td><td><code>&lt;b&gt;odd&lt;/b&gt;</code>" in rows
    assert "<script>x</script>" not in html and "<b>odd</b>" not in html
    assert '<details class="raw-config"><summary>Raw JSON</summary>' in html
