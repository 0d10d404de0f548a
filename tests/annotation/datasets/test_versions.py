"""annotation/datasets/versions.py: curating imported and labelled data into immutable,
content-hashed versions, and shipping them with their card."""

import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotation.datasets.imports import dataset_import
from annotation.datasets.versions import (
    RecipeError,
    curate,
    dataset_version_create,
    parse_recipe,
)
from annotation.datasets.writers import read_version_rows
from annotation.models import DatasetVersion, Judgment, Prompt, Response, TaskKind
from tests.factories import make_member

ENGLISH = "Please explain in two sentences why the sky looks blue during a clear day."
GERMAN = "Bitte erkläre in zwei Sätzen, warum der Himmel an einem klaren Tag blau aussieht."


def pref(prompt, chosen="Because air scatters blue light more than red light.", rejected="No."):
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


ROWS = [
    pref(ENGLISH),
    pref(ENGLISH + " Mail me at jane.doe@example.com when done."),
    pref(GERMAN, "Weil die Luft blaues Licht stärker streut als rotes Licht.", "Nein."),
    pref("  please EXPLAIN in two sentences why the sky looks blue during a clear day!! "),
    pref("What costs $1,299.99 in 2024?", "A laptop, perhaps.", "Nothing."),
    pref("Repeat: " + "buy now " * 30, "ok ok ok ok", "no"),
]


@pytest.fixture
def imported(project, tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    return dataset_import(project=project, path=path, format="trl", source="synthetic")


def create(project, name="clean", **recipe):
    return dataset_version_create(
        project=project, name=name, recipe=parse_recipe(project, **recipe)
    )


def step(version_or_curated, name):
    return next(s for s in version_or_curated.report if s["step"] == name)


def test_a_version_scrubs_pii_dedupes_filters_language_and_quality(project, imported):
    version, created = create(
        project,
        kind="preference",
        sources="synthetic",
        pii="scrub",
        dedupe="exact",
        languages="en",
        quality="max_repetition=0.3",
    )

    rows = list(read_version_rows(version.path))
    assert created and version.row_count == len(rows) == 3
    assert {row["language"] for row in rows} == {"en"}
    scrubbed = next(row for row in rows if "<EMAIL>" in row["prompt"][-1]["content"])
    assert "jane.doe" not in json.dumps(scrubbed)
    assert any("$1,299.99 in 2024" in row["prompt"][-1]["content"] for row in rows)
    assert (step(version, "pii")["changed"], step(version, "pii")["removed"]) == (1, 0)
    assert step(version, "dedupe")["removed"] == 1  # the shouted copy of the first prompt
    assert step(version, "language")["removed"] == 1  # the German row
    assert step(version, "quality")["removed"] == 1  # the repetitive row
    assert step(version, "pii")["examples"][0]["kinds"] == ["email"]
    # The originals are untouched: curation only decides what the version holds.
    assert Prompt.objects.filter(text__contains="jane.doe@example.com").count() == 1


def test_pii_drop_removes_the_row_and_keep_leaves_it(project, imported):
    dropped, _ = create(project, name="drop", kind="preference", pii="drop", dedupe="none")
    kept, _ = create(project, name="keep", kind="preference", pii="keep", dedupe="none")

    assert (dropped.row_count, kept.row_count) == (5, 6)
    assert "jane.doe" not in Path(dropped.path).read_text()
    assert "jane.doe" in Path(kept.path).read_text()


def test_the_same_recipe_gives_the_same_version_and_new_data_a_new_number(
    project, imported, tmp_path
):
    first, created = create(project, kind="preference", sources="synthetic")
    again, created_again = create(project, kind="preference", sources="synthetic")

    assert created and not created_again and again.pk == first.pk
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps(pref("A brand new question about tides?")) + "\n")
    dataset_import(project=project, path=more, format="trl", source="synthetic")
    second, _ = create(project, kind="preference", sources="synthetic")

    assert (second.number, second.row_count) == (2, first.row_count + 1)
    assert second.content_hash != first.content_hash
    assert Path(first.path).read_bytes().count(b"\n") == first.row_count  # unchanged


def test_sources_select_imports_labelers_and_ai_apart(project, imported):
    labeler = make_member(project, "labeler", "lab")
    prompt = Prompt.objects.create(project=project, text="Labelled by a person?")
    a = Response.objects.create(prompt=prompt, text="Yes, by a person.")
    b = Response.objects.create(prompt=prompt, text="No.")
    Judgment.objects.create(
        project=project,
        kind=TaskKind.COMPARISON,
        prompt=prompt,
        response_a=a,
        response_b=b,
        choice="a",
        labeler=labeler,
    )

    people, _ = create(project, name="people", kind="preference", sources="labelers")
    both, _ = create(project, name="both", kind="preference", sources="labelers,synthetic")

    assert [r["source_name"] for r in read_version_rows(people.path)] == ["labelers"]
    assert both.stats["by_source"] == {"synthetic": 5, "labelers": 1}


def test_mixing_takes_a_deterministic_share_or_repeats_rows(project, imported):
    base, _ = create(project, name="base", kind="preference", dedupe="none", pii="keep")

    half = curate(
        project, parse_recipe(project, kind="preference", mix="base:0.5", pii="keep", dedupe="none")
    )
    half_again = curate(
        project, parse_recipe(project, kind="preference", mix="base:0.5", pii="keep", dedupe="none")
    )
    double = curate(
        project, parse_recipe(project, kind="preference", mix="base@1:2", pii="keep", dedupe="none")
    )

    assert 0 < half.row_count < base.row_count
    assert half.content_hash == half_again.content_hash
    assert double.row_count == 2 * base.row_count


def test_top_share_keeps_the_best_scored_rows(project, tmp_path):
    rows = [
        {
            "source": "s",
            "instruction": f"Question {i}?",
            "completions": [
                {"model": "a", "response": f"Answer {i}", "annotations": {"h": {"Rating": str(i)}}},
                {"model": "b", "response": "Meh", "annotations": {"h": {"Rating": "0"}}},
            ],
        }
        for i in range(1, 5)
    ]
    path = tmp_path / "uf.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset_import(project=project, path=path, format="ultrafeedback", source="uf")

    version, _ = create(project, kind="preference", quality="top=0.5", pii="keep")

    kept = sorted(row["responses"][0] for row in read_version_rows(version.path))
    assert kept == ["Answer 3", "Answer 4"]
    assert step(version, "top")["removed"] == 2


def test_kto_sft_and_prompt_versions(project, imported):
    kto, _ = create(project, name="kto", kind="kto", dedupe="none", pii="keep")
    prompts, _ = create(project, name="prompts", kind="prompts", sources="synthetic")

    labels = [row["label"] for row in read_version_rows(kto.path)]
    assert labels.count(True) == labels.count(False) == 6
    assert prompts.row_count == 5  # the shouted duplicate prompt is removed
    with pytest.raises(RecipeError, match="keeps no rows"):
        create(project, name="sft", kind="sft")
    assert not DatasetVersion.objects.filter(name="sft").exists()


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ({"kind": "pairs"}, "Unknown kind"),
        ({"kind": "preference", "sources": "nope"}, "Unknown source 'nope'"),
        ({"kind": "preference", "pii": "hide"}, "Unknown PII choice"),
        ({"kind": "preference", "dedupe": "fuzzy"}, "Unknown dedupe choice"),
        ({"kind": "preference", "languages": "en,xx"}, "xx"),
        ({"kind": "preference", "quality": "min_chars=abc"}, "min_chars"),
        ({"kind": "preference", "mix": "missing:0.5"}, "No dataset version 'missing'"),
        ({"kind": "preference", "mix": "base"}, "VERSION:WEIGHT"),
    ],
)
def test_a_bad_recipe_is_refused_clearly(project, imported, recipe, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe(project, **recipe)


def test_a_bad_name_is_refused_and_nothing_is_created(project, imported):
    with pytest.raises(RecipeError, match="lower-case"):
        create(project, name="Bad Name!", kind="preference")
    assert not DatasetVersion.objects.exists()


def test_commands_create_and_export_with_the_card(project, imported, tmp_path, capsys):
    call_command("dataset_create", project="alpha", name="clean", kind="preference")
    assert "Created alpha/clean v1: 5 preference rows" in capsys.readouterr().out

    output = tmp_path / "dpo.jsonl"
    call_command("dataset_export", project="alpha", name="clean", format="dpo", output=output)

    lines = output.read_text().splitlines()
    assert len(lines) == 5 and set(json.loads(lines[0])) >= {"prompt", "chosen", "rejected"}
    card = (tmp_path / "dpo.jsonl.README.md").read_text()
    assert "synthetic" in card and DatasetVersion.objects.get().content_hash in card
    call_command("dataset_create", project="alpha", name="p", kind="prompts")
    with pytest.raises(CommandError, match="'prompts' version cannot be exported as 'sft'"):
        call_command("dataset_export", project="alpha", name="p", format="sft", output=output)
    with pytest.raises(CommandError, match="No dataset version 'clean@7'"):
        call_command("dataset_export", project="alpha", name="clean@7", format="dpo", output=output)


def test_push_to_hub_fails_at_once_without_a_route(project, imported, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on port 9
    call_command("dataset_create", project="alpha", name="clean", kind="preference")

    with pytest.raises(CommandError, match="not reachable from here.*Nothing was pushed"):
        call_command(
            "dataset_export",
            project="alpha",
            name="clean",
            format="dpo",
            output=tmp_path / "out.jsonl",
            push_to_hub="me/clean",
        )
    assert not (tmp_path / "out.jsonl").exists()
