"""The import readers: every format from JSONL (and CSV/Parquet where those are common), auto
detection, bad records named by line, and streaming without holding the file."""

import collections
import csv
import itertools
import json
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotation.datasets.formats.readers import (
    FORMATS,
    detect_format,
    preview,
    read_records,
)
from annotation.datasets.formats.records import ImportFormatError
from annotation.datasets.formats.stackexchange import answer_score


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_csv(path, rows):
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def read(path, format="auto"):
    return list(read_records(path, format))


def judgments(record):
    return [(j.kind, j.key, j.a, j.b, j.choice, j.order, j.response, j.scores, j.label)
            for j in record.judgments]  # fmt: skip


def texts(record):
    return [response.text for response in record.responses]


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


HH_CHOSEN = (
    "\n\nHuman: What is a cat?\n\nAssistant: An animal.\n\nHuman: Is it kind?"
    "\n\nAssistant: Often, yes."
)
HH_REJECTED = (
    "\n\nHuman: What is a cat?\n\nAssistant: An animal.\n\nHuman: Is it kind?"
    "\n\nAssistant: Go away."
)

UF_ROW = {
    "source": "evol_instruct",
    "instruction": "Name a prime.",
    "completions": [
        {
            "model": "m-a",
            "response": "Seven.",
            "annotations": {
                "helpfulness": {"Rating": "4", "Rationale": "ok"},
                "honesty": {"Rating": "5", "Rationale": "sure"},
            },
            "overall_score": 8.0,
        },
        {
            "model": "m-b",
            "response": "Nine.",
            "annotations": {
                "helpfulness": {"Rating": "1", "Rationale": "wrong"},
                "honesty": {"Rating": "N/A", "Rationale": ""},
            },
            "overall_score": 2.0,
        },
        {
            "model": "m-c",
            "response": "Eleven.",
            "annotations": {
                "helpfulness": [{"Rating": "5", "Rationale": "list form"}],
                "honesty": {"Rating": "4", "Rationale": ""},
            },
        },
    ],
}


def oasst_rows():
    """One tree: a prompt with three ranked answers, one answer followed up."""
    tree = "tree-1"
    return [
        {"message_id": "p1", "parent_id": None, "role": "prompter", "text": "Hi?",
         "rank": None, "lang": "en", "message_tree_id": tree},
        {"message_id": "a1", "parent_id": "p1", "role": "assistant", "text": "Second best",
         "rank": 1, "lang": "en", "message_tree_id": tree},
        {"message_id": "a2", "parent_id": "p1", "role": "assistant", "text": "Worst",
         "rank": 2, "lang": "en", "message_tree_id": tree},
        {"message_id": "a3", "parent_id": "p1", "role": "assistant", "text": "Best",
         "rank": 0, "lang": "en", "message_tree_id": tree},
        {"message_id": "p2", "parent_id": "a3", "role": "prompter", "text": "Why?",
         "rank": 0, "lang": "en", "message_tree_id": tree},
        {"message_id": "a4", "parent_id": "p2", "role": "assistant", "text": "Because.",
         "rank": None, "lang": "en", "message_tree_id": tree},
    ]  # fmt: skip


def nested_tree(rows):
    by_id = {row["message_id"]: {**row, "replies": []} for row in rows}
    for row in rows:
        if row["parent_id"]:
            by_id[row["parent_id"]]["replies"].append(by_id[row["message_id"]])
    root = by_id[rows[0]["message_id"]]
    return {"message_tree_id": rows[0]["message_tree_id"], "tree_state": "ready", "prompt": root}


def stack_row(votes):
    return {
        "qid": 42,
        "question": "How do I sort a list?",
        "answers": [
            {"answer_id": 100 + i, "text": f"answer {i}", "score": v, "selected": i == 0}
            for i, v in enumerate(votes)
        ],
    }


# --- TRL ---------------------------------------------------------------------------------


def test_trl_conversational_preference_gives_two_responses_and_chosen_wins(tmp_path):
    row = {
        "prompt": [{"role": "system", "content": "Be brief."}, user("2+2?")],
        "chosen": [assistant("4")],
        "rejected": [assistant("5")],
        "id": 9,
        "source": "math",
    }
    [record] = read(write_jsonl(tmp_path / "p.jsonl", [row]), "trl")
    assert record.prompt == "2+2?"
    assert record.context == [{"role": "system", "content": "Be brief."}]
    assert texts(record) == ["4", "5"]
    assert judgments(record) == [("comparison", "pair-0-1", 0, 1, "a", [], None, {}, None)]
    assert (record.external_id, record.metadata, record.line) == ("9", {"source": "math"}, 1)


def test_trl_implicit_prompt_conversations_split_at_the_shared_turns(tmp_path):
    shared = [user("Hi"), assistant("Hello"), user("Tell a joke")]
    row = {"chosen": [*shared, assistant("A pun.")], "rejected": [*shared, assistant("No.")]}
    [record] = read(write_jsonl(tmp_path / "p.jsonl", [row]), "trl")
    assert (record.context, record.prompt) == ([user("Hi"), assistant("Hello")], "Tell a joke")
    assert texts(record) == ["A pun.", "No."]


def test_trl_implicit_prompt_texts_use_the_common_prefix(tmp_path):
    row = {"chosen": "The sky is blue.", "rejected": "The sky is green."}
    [record] = read(write_jsonl(tmp_path / "p.jsonl", [row]), "trl")
    assert (record.prompt, texts(record)) == ("The sky is", [" blue.", " green."])


def test_trl_prompt_completion_messages_unpaired_and_prompt_only(tmp_path):
    rows = [
        {"prompt": "Say hi", "completion": "hi"},
        {"messages": [user("a"), assistant("b"), user("c"), assistant("d")]},
        {"prompt": [user("Q")], "completion": [assistant("A")], "label": False},
        {"prompt": "Only a prompt", "lang": "en"},
    ]
    sft, chat, unpaired, bare = read(write_jsonl(tmp_path / "p.jsonl", rows), "trl")
    assert (sft.prompt, texts(sft)) == ("Say hi", ["hi"])
    assert judgments(sft) == [("demonstration", "demonstration", None, None, "", [], 0, {}, None)]
    assert (chat.context, chat.prompt, texts(chat)) == ([user("a"), assistant("b")], "c", ["d"])
    assert judgments(unpaired) == [("label", "label", None, None, "", [], 0, {}, False)]
    assert (bare.prompt, bare.responses, bare.judgments) == ("Only a prompt", [], [])
    assert bare.metadata == {"lang": "en"}


def test_trl_standard_preference_from_csv_counts_the_header_as_line_one(tmp_path):
    rows = [
        {"prompt": "p1", "chosen": "c1", "rejected": "r1", "label": "true"},
        {"prompt": "p2", "chosen": "c2", "rejected": "r2", "label": "x"},
    ]
    records = read(write_csv(tmp_path / "p.csv", rows), "trl")
    assert [(r.line, r.prompt, texts(r)) for r in records] == [
        (2, "p1", ["c1", "r1"]),
        (3, "p2", ["c2", "r2"]),
    ]


def test_trl_preference_from_parquet(tmp_path):
    rows = [
        {"prompt": [user(f"q{i}")], "chosen": [assistant(f"good {i}")],
         "rejected": [assistant(f"bad {i}")], "score_chosen": 8.0}
        for i in range(3)
    ]  # fmt: skip
    records = read(write_parquet(tmp_path / "p.parquet", rows), "trl")
    assert [(r.line, r.prompt, texts(r)) for r in records] == [
        (i + 1, f"q{i}", [f"good {i}", f"bad {i}"]) for i in range(3)
    ]
    assert records[0].metadata == {"score_chosen": 8.0}


def test_unpaired_label_csv_text_is_read_as_a_boolean(tmp_path):
    rows = [{"prompt": "p", "completion": "c", "label": "True"}]
    [record] = read(write_csv(tmp_path / "k.csv", rows), "trl")
    assert record.judgments[0].label is True


# --- HH-RLHF -----------------------------------------------------------------------------


def test_hh_rlhf_multi_turn_splits_context_prompt_and_last_answers_exactly(tmp_path):
    [record] = read(write_jsonl(tmp_path / "hh.jsonl", [{"chosen": HH_CHOSEN,
                                                        "rejected": HH_REJECTED}]))  # fmt: skip
    assert record.context == [user("What is a cat?"), assistant("An animal.")]
    assert record.prompt == "Is it kind?"
    assert texts(record) == ["Often, yes.", "Go away."]
    assert judgments(record) == [("comparison", "pair-0-1", 0, 1, "a", [], None, {}, None)]


def test_hh_rlhf_identical_last_answers_are_a_tie(tmp_path):
    row = {"chosen": HH_CHOSEN, "rejected": HH_CHOSEN}
    [record] = read(write_jsonl(tmp_path / "hh.jsonl", [row]), "hh-rlhf")
    assert record.judgments[0].choice == "tie"
    assert record.judgments[0].metadata == {"identical_responses": True}


def test_hh_rlhf_from_parquet(tmp_path):
    rows = [{"chosen": HH_CHOSEN, "rejected": HH_REJECTED}] * 2
    records = read(write_parquet(tmp_path / "hh.parquet", rows))
    assert [(r.line, r.prompt) for r in records] == [(1, "Is it kind?"), (2, "Is it kind?")]


# --- UltraFeedback -----------------------------------------------------------------------


def test_ultrafeedback_rates_each_completion_and_compares_by_mean_aspect_rating(tmp_path):
    [record] = read(write_jsonl(tmp_path / "uf.jsonl", [UF_ROW]), "ultrafeedback")
    assert record.prompt == "Name a prime."
    assert texts(record) == ["Seven.", "Nine.", "Eleven."]
    assert [r.metadata["model"] for r in record.responses] == ["m-a", "m-b", "m-c"]
    assert [(j.key, j.response, j.scores) for j in record.judgments if j.kind == "rating"] == [
        ("rating-0", 0, {"helpfulness": 4.0, "honesty": 5.0, "overall": 8.0}),
        ("rating-1", 1, {"helpfulness": 1.0, "overall": 2.0}),
        ("rating-2", 2, {"helpfulness": 5.0, "honesty": 4.0}),
    ]
    # means: 4.5, 1.0, 4.5 -> 0 beats 1, 2 beats 1, 0 and 2 tie and give no comparison
    assert [(j.key, j.choice) for j in record.judgments if j.kind == "comparison"] == [
        ("pair-0-1", "a"),
        ("pair-1-2", "b"),
    ]
    assert record.metadata == {"source": "evol_instruct"}


def test_ultrafeedback_binarized_is_a_preference_with_two_ratings(tmp_path):
    row = {
        "prompt": "Q",
        "prompt_id": "abc",
        "chosen": [user("Q"), assistant("good")],
        "rejected": [user("Q"), assistant("bad")],
        "score_chosen": 9.0,
        "score_rejected": 3.0,
    }
    path = write_jsonl(tmp_path / "ufb.jsonl", [row])
    assert detect_format(path) == "ultrafeedback"
    [record] = read(path)
    assert (record.external_id, record.prompt) == ("abc", "Q")
    assert [(j.kind, j.key, j.scores) for j in record.judgments] == [
        ("comparison", "pair-0-1", {}),
        ("rating", "rating-0", {"overall": 9.0}),
        ("rating", "rating-1", {"overall": 3.0}),
    ]


# --- OASST -------------------------------------------------------------------------------


def test_oasst_flat_rows_rank_replies_best_first_and_carry_the_path_as_context(tmp_path):
    first, second = read(write_jsonl(tmp_path / "oa.jsonl", oasst_rows()), "oasst")
    assert (first.line, first.external_id, first.prompt, first.context) == (1, "p1", "Hi?", [])
    assert texts(first) == ["Second best", "Worst", "Best"]
    assert [r.external_id for r in first.responses] == ["a1", "a2", "a3"]
    assert judgments(first) == [("ranking", "ranking", None, None, "", [2, 0, 1], None, {}, None)]
    assert first.metadata == {"rank": None, "lang": "en", "message_tree_id": "tree-1"}
    assert (second.line, second.prompt, texts(second)) == (5, "Why?", ["Because."])
    assert second.context == [user("Hi?"), assistant("Best")]
    assert second.judgments == []


def test_oasst_nested_trees_give_the_same_records_as_flat_rows(tmp_path):
    flat = read(write_jsonl(tmp_path / "flat.jsonl", oasst_rows()), "oasst")
    nested = read(write_jsonl(tmp_path / "trees.jsonl", [nested_tree(oasst_rows())]))
    assert [(r.prompt, r.context, texts(r), judgments(r)) for r in nested] == [
        (r.prompt, r.context, texts(r), judgments(r)) for r in flat
    ]
    assert nested[0].metadata["tree_state"] == "ready"


def test_oasst_tree_rows_must_be_contiguous(tmp_path):
    rows = oasst_rows()
    other = {**rows[0], "message_id": "q1", "message_tree_id": "tree-2"}
    path = write_jsonl(tmp_path / "oa.jsonl", [*rows[:3], other, *rows[3:]])
    with pytest.raises(ImportFormatError) as error:
        read(path, "oasst")
    assert error.value.line == 5
    assert "tree-1 appears again" in error.value.message


# --- Stack Exchange ----------------------------------------------------------------------


def test_stackexchange_scores_follow_log2_votes_with_accepted_bonus():
    assert [answer_score(v, False) for v in (-3, 0, 1, 2, 3, 10, 1000)] == [-1, 0, 1, 2, 2, 3, 10]
    assert (answer_score(3, True), answer_score(-1, True)) == (3, -1)


def test_stackexchange_rates_answers_and_compares_at_most_ten_pairs(tmp_path):
    votes = [0, 1, 3, 7, 15, 31]  # scores 1 (accepted), 1, 2, 3, 4, 5
    [record] = read(write_jsonl(tmp_path / "se.jsonl", [stack_row(votes)]), "stackexchange")
    assert (record.external_id, record.prompt) == ("42", "How do I sort a list?")
    assert [r.external_id for r in record.responses] == [str(100 + i) for i in range(6)]
    ratings = [j.scores["score"] for j in record.judgments if j.kind == "rating"]
    assert ratings == [1, 1, 2, 3, 4, 5]
    pairs = [(j.key, j.choice) for j in record.judgments if j.kind == "comparison"]
    # 14 pairs differ; the 10 with the largest gaps, gap then (i, j) order
    assert pairs == [
        ("pair-0-5", "b"), ("pair-1-5", "b"), ("pair-0-4", "b"), ("pair-1-4", "b"),
        ("pair-2-5", "b"), ("pair-0-3", "b"), ("pair-1-3", "b"), ("pair-2-4", "b"),
        ("pair-3-5", "b"), ("pair-0-2", "b"),
    ]  # fmt: skip


def test_stackexchange_pm_score_is_taken_as_is(tmp_path):
    row = {"qid": 1, "question": "Q", "answers": [{"text": "x", "pm_score": 4},
                                                 {"text": "y", "pm_score": -1}]}  # fmt: skip
    [record] = read(write_jsonl(tmp_path / "se.jsonl", [row]))
    assert [(j.key, j.choice or j.scores) for j in record.judgments] == [
        ("rating-0", {"score": 4.0}),
        ("rating-1", {"score": -1.0}),
        ("pair-0-1", "a"),
    ]


# --- SFT and prompts ---------------------------------------------------------------------


def test_sft_alpaca_rows_append_the_input_to_the_instruction(tmp_path):
    rows = [
        {"instruction": "Translate.", "input": "chat", "output": "cat", "id": "a1"},
        {"instruction": "Say hi.", "input": "", "output": "hi", "id": "a2"},
    ]
    jsonl = read(write_jsonl(tmp_path / "s.jsonl", rows), "sft")
    from_csv = read(write_csv(tmp_path / "s.csv", rows), "sft")
    for records in (jsonl, from_csv):
        assert [(r.external_id, r.prompt, texts(r)) for r in records] == [
            ("a1", "Translate.\n\nchat", ["cat"]),
            ("a2", "Say hi.", ["hi"]),
        ]
        assert records[0].judgments[0].kind == "demonstration"


def test_prompts_from_jsonl_and_csv(tmp_path):
    rows = [{"id": "1", "text": "First?", "topic": "x"}, {"id": "2", "text": "Second?",
                                                          "topic": "y"}]  # fmt: skip
    for path in (write_jsonl(tmp_path / "p.jsonl", rows), write_csv(tmp_path / "p.csv", rows)):
        records = read(path, "prompts")
        assert [(r.external_id, r.prompt, r.metadata) for r in records] == [
            ("1", "First?", {"topic": "x"}),
            ("2", "Second?", {"topic": "y"}),
        ]


# --- auto detection ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"prompt": "p", "chosen": "c", "rejected": "r"}, "trl"),
        ({"chosen": [user("p"), assistant("c")], "rejected": [user("p"), assistant("r")]}, "trl"),
        ({"messages": [user("p"), assistant("c")]}, "trl"),
        ({"prompt": "p", "completion": "c", "label": True}, "trl"),
        ({"chosen": HH_CHOSEN, "rejected": HH_REJECTED}, "hh-rlhf"),
        (UF_ROW, "ultrafeedback"),
        (oasst_rows()[0], "oasst"),
        (nested_tree(oasst_rows()), "oasst"),
        (stack_row([1, 2]), "stackexchange"),
        ({"instruction": "i", "input": "", "output": "o"}, "sft"),
        ({"prompt": "p", "response": "r"}, "sft"),
        ({"prompt": "p"}, "prompts"),
        ({"text": "t", "id": 3}, "prompts"),
    ],
)
def test_auto_detects_the_format_from_the_first_record(tmp_path, row, expected):
    path = write_jsonl(tmp_path / "d.jsonl", [row])
    assert detect_format(path) == expected
    assert read(path, "auto") == read(path, expected)


def test_auto_refuses_a_record_it_cannot_place(tmp_path):
    with pytest.raises(ImportFormatError) as error:
        read(write_jsonl(tmp_path / "d.jsonl", [{"foo": 1, "bar": 2}]))
    assert error.value.line == 1
    assert "cannot tell the format" in error.value.message and "bar, foo" in error.value.message


# --- bad records -------------------------------------------------------------------------

GOOD = {
    "trl": {"prompt": "p", "chosen": "c", "rejected": "r"},
    "hh-rlhf": {"chosen": HH_CHOSEN, "rejected": HH_REJECTED},
    "ultrafeedback": UF_ROW,
    "stackexchange": stack_row([1, 2]),
    "sft": {"prompt": "p", "response": "r"},
    "prompts": {"prompt": "p"},
}


@pytest.mark.parametrize(
    ("format", "bad", "reason"),
    [
        ("trl", {"prompt": "p", "chosen": "c"}, "missing field 'rejected'"),
        ("trl", {"prompt": "p", "chosen": ["c"], "rejected": "r"}, "'chosen[0]' must be"),
        ("trl", {"prompt": "p", "completion": "c", "label": "maybe"}, "must be true or false"),
        ("trl", {"messages": [user("a")]}, "must end with a user turn and then"),
        ("hh-rlhf", {"chosen": "Hello", "rejected": HH_REJECTED}, "must start with a 'Human:'"),
        ("hh-rlhf", {"chosen": HH_CHOSEN, "rejected": "\n\nHuman: Other\n\nAssistant: x"},
         "differ before their last Assistant turn"),
        ("hh-rlhf", {"chosen": "\n\nHuman: q\n\nAssistant: ", "rejected": "\n\nHuman: q"
                     "\n\nAssistant: a"}, "'chosen turn 1' is empty"),
        ("ultrafeedback", {**UF_ROW, "completions": [{"response": 3}]},
         "'completions[0].response' must be text"),
        ("ultrafeedback", {"instruction": "i", "completions": [{"response": "r", "annotations":
         {"helpfulness": {"Rating": "good"}}}]}, "must be a number"),
        ("stackexchange", {"question": "q", "answers": [{"text": "t"}]},
         "missing field 'answers[0].score' or 'answers[0].pm_score'"),
        ("sft", {"prompt": "p"}, "missing field 'response' or 'output' or 'completion'"),
        ("sft", {"prompt": "  ", "response": "r"}, "field 'prompt' is empty"),
        ("prompts", {"prompt": "x" * 100_001}, "100001 characters, over the 100000 limit"),
        ("prompts", {"prompt": ["not", "text"]}, "field 'prompt' must be text, not list"),
    ],
)  # fmt: skip
def test_a_bad_record_stops_the_import_at_its_line(tmp_path, format, bad, reason):
    path = tmp_path / "bad.jsonl"
    good = json.dumps(GOOD[format])
    path.write_text(f"{good}\n\n{good}\n{json.dumps(bad)}\n{good}\n", encoding="utf-8")
    records = read_records(path, format)
    assert [next(records).line, next(records).line] == [1, 3]
    with pytest.raises(ImportFormatError) as error:
        next(records)
    assert error.value.line == 4
    assert reason in error.value.message


def test_a_bad_oasst_row_is_reported_at_its_line(tmp_path):
    rows = oasst_rows()
    rows[2] = {**rows[2], "parent_id": "nowhere"}
    with pytest.raises(ImportFormatError) as error:
        read(write_jsonl(tmp_path / "oa.jsonl", rows), "oasst")
    assert error.value.line == 3
    assert "parent message nowhere is not in tree tree-1" in error.value.message


@pytest.mark.parametrize(
    ("content", "line", "reason"),
    [
        (b'{"prompt": "a"}\n{"prompt": "b",\n', 2, "malformed JSON"),
        (b'{"prompt": "a"}\n{"prompt": "\xff"}\n', 2, "invalid UTF-8"),
        (b'{"prompt": "a"}\n["prompt"]\n', 2, "must hold a JSON object, not list"),
        (b'[{"prompt": "a"},\n{"prompt": "b"}]\n', 1, "the file is a JSON array"),
    ],
)
def test_json_lines_errors_name_the_line(tmp_path, content, line, reason):
    path = tmp_path / "f.jsonl"
    path.write_bytes(content)
    with pytest.raises(ImportFormatError) as error:
        read(path, "prompts")
    assert (error.value.line, reason in error.value.message) == (line, True)


def test_csv_invalid_utf8_and_extra_fields_name_the_row(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b"prompt,id\nfine,1\nbad \xff byte,2\n")
    with pytest.raises(ImportFormatError) as error:
        read(path, "prompts")
    assert (error.value.line, error.value.message) == (3, "invalid UTF-8")
    path.write_bytes(b"prompt,id\nfine,1\nfine,2,extra\n")
    with pytest.raises(ImportFormatError) as error:
        read(path, "prompts")
    assert (error.value.line, error.value.message) == (3, "the row has more fields than the header")


def test_unknown_extension_and_unknown_format_are_refused(tmp_path):
    with pytest.raises(ImportFormatError, match="unknown file extension '.txt'"):
        read(write_jsonl(tmp_path / "f.txt", [{"prompt": "p"}]), "prompts")
    with pytest.raises(ImportFormatError, match="unknown format 'alpaca'"):
        read(write_jsonl(tmp_path / "f.jsonl", [{"prompt": "p"}]), "alpaca")
    assert FORMATS[0] == "auto" and len(FORMATS) == 8


# --- preview and streaming ---------------------------------------------------------------


def test_preview_pairs_each_record_with_its_raw_row(tmp_path):
    rows = [{"prompt": f"p{i}", "chosen": "c", "rejected": "r"} for i in range(8)]
    shown = preview(write_jsonl(tmp_path / "p.jsonl", rows), "auto", limit=3)
    assert [(raw, record.prompt) for raw, record in shown] == [(rows[i], f"p{i}") for i in range(3)]
    [(raw, record)] = preview(write_jsonl(tmp_path / "o.jsonl", oasst_rows()), "oasst", 1)
    assert (raw, record.external_id) == (oasst_rows()[0], "p1")


def test_reading_200000_lines_streams_without_holding_the_file(tmp_path):
    path = tmp_path / "big.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for i in range(200_000):
            handle.write(f'{{"prompt": "prompt number {i} {"x" * 60}", "id": {i}}}\n')
    size = path.stat().st_size
    tracemalloc.start()
    try:
        records = read_records(path, "auto")
        first = next(records)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (first.line, first.external_id, size > 18_000_000) == (1, "0", True)
    assert peak < 1_000_000  # reading the file whole first would take over 18 MB
    count = 1 + sum(1 for _ in itertools.islice(records, 99_999))
    tracemalloc.start()
    try:  # midway, 20,000 more records must not pile up either
        count += sum(1 for _ in itertools.islice(records, 20_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    [(count, last)] = collections.deque(enumerate(records, start=count + 1), maxlen=1)
    assert (count, last.line, last.external_id) == (200_000, 200_000, "199999")
