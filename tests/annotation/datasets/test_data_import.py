"""annotation/datasets/imports.py: a file's records stored as prompts, responses and
imported judgments, whole or not at all, and never twice."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command

from annotation.datasets.imports import DataImportError, dataset_import
from annotation.models import Judgment, Prompt, PromptImport, Response, TaskKind

HH = [
    {
        "chosen": "\n\nHuman: What is the capital of France?\n\nAssistant: Paris.",
        "rejected": "\n\nHuman: What is the capital of France?\n\nAssistant: Lyon, I think.",
    },
    {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: Add 2 and 2."
        "\n\nAssistant: 2 + 2 = 4.",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: Add 2 and 2."
        "\n\nAssistant: It is 5.",
    },
]
ULTRAFEEDBACK = [
    {
        "source": "evol",
        "instruction": "Name a prime number.",
        "completions": [
            {
                "model": "m-good",
                "response": "7 is prime.",
                "annotations": {"helpfulness": {"Rating": "5"}, "honesty": {"Rating": "5"}},
            },
            {
                "model": "m-bad",
                "response": "9 is prime.",
                "annotations": {"helpfulness": {"Rating": "2"}, "honesty": {"Rating": "1"}},
            },
        ],
    }
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def stored_counts(project):
    return (
        Prompt.objects.filter(project=project).count(),
        Response.objects.filter(prompt__project=project).count(),
        Judgment.objects.filter(project=project).count(),
        PromptImport.objects.filter(project=project).count(),
    )


def test_hh_rlhf_records_become_prompts_with_context_responses_and_comparisons(project, tmp_path):
    batch = dataset_import(project=project, path=write_jsonl(tmp_path / "hh.jsonl", HH))

    assert (batch.format, batch.source, batch.record_count) == ("hh-rlhf", "hh", 2)
    assert (batch.prompt_count, batch.response_count, batch.judgment_count) == (2, 4, 2)
    prompt = Prompt.objects.get(project=project, text="Add 2 and 2.")
    assert prompt.context == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
    ]
    assert prompt.as_conversation()[-1] == {"role": "user", "content": "Add 2 and 2."}
    judgment = Judgment.objects.get(prompt=prompt)
    assert judgment.kind == TaskKind.COMPARISON
    assert (judgment.source, judgment.source_import, judgment.labeler) == ("import", batch, None)
    assert judgment.chosen_and_rejected[0].text == "2 + 2 = 4."
    assert judgment.import_details["line"] == 2
    assert judgment.chosen_and_rejected[0].source_import == batch


def test_ultrafeedback_gives_ratings_per_aspect_and_a_derived_comparison(project, tmp_path):
    path = write_jsonl(tmp_path / "uf.jsonl", ULTRAFEEDBACK)

    batch = dataset_import(project=project, path=path, format="ultrafeedback", source="uf")

    ratings = Judgment.objects.filter(project=project, kind=TaskKind.RATING)
    scores = {r.rated_response.text: r.scores for r in ratings}
    assert scores["7 is prime."]["helpfulness"] == 5
    assert scores["9 is prime."]["honesty"] == 1
    comparison = Judgment.objects.get(project=project, kind=TaskKind.COMPARISON)
    assert comparison.chosen_and_rejected[0].text == "7 is prime."
    assert Response.objects.get(text="9 is prime.").metadata["model"] == "m-bad"
    assert batch.judgment_count == 3


def test_parquet_files_import_like_jsonl(project, tmp_path):
    path = tmp_path / "prefs.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [{"prompt": "Say hi.", "chosen": "Hi!", "rejected": "Go away."}] * 2
            + [{"prompt": "Count to two.", "chosen": "1, 2", "rejected": "2, 1"}]
        ),
        path,
    )

    batch = dataset_import(project=project, path=path, format="trl", source="prefs")

    # The repeated row is one judgment: its id derives from what it says.
    assert (batch.record_count, batch.prompt_count, batch.judgment_count) == (3, 2, 2)


def test_importing_the_same_records_again_adds_nothing_whatever_the_name_or_source(
    project, tmp_path
):
    dataset_import(project=project, path=write_jsonl(tmp_path / "hh.jsonl", HH))
    before = stored_counts(project)[:3]

    again = dataset_import(project=project, path=tmp_path / "hh.jsonl", source="hh-again")
    renamed = write_jsonl(tmp_path / "other-name.jsonl", [HH[1], HH[0]])  # other bytes
    reordered = dataset_import(project=project, path=renamed, source="hh-copy")

    assert stored_counts(project)[:3] == before
    assert (again.prompt_count, again.judgment_count, again.existing_count) == (0, 0, 2)
    assert (reordered.prompt_count, reordered.response_count, reordered.judgment_count) == (
        0,
        0,
        0,
    )


def test_a_new_record_for_a_known_prompt_reuses_the_prompt(project, tmp_path):
    dataset_import(project=project, path=write_jsonl(tmp_path / "hh.jsonl", HH[:1]))
    more = {
        "chosen": HH[0]["chosen"],
        "rejected": "\n\nHuman: What is the capital of France?\n\nAssistant: Marseille.",
    }

    batch = dataset_import(project=project, path=write_jsonl(tmp_path / "more.jsonl", [more]))

    assert (batch.prompt_count, batch.existing_count) == (0, 1)
    assert (batch.response_count, batch.judgment_count) == (1, 1)


@pytest.mark.parametrize(
    ("fmt", "rows", "reason"),
    [
        ("hh-rlhf", [HH[0], {"chosen": "no turns here", "rejected": "x"}], "Line 2:"),
        (
            "trl",
            [
                {"prompt": "a", "chosen": "b", "rejected": "c"},
                {"prompt": "a", "chosen": 5, "rejected": "c"},
            ],
            "Line 2",
        ),
        ("ultrafeedback", [ULTRAFEEDBACK[0], {"instruction": "x"}], "Line 2:"),
        ("stackexchange", [{"question": "q", "answers": "not a list"}], "Line 1:"),
        ("sft", [{"prompt": "p", "completion": "c"}, {"prompt": "p", "completion": ""}], "Line 2"),
    ],
)
def test_a_bad_record_refuses_the_whole_file_and_stores_nothing(
    project, tmp_path, fmt, rows, reason
):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        "".join((json.dumps(r) if isinstance(r, dict) else r) + "\n" for r in rows), "utf-8"
    )

    with pytest.raises(DataImportError) as refused:
        dataset_import(project=project, path=path, format=fmt, source="bad")

    assert refused.value.message.startswith(reason)
    assert refused.value.message.endswith("Nothing was imported.")
    assert stored_counts(project) == (0, 0, 0, 0)


def test_a_bad_record_after_many_good_chunks_still_stores_nothing(project, tmp_path):
    rows = [{"prompt": f"p{i}", "chosen": "yes", "rejected": "no"} for i in range(2500)]
    path = write_jsonl(tmp_path / "big.jsonl", [*rows, {"prompt": "p", "chosen": "yes"}])

    with pytest.raises(DataImportError) as refused:
        dataset_import(project=project, path=path, format="trl", source="big")

    assert refused.value.line == 2501
    assert stored_counts(project) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("labelers", "names the project's own"),
        ("ai", "names the project's own"),
        ("x" * 101, "longer"),
    ],
)
def test_reserved_or_overlong_source_names_are_refused(project, tmp_path, source, message):
    with pytest.raises(DataImportError, match=message):
        dataset_import(project=project, path=write_jsonl(tmp_path / "hh.jsonl", HH), source=source)
    assert stored_counts(project) == (0, 0, 0, 0)


def test_the_command_imports_and_names_the_bad_line(project, tmp_path, capsys):
    call_command("import_dataset", str(write_jsonl(tmp_path / "hh.jsonl", HH)), project="alpha")
    assert "2 records, 2 new prompts" in capsys.readouterr().out

    bad = write_jsonl(tmp_path / "bad.jsonl", [HH[0], {"chosen": "x"}])
    with pytest.raises(CommandError, match=r"Line 2: .*Nothing was imported\."):
        call_command("import_dataset", str(bad), project="alpha", format="hh-rlhf")
    with pytest.raises(CommandError, match="No project"):
        call_command("import_dataset", str(bad), project="nope")
