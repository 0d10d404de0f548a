"""Exports and training snapshots with or without AI labels; every row says its source,
and no judge's key or endpoint ever leaves the server."""

import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotation.datasets.selectors import (
    AI_OPTIONS,
    FORMATS,
    dpo_rows,
    preference_rows,
    sft_rows,
    training_preference_rows,
)
from annotation.judges.send_to_review import ai_review_queue_fill
from annotation.models import Judgment, Role
from annotation.review import services as review
from config.errors import ServiceError
from tests.annotation.judges.factories import make_ai_judgment, make_constitution, make_remote_judge
from tests.factories import judge as human_judge
from tests.factories import make_caller, make_member, make_task, make_version
from training.models import DatasetSnapshot, TrainingRun
from training.services import snapshot_create

SECRET = "sk-secret"
ENDPOINT = "judge.example"


@pytest.fixture
def mixed(project, admin_member):
    """Two human pairs, four AI labels (one waiting for review, one rejected, one
    corrected by a reviewer) and an AI revision stored as a demonstration."""
    ann = make_member(project, Role.LABELER, "ann")
    v3 = make_constitution("loop-default", 3)
    judge = make_remote_judge("judge-remote", api_key=SECRET, constitution=v3)
    tasks = [make_task(project, texts=(f"first {i}", f"second {i}")) for i in range(6)]
    human_judge(tasks[0], ann, choice="a")
    human_judge(tasks[1], ann, choice="b")
    kept = make_ai_judgment(tasks[2], judge, soft_label=0.8, principle="honesty")
    swapped = make_ai_judgment(tasks[3], judge, soft_label=0.3, swapped=True)  # first wins
    rejected = make_ai_judgment(tasks[4], judge, soft_label=0.9)
    corrected = make_ai_judgment(tasks[5], judge, soft_label=0.9)
    ai_review_queue_fill(project=project, mode="all")
    review.judgment_reject(project=project, judgment_id=rejected.pk, reviewer=admin_member)
    review.judgment_correct(
        project=project, judgment_id=corrected.pk, reviewer=admin_member, data={"choice": "right"}
    )
    Judgment.objects.create(
        kind="demonstration", project=project, prompt=tasks[0].prompt, text="A revised reply.",
        source="ai", judge=judge, constitution=v3, principle="harmlessness",
    )  # fmt: skip
    return {"kept": kept, "swapped": swapped, "judge": judge}


def _pairs(rows) -> list[tuple]:
    return [(r["chosen"][0]["content"], r["source"], r["judge"], r["soft_label"]) for r in rows]


def test_include_keeps_everyone_and_each_row_names_its_source(project, mixed):
    rows = list(dpo_rows(project, ai="include"))

    assert _pairs(rows) == [
        ("first 0", "human", "", 1.0),
        ("second 1", "human", "", 1.0),
        ("first 2", "ai", "judge-remote", pytest.approx(0.8)),  # waiting for review: kept
        ("first 3", "ai", "judge-remote", pytest.approx(0.7)),  # its own A was "second 3"
        ("second 5", "review", "", 1.0),  # the reviewer's correction replaces the AI label
    ]
    ai_row = rows[2]
    assert (ai_row["constitution"], ai_row["principle"]) == ("loop-default v3", "honesty")
    assert (rows[0]["constitution"], rows[0]["principle"]) == ("", "")
    # every row has the same keys, so datasets can read a mixed file
    assert len({tuple(sorted(row)) for row in rows}) == 1


def test_exclude_leaves_out_ai_labels_but_keeps_reviewers_corrections(project, mixed):
    assert [(p[0], p[1]) for p in _pairs(dpo_rows(project, ai="exclude"))] == [
        ("first 0", "human"),
        ("second 1", "human"),
        ("second 5", "review"),
    ]
    assert list(sft_rows(project, ai="exclude")) == []


def test_only_keeps_nothing_but_ai_labels(project, mixed):
    assert [(p[0], p[1]) for p in _pairs(dpo_rows(project, ai="only"))] == [
        ("first 2", "ai"),
        ("first 3", "ai"),
    ]
    [demonstration] = list(sft_rows(project, ai="only"))
    assert demonstration["messages"][-1] == {"role": "assistant", "content": "A revised reply."}
    assert (demonstration["source"], demonstration["constitution"]) == ("ai", "loop-default v3")
    assert demonstration["principle"] == "harmlessness"


def test_training_rows_count_agreement_over_the_sources_exported(project, mixed):
    ann_again = make_member(project, Role.LABELER, "bob")
    human_judge(Judgment.objects.get(pk=mixed["kept"].pk).task, ann_again, choice="b")

    with_ai = {
        r["chosen"][0]["content"]: r for r in training_preference_rows(project, ai="include")
    }
    people = {r["chosen"][0]["content"]: r for r in training_preference_rows(project, ai="exclude")}

    assert with_ai["first 2"]["agreement"] == pytest.approx(0.5)  # the judge vs bob
    assert people["second 2"]["agreement"] == pytest.approx(1.0)  # bob alone
    assert "first 2" not in people


@pytest.mark.parametrize("export_format", FORMATS)
@pytest.mark.parametrize("ai", AI_OPTIONS)
def test_no_key_or_endpoint_in_any_export(project, mixed, export_format, ai):
    text = "".join(
        json.dumps(row) for row in preference_rows(project, export_format=export_format, ai=ai)
    )

    assert SECRET not in text and ENDPOINT not in text


def test_command_api_and_page_agree_and_hold_no_secret(login, project, researcher, mixed, tmp_path):
    output = tmp_path / "out.jsonl"
    call_command(
        "export_preferences", "--project", "alpha", "--ai", "only", "--output", str(output)
    )
    client = login(researcher)

    api = client.get("/api/projects/alpha/export/?format=dpo&ai=only")
    page = client.get("/p/alpha/export.jsonl?format=dpo&ai=only")

    from_api = b"".join(api.streaming_content).decode()
    assert from_api == b"".join(page.streaming_content).decode() == output.read_text()
    assert api["Content-Disposition"] == 'attachment; filename="alpha-dpo-ai-only.jsonl"'
    assert [json.loads(line)["source"] for line in from_api.splitlines()] == ["ai", "ai"]
    assert SECRET not in from_api and ENDPOINT not in from_api


def test_the_export_page_offers_the_ai_choice(login, project, researcher):
    html = login(researcher).get("/p/alpha/export/").content.decode()

    assert '<select id="export-ai" name="ai">' in html
    for value in AI_OPTIONS:
        assert f'<option value="{value}"' in html


def test_a_mixed_file_loads_in_datasets_in_small_chunks(project, mixed, tmp_path):
    """datasets reads a JSONL in chunks and fails when a column is missing or null in the
    first chunk and text in a later one; human rows come first here."""
    from datasets import load_dataset

    path = tmp_path / "mixed.jsonl"
    call_command(
        "export_preferences", "--project", "alpha", "--ai", "include", "--output", str(path)
    )

    dataset = load_dataset(
        "json", data_files=str(path), split="train", chunksize=256, cache_dir=str(tmp_path / "c")
    )

    assert dataset["source"] == ["human", "human", "ai", "ai", "review"]
    assert dataset["judge"][2] == "judge-remote"


# --- bad input and permissions ---------------------------------------------------------


def test_a_bad_ai_option_is_refused_everywhere(login, project, researcher, mixed):
    client = login(researcher)

    api = client.get("/api/projects/alpha/export/?format=dpo&ai=some")
    page = client.get("/p/alpha/export.jsonl?format=dpo&ai=some")
    with pytest.raises(CommandError):
        call_command("export_preferences", "--project", "alpha", "--ai", "some")
    with pytest.raises(ServiceError, match="ai must be one of include, exclude, only, trusted"):
        preference_rows(project, export_format="dpo", ai="some")

    assert (api.status_code, page.status_code) == (400, 400)
    message = "ai must be one of include, exclude, only, trusted; not 'some'."
    assert api.json()["detail"] == page.json()["detail"] == message


@pytest.mark.parametrize(
    ("who", "status"),
    [("anonymous", 401), ("outsider", 403), ("labeler", 403), ("researcher", 200), ("admin", 200)],
)
def test_only_researchers_and_admins_export_with_the_ai_option(login, project, who, status):
    client = login(make_caller(who, project))

    api = client.get("/api/projects/alpha/export/?format=dpo&ai=exclude")
    page = client.get("/p/alpha/export.jsonl?format=dpo&ai=exclude")

    assert api.status_code == status
    assert page.status_code == (302 if who == "anonymous" else status)


# --- training snapshots ----------------------------------------------------------------


def _rows(snapshot) -> list[dict]:
    return [json.loads(line) for line in Path(snapshot.path).read_text().splitlines()]


def test_snapshots_can_leave_out_or_keep_only_ai_labels(project, mixed):
    everything = snapshot_create(project=project, dataset="preferences", filters={"ai": "include"})
    people = snapshot_create(project=project, dataset="preferences", filters={"ai": "exclude"})
    machines = snapshot_create(project=project, dataset="preferences", filters={"ai": "only"})

    assert [r["source"] for r in _rows(everything)] == ["human", "human", "ai", "ai", "review"]
    assert [r["source"] for r in _rows(people)] == ["human", "human", "review"]
    assert [r["source"] for r in _rows(machines)] == ["ai", "ai"]
    judge = {
        "judge": "judge-remote",
        "constitution": "loop-default v3",
        "kappa": None,
        "compared": 0,
        "labels": 3,  # kept (waiting for review), swapped and the revision
    }
    assert (everything.filters, people.filters, machines.filters) == (
        {"ai": "include", "ai_judges": [judge]},
        {"ai": "exclude"},
        {"ai": "only", "ai_judges": [judge]},
    )
    assert SECRET not in Path(everything.path).read_text()


def test_sft_snapshots_follow_the_ai_filter_too(project, mixed):
    people = snapshot_create(
        project=project, dataset="sft", filters={"ai": "exclude", "include_chosen": True}
    )
    machines = snapshot_create(project=project, dataset="sft", filters={"ai": "only"})

    assert [r["source"] for r in _rows(people)] == ["human", "human", "review"]
    assert [r["completion"][0]["content"] for r in _rows(people)] == [
        "first 0",
        "second 1",
        "second 5",
    ]
    [revision] = _rows(machines)
    assert (revision["source"], revision["judge"]) == ("ai", "judge-remote")


@pytest.mark.parametrize(
    ("dataset", "filters", "message"),
    [
        ("preferences", {"ai": "none"}, "ai must be one of include, exclude, only, trusted;"),
        ("sft", {"ai": True}, "ai must be one of include, exclude, only, trusted; not True."),
        ("prompts", {"ai": "exclude"}, "Unknown filter(s) for prompts data: ai."),
    ],
)
def test_bad_ai_snapshot_filters_are_refused_and_store_nothing(project, dataset, filters, message):
    with pytest.raises(ServiceError) as error:
        snapshot_create(project=project, dataset=dataset, filters=filters)

    assert message in error.value.message
    assert DatasetSnapshot.objects.count() == 0


def test_the_training_api_passes_the_ai_filter_to_the_snapshot(login, project, admin_member, mixed):
    """A bad value is refused before anything is stored or queued."""
    base = make_version("base-policy")

    answer = login(admin_member).post(
        "/api/projects/alpha/training-runs/",
        {"method": "dpo", "base_version": base.pk, "filters": {"ai": "sometimes"}},
        content_type="application/json",
    )

    assert answer.status_code == 400
    assert answer.json()["detail"] == (
        "ai must be one of include, exclude, only, trusted; not 'sometimes'."
    )
    assert DatasetSnapshot.objects.count() == 0


def test_the_run_form_trains_on_peoples_labels_only(login, project, admin_member, mixed):
    base = make_version("base-policy")
    client = login(admin_member)

    form = client.get("/p/alpha/training/?method=dpo").content.decode()
    answer = client.post(
        "/p/alpha/training/",
        {"method": "dpo", "base_version": base.pk, "ai": "exclude", "seed": "0"},
    )

    assert 'name="ai"' in form
    assert answer.status_code == 302
    run = TrainingRun.objects.get()
    assert run.snapshot.filters == {"ai": "exclude"}
    assert [r["source"] for r in _rows(run.snapshot)] == ["human", "human", "review"]
