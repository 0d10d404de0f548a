"""AI labels stay out of exports and training unless the project says otherwise: its
setting (exclude by default, trusted judges above a kappa threshold, or all), the pages
that say what goes in, and what a training snapshot records (annotation/judges/trust.py)."""

import html
import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotation.datasets.selectors import dpo_rows
from annotation.judges.trust import ai_label_plan
from annotation.models import JudgeJob, Project, Role
from annotation.projects.services import project_settings_update
from config.errors import ServiceError
from tests.annotation.judges.factories import make_ai_judgment, make_constitution, make_judge
from tests.factories import judge as human_judge
from tests.factories import make_caller, make_member, make_task, make_version
from training.models import DatasetSnapshot, TrainingRun
from training.services import snapshot_create, training_run_start

GOOD = "judge-good (loop-default v1)"
BAD = "judge-bad (loop-default v1)"
TRUSTED_TEXT = (
    "AI labels: included from 1 of 2 judges (kappa ≥ 0.3 on at least 4 items) "
    f"(project default): {BAD} left out: kappa 0.00 below 0.3; "
    f"{GOOD} kappa 0.67 ≥ 0.3 on 6 items"
)
GOOD_RECORD = {
    "judge": "judge-good",
    "constitution": "loop-default v1",
    "kappa": 0.6667,
    "compared": 6,
    "labels": 6,
}


@pytest.fixture
def judged(project):
    """Six pairs a person decided (A wins the first three, B the last three); judge-good
    agrees on five (kappa 0.67), judge-bad always says A (kappa 0, like a judge at chance).
    The thresholds: kappa 0.3 on at least 4 items."""
    ann = make_member(project, Role.LABELER, "ann")
    constitution = make_constitution("loop-default", 1)
    good = make_judge("judge-good", constitution=constitution, workspace=project.workspace)
    bad = make_judge("judge-bad", constitution=constitution, workspace=project.workspace)
    tasks = [make_task(project, texts=(f"first {i}", f"second {i}")) for i in range(6)]
    for i, task in enumerate(tasks):
        human_judge(task, ann, choice="a" if i < 3 else "b")
        make_ai_judgment(task, good, soft_label=0.8 if i in (0, 1, 2, 5) else 0.2)
        make_ai_judgment(task, bad, soft_label=0.8)
    Project.objects.filter(pk=project.pk).update(ai_min_kappa=0.3, ai_min_compared=4)
    project.refresh_from_db()
    return {"good": good, "bad": bad}


def _sources(rows) -> list[tuple[str, str]]:
    return sorted((row["source"], row["judge"]) for row in rows)


def _set_default(project, ai_labels: str) -> None:
    project_settings_update(project=project, ai_labels=ai_labels)


PEOPLE = [("human", "")] * 6
GOOD_ROWS = [("ai", "judge-good")] * 6
BAD_ROWS = [("ai", "judge-bad")] * 6


# --- exports ---------------------------------------------------------------------------


def test_a_project_leaves_ai_labels_out_of_every_export_by_default(
    login, project, researcher, judged, tmp_path
):
    output = tmp_path / "out.jsonl"
    call_command("export_preferences", "--project", "alpha", "--output", str(output))
    client = login(researcher)

    api = client.get("/api/projects/alpha/export/?format=dpo")
    page = client.get("/p/alpha/export.jsonl?format=dpo")

    assert project.ai_labels == "exclude"
    assert _sources(dpo_rows(project)) == PEOPLE
    from_api = b"".join(api.streaming_content).decode()
    assert from_api == b"".join(page.streaming_content).decode() == output.read_text()
    assert _sources(json.loads(line) for line in from_api.splitlines()) == PEOPLE
    assert api["Content-Disposition"] == 'attachment; filename="alpha-dpo-no-ai.jsonl"'


def test_trusted_takes_only_the_judges_that_clear_the_threshold(login, project, researcher, judged):
    client = login(researcher)

    chosen = client.get("/api/projects/alpha/export/?format=dpo&ai=trusted")
    _set_default(project, "trusted")
    by_default = client.get("/api/projects/alpha/export/?format=dpo")

    for answer in (chosen, by_default):
        rows = [json.loads(line) for line in b"".join(answer.streaming_content).splitlines()]
        assert _sources(rows) == sorted(PEOPLE + GOOD_ROWS)
        assert answer["Content-Disposition"] == 'attachment; filename="alpha-dpo-trusted-ai.jsonl"'
    assert _sources(dpo_rows(project)) == sorted(PEOPLE + GOOD_ROWS)


def test_an_explicit_choice_still_wins_over_the_projects_setting(project, judged):
    _set_default(project, "trusted")

    assert _sources(dpo_rows(project, ai="include")) == sorted(PEOPLE + GOOD_ROWS + BAD_ROWS)
    assert _sources(dpo_rows(project, ai="exclude")) == PEOPLE
    assert _sources(dpo_rows(project, ai="only")) == sorted(GOOD_ROWS + BAD_ROWS)


def test_a_judge_needs_enough_compared_items_as_well(project, judged):
    project_settings_update(project=project, ai_labels="trusted", ai_min_compared=7)

    plan = ai_label_plan(project=project)

    assert plan.included == []
    assert plan.details == [
        f"{BAD} left out: kappa 0.00 below 0.3; 6 items compared with people, fewer than 7",
        f"{GOOD} left out: 6 items compared with people, fewer than 7",
    ]
    assert _sources(dpo_rows(project)) == PEOPLE


def test_the_plan_says_what_goes_in_and_warns_about_judges_below_the_threshold(project, judged):
    _set_default(project, "trusted")
    trusted = ai_label_plan(project=project)
    everything = ai_label_plan(project=project, ai="include")

    assert trusted.text == TRUSTED_TEXT
    assert trusted.warnings == []
    assert everything.headline == "AI labels: all included, from all 2 judges"
    assert everything.warnings == [
        f"Labels of {BAD} go in although it is below the project's threshold "
        "(kappa ≥ 0.3 on at least 4 items): kappa 0.00 below 0.3."
    ]
    assert ai_label_plan(project=project, ai="exclude").headline == "AI labels: excluded"


# --- pages ----------------------------------------------------------------------------


def _text(answer) -> str:
    return html.unescape(answer.content.decode())


def test_the_export_page_says_ai_labels_are_excluded_by_default(login, project, researcher, judged):
    page = _text(login(researcher).get("/p/alpha/export/"))

    assert "AI labels: excluded (project default)" in page
    assert '<option value="exclude" selected>' in page
    assert (
        'Below the threshold (kappa ≥ 0.3 on at least 4 items), so "all AI labels" or '
        f'"AI labels only" would put them in:\n    {BAD} (kappa 0.00 below 0.3).'
    ) in page


def test_the_export_page_warns_when_the_default_takes_a_judge_below_the_threshold(
    login, project, researcher, judged
):
    _set_default(project, "include")

    page = _text(login(researcher).get("/p/alpha/export/"))

    assert "AI labels: all included, from all 2 judges (project default)" in page
    assert f"Warning: Labels of {BAD} go in although it is below the project's threshold" in page
    assert '<option value="include" selected>' in page


def test_the_judge_pages_say_whose_labels_go_in(login, project, researcher, judged):
    _set_default(project, "trusted")
    job = JudgeJob.objects.create(project=project, judge=judged["bad"], kind="pairwise")
    client = login(researcher)

    judges = _text(client.get("/p/alpha/judges/"))
    job_page = _text(client.get(f"/p/alpha/judges/jobs/{job.pk}/"))
    polled = client.get(f"/p/alpha/judges/jobs/{job.pk}/", headers={"HX-Request": "true"})

    assert "AI labels: included from 1 of 2 judges" in judges
    assert f"<li>{BAD} left out: kappa 0.00 below 0.3</li>" in judges
    assert f"<li>{GOOD} kappa 0.67 ≥ 0.3 on 6 items</li>" in judges
    assert "This judge's labels in exports and training" in job_page
    assert f"<li>{BAD} left out: kappa 0.00 below 0.3</li>" in job_page
    assert GOOD not in job_page
    assert "exports and training" not in polled.content.decode()  # the 2 s poll stays cheap


def test_the_training_page_says_what_goes_in_and_preselects_the_default(
    login, project, admin_member, judged
):
    _set_default(project, "trusted")

    page = _text(login(admin_member).get("/p/alpha/training/?method=dpo"))

    assert TRUSTED_TEXT.split(":")[0] + ":" in page
    assert f"<li>{GOOD} kappa 0.67 ≥ 0.3 on 6 items</li>" in page
    assert (
        '<option value="trusted" selected>People\'s labels and AI labels from trusted judges '
        "(project default)</option>"
    ) in page


# --- project settings ------------------------------------------------------------------

SETTINGS = {
    "action": "settings",
    "overlap_target": 1,
    "pending_limit": 5,
    "gold_rate": 0.1,
    "skip_flag_threshold": 3,
    "criteria": "helpful, harmless, honest",
    "candidate_policy": "round_robin",
}


def _ai_settings(project) -> tuple:
    project.refresh_from_db()
    return (project.ai_labels, project.ai_min_kappa, project.ai_min_compared)


def test_an_admin_sets_the_default_on_the_tasks_page(login, project, admin_member, judged):
    client = login(admin_member)
    before = _text(client.get("/p/alpha/tasks/"))

    answer = client.post(
        "/p/alpha/tasks/",
        {**SETTINGS, "ai_labels": "trusted", "ai_min_kappa": "0.5", "ai_min_compared": "5"},
    )
    after = _text(client.get("/p/alpha/tasks/"))

    assert 'name="ai_labels"' in before and "AI labels: excluded (project default)" in before
    assert answer.status_code == 302
    assert _ai_settings(project) == ("trusted", 0.5, 5)
    assert "AI labels: included from 1 of 2 judges (kappa ≥ 0.5 on at least 5 items)" in after


def test_a_settings_post_without_the_ai_fields_keeps_them(login, project, admin_member):
    project_settings_update(project=project, ai_labels="include", ai_min_kappa=0.2)

    answer = login(admin_member).post("/p/alpha/tasks/", {**SETTINGS, "overlap_target": 2})

    assert answer.status_code == 302
    assert _ai_settings(project) == ("include", 0.2, 20)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ai_labels": "sometimes"}, "Select a valid choice. sometimes is not one of"),
        ({"ai_min_kappa": "1.5"}, "Ensure this value is less than or equal to 1"),
        ({"ai_min_kappa": "nan"}, "Enter a number."),
        ({"ai_min_compared": "0"}, "Ensure this value is greater than or equal to 1"),
        ({"ai_min_compared": "many"}, "Enter a whole number."),
    ],
)
def test_bad_ai_settings_on_the_page_are_refused_and_change_nothing(
    login, project, admin_member, fields, message
):
    answer = login(admin_member).post("/p/alpha/tasks/", {**SETTINGS, **fields})

    assert answer.status_code == 400
    assert message in _text(answer)
    assert _ai_settings(project) == ("exclude", 0.4, 20)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ai_labels": "only"}, "ai_labels must be one of exclude, trusted, include."),
        ({"ai_min_kappa": -1.01}, "ai_min_kappa must be a number between -1 and 1."),
        ({"ai_min_kappa": float("nan")}, "ai_min_kappa must be a number between -1 and 1."),
        ({"ai_min_kappa": "0.5"}, "ai_min_kappa must be a number between -1 and 1."),
        ({"ai_min_compared": 0}, "ai_min_compared must be a whole number from 1 to 100000."),
        ({"ai_min_compared": 2.5}, "ai_min_compared must be a whole number from 1 to 100000."),
    ],
)
def test_bad_ai_settings_are_refused_by_the_service(project, fields, message):
    with pytest.raises(ServiceError) as refused:
        project_settings_update(project=project, **fields)

    assert refused.value.message == message
    assert _ai_settings(project) == ("exclude", 0.4, 20)


@pytest.mark.parametrize(
    ("who", "status"),
    [("outsider", 403), ("labeler", 403), ("researcher", 403), ("admin", 302)],
)
def test_only_admins_change_the_ai_label_default(login, project, who, status):
    """Signed-out callers: tests/test_permissions.py."""
    client = login(make_caller(who, project))

    answer = client.post("/p/alpha/tasks/", {**SETTINGS, "ai_labels": "include"})

    assert answer.status_code == status
    assert _ai_settings(project)[0] == ("include" if status == 302 else "exclude")


# --- training --------------------------------------------------------------------------


def _rows(snapshot) -> list[dict]:
    return [json.loads(line) for line in Path(snapshot.path).read_text().splitlines()]


def test_a_snapshot_records_the_choice_and_whose_labels_went_in(project, judged):
    people = snapshot_create(project=project, dataset="preferences")
    _set_default(project, "trusted")
    trusted = snapshot_create(project=project, dataset="preferences")

    assert people.filters == {"ai": "exclude"}
    assert _sources(_rows(people)) == PEOPLE
    assert trusted.filters == {
        "ai": "trusted",
        "ai_judges": [GOOD_RECORD],
        "ai_threshold": {"min_kappa": 0.3, "min_compared": 4},
    }
    assert _sources(_rows(trusted)) == sorted(PEOPLE + GOOD_ROWS)


def test_the_training_api_takes_the_projects_default(login, project, admin_member, judged):
    _set_default(project, "trusted")
    base = make_version("base-policy")

    answer = login(admin_member).post(
        "/api/projects/alpha/training-runs/",
        {"method": "dpo", "base_version": base.pk, "config": {"seed": 0}},
        content_type="application/json",
    )

    assert answer.status_code == 201
    snapshot = answer.json()["snapshot"]
    assert (snapshot["ai"], snapshot["filters"]["ai_judges"]) == ("trusted", [GOOD_RECORD])
    assert _sources(_rows(TrainingRun.objects.get().snapshot)) == sorted(PEOPLE + GOOD_ROWS)


def test_the_run_form_without_an_ai_choice_takes_the_default(login, project, admin_member, judged):
    base = make_version("base-policy")

    answer = login(admin_member).post(
        "/p/alpha/training/", {"method": "dpo", "base_version": base.pk, "seed": "0"}
    )

    assert answer.status_code == 302
    run = TrainingRun.objects.get()
    assert run.snapshot.filters == {"ai": "exclude"}
    page = _text(login(admin_member).get(f"/p/alpha/training/{run.pk}/"))
    assert '<dd class="snapshot-ai">none (exclude: people\'s labels only)</dd>' in page


def test_an_sft_stage_first_trains_on_the_same_ai_choice(project, judged):
    base = make_version("base-policy")

    run = training_run_start(
        project=project,
        base_version=base,
        method="dpo",
        sft_first=True,
        filters={"ai": "trusted"},
        queue=False,
    )

    assert run.method == "sft"
    assert run.snapshot.filters["ai"] == "trusted"
    assert run.snapshot.filters["include_chosen"] is True
    assert run.follow_up["filters"] == {"ai": "trusted"}
    assert _sources(_rows(run.snapshot)) == sorted(PEOPLE + GOOD_ROWS)


def test_the_train_command_says_what_goes_in_and_takes_ai(project, judged):
    base = make_version("base-policy")
    stderr = StringIO()

    call_command(
        "train", "--project", "alpha", "--method", "dpo", "--base", str(base.pk),
        "--ai", "include", stdout=StringIO(), stderr=stderr,
    )  # fmt: skip

    said = stderr.getvalue()
    assert "AI labels: all included, from all 2 judges" in said
    assert f"Warning: Labels of {BAD} go in although it is below" in said
    assert TrainingRun.objects.get().snapshot.filters["ai"] == "include"


def test_the_train_command_refuses_a_bad_ai_choice(project, judged):
    base = make_version("base-policy")

    with pytest.raises(CommandError, match="argument --ai: invalid choice: 'some'"):
        call_command(
            "train", "--project", "alpha", "--method", "dpo", "--base", str(base.pk),
            "--ai", "some", stdout=StringIO(), stderr=StringIO(),
        )  # fmt: skip

    assert (TrainingRun.objects.count(), DatasetSnapshot.objects.count()) == (0, 0)


def test_snapshots_recorded_before_the_choice_was_written_out_read_as_include(
    login, project, admin_member
):
    """Then "include" was the default and left out of the recorded filters."""
    base = make_version("base-policy")
    old = DatasetSnapshot.objects.create(
        project=project, format="preferences", content_hash="a" * 64, path="/x", row_count=1
    )
    run = TrainingRun.objects.create(project=project, method="dpo", base_version=base, snapshot=old)
    client = login(admin_member)

    api = client.get(f"/api/projects/alpha/training-runs/{run.pk}/").json()
    page = _text(client.get(f"/p/alpha/training/{run.pk}/"))

    assert (api["snapshot"]["filters"], api["snapshot"]["ai"]) == ({}, "include")
    assert "every AI label (include: the default when this snapshot was made)" in page
