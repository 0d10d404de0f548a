"""Exports for analysis: every row carries prompt_id, external_id, a pseudonymous labeler,
source and judged_at; CSV beside JSONL for the tabular formats, formula cells escaped."""

import csv
import io
from datetime import UTC, datetime

import pytest

from annotation.datasets.selectors import preference_rows
from annotation.datasets.version_rows import candidate_rows
from annotation.datasets.writers import csv_lines, csv_safe, export_rows, read_version_rows
from annotation.models import Judgment, Prompt, Role
from annotation.projects.pseudonyms import labeler_pseudonym
from tests.annotation.datasets.test_data_pages import make_dataset_version
from tests.annotation.judges.factories import make_judge
from tests.factories import judge, make_member, make_project, make_task

pytestmark = pytest.mark.django_db
ANALYSIS = ("prompt_id", "external_id", "labeler", "judged_at", "source")


@pytest.fixture
def labeler(project):
    return make_member(project, Role.LABELER, "dora-the-labeler")


@pytest.fixture
def judged(project, labeler):
    task = make_task(project)
    Prompt.objects.filter(pk=task.prompt_id).update(external_id="ext-7")
    return judge(task, labeler)


def _utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset().total_seconds() == 0
    return moment


def test_legacy_rows_carry_the_analysis_keys(project, labeler, judged):
    for export_format in ("dpo", "kto"):
        row = next(iter(preference_rows(project, export_format=export_format, ai="exclude")))
        assert set(ANALYSIS) <= set(row)
        assert (row["prompt_id"], row["external_id"]) == (judged.prompt_id, "ext-7")
        assert row["labeler"] == labeler_pseudonym(project_id=project.pk, user_id=labeler.pk)
        assert _utc(row["judged_at"]) == judged.created_at.astimezone(UTC)
        assert labeler.username not in str(row) and row["source"] == "human"


def test_an_ai_row_names_its_judge(project, judged):
    ai_judge = make_judge("judge-sharp", workspace=project.workspace)
    Judgment.objects.filter(pk=judged.pk).update(source="ai", judge=ai_judge, labeler=None)
    row = next(iter(preference_rows(project, export_format="dpo", ai="include")))
    assert (row["labeler"], row["source"]) == ("judge-sharp", "ai")


def test_version_rows_and_their_exports_carry_the_analysis_keys(project, labeler, judged):
    row = next(iter(candidate_rows(project, "preference", None, "exclude")))
    assert row["labeler"] == labeler_pseudonym(project_id=project.pk, user_id=labeler.pk)
    assert (row["prompt_id"], row["external_id"]) == (judged.prompt_id, "ext-7")
    exported = next(export_rows([row], "dpo"))
    assert {key: exported[key] for key in ANALYSIS} == {key: row[key] for key in ANALYSIS}
    # TRL's columns stay as they were
    assert {"prompt", "chosen", "rejected"} <= set(exported)


def test_an_imported_row_names_its_import(project, tmp_path):
    version = make_dataset_version(project, tmp_path)
    rows = list(read_version_rows(version.path))
    assert rows and {row["labeler"] for row in rows} == {"import:hh"}
    assert all(row["prompt_id"] and row["judged_at"] for row in rows)


def test_the_pseudonym_is_stable_per_project_and_hides_the_person(settings, project):
    other = make_project("gamma")
    first = labeler_pseudonym(project_id=project.pk, user_id=42)
    assert first == labeler_pseudonym(project_id=project.pk, user_id=42)
    assert first.startswith("lab_") and len(first) == 16
    assert first != labeler_pseudonym(project_id=other.pk, user_id=42)
    assert first != labeler_pseudonym(project_id=project.pk, user_id=43)
    settings.SECRET_KEY = "another key entirely, long enough to be a real one"
    assert labeler_pseudonym(project_id=project.pk, user_id=42) != first


def test_the_pseudonym_does_not_hold_the_username(project, judged, labeler):
    row = next(iter(preference_rows(project, export_format="dpo", ai="exclude")))
    assert labeler.username not in row["labeler"]
    assert row["labeler"] != str(labeler.pk)


# --- CSV ---------------------------------------------------------------------------------

HOSTILE = ['=HYPERLINK("http://evil.example","click")', "+1", "-2", "@x", "\tTAB", "\rCR"]
PLAIN = ["a, b", 'he said "hi"', "two\nlines", "café", "1+1", ""]


def _read(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_escapes_formula_cells_and_round_trips_other_text():
    rows = [{"prompt": text, "completion": "ok", "score": -2.5} for text in HOSTILE + PLAIN]

    read = _read("".join(csv_lines(rows)))

    assert [row["prompt"] for row in read] == ["'" + text for text in HOSTILE] + PLAIN
    assert {row["score"] for row in read} == {"-2.5"}  # numbers are data, not formulas
    assert csv_safe("=1+1") == "'=1+1" and csv_safe("x=1") == "x=1"


def test_csv_flattens_conversations_into_text():
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"}]
    rows = [{"messages": [*prompt, {"role": "assistant", "content": "A."}], "label": True,
             "chosen": [{"role": "assistant", "content": "-dash"}]}]  # fmt: skip
    (row,) = _read("".join(csv_lines(rows)))
    assert row == {"prompt": "System: Be brief.\n\nQ?", "completion": "A.", "label": "true",
                   "chosen": "'-dash"}  # fmt: skip


def test_the_export_api_and_page_give_csv(login, project, researcher, judged):
    client = login(researcher)
    Prompt.objects.filter(pk=judged.prompt_id).update(text="=cmd|' /C calc'!A0")
    api = client.get(f"/api/projects/{project.slug}/export/?format=dpo&container=csv&ai=exclude")
    page = client.get(f"/p/{project.slug}/export.jsonl?format=dpo&container=csv&ai=exclude")

    assert api.status_code == page.status_code == 200
    assert api["Content-Type"].startswith("text/csv")
    assert api["Content-Disposition"].endswith('-dpo-no-ai.csv"')
    text = b"".join(api.streaming_content).decode()
    assert text == b"".join(page.streaming_content).decode()
    (row,) = _read(text)
    assert row["prompt"] == "'=cmd|' /C calc'!A0"
    assert row["prompt_id"] == str(judged.prompt_id) and row["labeler"].startswith("lab_")
    assert "container" in client.get(f"/p/{project.slug}/export/").content.decode()


@pytest.mark.parametrize(
    "query, message",
    [
        ("format=dpo&container=xlsx", "Unknown container 'xlsx'"),
        ("format=ranking&container=csv", "CSV is for the tabular formats"),
        ("format=csv", "Unknown format 'csv'"),
    ],
)
def test_a_bad_format_or_container_is_a_clear_400(login, project, researcher, query, message):
    client = login(researcher)
    for url in (f"/api/projects/{project.slug}/export/", f"/p/{project.slug}/export.jsonl"):
        response = client.get(f"{url}?{query}")
        assert response.status_code == 400
        assert message in response.json()["detail"]


def test_a_version_exports_as_csv(login, project, researcher, tmp_path):
    make_dataset_version(project, tmp_path)
    client = login(researcher)
    base = f"/api/projects/{project.slug}/data/versions/hh-pref/1/export/"

    response = client.get(f"{base}?format=dpo&container=csv")
    ranking = client.get(f"{base}?format=ranking&container=csv")

    assert response.status_code == 200
    rows = _read(b"".join(response.streaming_content).decode())
    assert rows and {row["labeler"] for row in rows} == {"import:hh"}
    assert ranking.status_code == 400
    assert "CSV is for the tabular formats" in ranking.json()["detail"]


def test_the_export_command_writes_csv(project, tmp_path):
    from django.core.management import CommandError, call_command

    make_dataset_version(project, tmp_path)
    output = tmp_path / "hh.csv"
    call_command("dataset_export", project=project.slug, name="hh-pref", format="dpo",
                 output=output, csv=True)  # fmt: skip
    rows = _read(output.read_text(encoding="utf-8"))
    assert rows and set(ANALYSIS) <= set(rows[0])
    with pytest.raises(CommandError, match="CSV is for the tabular formats"):
        call_command("dataset_export", project=project.slug, name="hh-pref",
                     format="ranking", output=tmp_path / "r.csv", csv=True)  # fmt: skip
    assert not (tmp_path / "r.csv").exists()
