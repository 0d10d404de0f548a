"""Export writers: each format's rows, the containers, the card, and TRL reading each format."""

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from annotation.datasets.writers import (
    EXPORT_FORMATS,
    FORMATS_OF_KIND,
    check_format,
    dataset_card,
    export_rows,
    read_version_rows,
    write_card,
    write_export,
)

SYSTEM = {"role": "system", "content": "Be brief."}
Q1 = [SYSTEM, {"role": "user", "content": "Q1?"}]
Q2 = [{"role": "user", "content": "Q2?"}]
Q3 = [{"role": "user", "content": "Q3 – café?"}]
HUMAN = {"source": "human", "source_name": "labelers", "language": "en", "prompt_id": 11,
         "external_id": "q-11", "labeler": "lab_0123456789ab",
         "judged_at": "2026-01-02T03:04:05+00:00"}  # fmt: skip
AI = {"source": "ai", "source_name": "ai", "language": "fr", "prompt_id": 12,
      "external_id": "", "labeler": "judge-a",
      "judged_at": "2026-01-02T03:04:06+00:00"}  # fmt: skip


def _row(number: int, kind: str, prompt: list, provenance: dict, **fields) -> dict:
    return {"id": f"c:{number}", "kind": kind, "prompt": prompt, **provenance,
            "meta": {"judgment": number}, **fields}  # fmt: skip


PREFERENCE = [
    # three responses with scores: 3 > 2 = 2, so (A1, B1) and (A1, C1) but not (B1, C1)
    _row(
        1,
        "preference",
        Q1,
        HUMAN,
        responses=["A1", "B1", "C1"],
        scores=[3, 2.0, 2.0],
        soft_label=None,
    ),  # fmt: skip
    _row(2, "preference", Q2, AI, responses=["A2", "B2"], scores=None, soft_label=0.8),
    # a tie gives no pair and no kto rows
    _row(3, "preference", Q3, HUMAN, responses=["A3", "B3"], scores=[1.0, 1.0], soft_label=0.5),
    # Q2 again: the prompt format gives it once
    _row(4, "preference", Q2, HUMAN, responses=["A4", "B4"], scores=None, soft_label=1.0),
]
SFT = [
    _row(5, "sft", Q1, HUMAN, completion="Ideal 1"),
    _row(6, "sft", Q1, AI, completion="Ideal 1 again"),
]
KTO = [
    _row(7, "kto", Q2, HUMAN, completion="Good", label=True),
    _row(8, "kto", Q3, AI, completion="Bad", label=False),
]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


@pytest.fixture
def preference_file(tmp_path) -> Path:
    path = tmp_path / "version.jsonl"
    lines = [json.dumps(row, ensure_ascii=False) for row in PREFERENCE]
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    return path


def test_version_rows_stream_from_the_file(preference_file):
    rows = read_version_rows(preference_file)

    assert next(rows) == PREFERENCE[0]
    assert list(rows) == PREFERENCE[1:]


def test_dpo_gives_every_ordered_pair_and_no_pair_for_equal_scores(preference_file):
    rows = list(export_rows(read_version_rows(preference_file), "dpo"))

    assert rows == [
        {"prompt": Q1, "chosen": _assistant("A1"), "rejected": _assistant("B1"), **HUMAN},
        {"prompt": Q1, "chosen": _assistant("A1"), "rejected": _assistant("C1"), **HUMAN},
        {"prompt": Q2, "chosen": _assistant("A2"), "rejected": _assistant("B2"), **AI},
        {"prompt": Q2, "chosen": _assistant("A4"), "rejected": _assistant("B4"), **HUMAN},
    ]


def test_reward_puts_the_prompt_inside_chosen_and_rejected():
    rows = list(export_rows(PREFERENCE[:2], "reward"))

    assert rows == [
        {"chosen": Q1 + _assistant("A1"), "rejected": Q1 + _assistant("B1"), **HUMAN},
        {"chosen": Q1 + _assistant("A1"), "rejected": Q1 + _assistant("C1"), **HUMAN},
        {"chosen": Q2 + _assistant("A2"), "rejected": Q2 + _assistant("B2"), **AI},
    ]


def test_kto_from_preference_takes_best_and_worst_and_skips_ties():
    rows = list(export_rows(PREFERENCE[:3], "kto"))

    assert rows == [
        {"prompt": Q1, "completion": _assistant("A1"), "label": True, **HUMAN},
        {"prompt": Q1, "completion": _assistant("C1"), "label": False, **HUMAN},
        {"prompt": Q2, "completion": _assistant("A2"), "label": True, **AI},
        {"prompt": Q2, "completion": _assistant("B2"), "label": False, **AI},
    ]


def test_kto_rows_keep_their_labels():
    assert list(export_rows(KTO, "kto")) == [
        {"prompt": Q2, "completion": _assistant("Good"), "label": True, **HUMAN},
        {"prompt": Q3, "completion": _assistant("Bad"), "label": False, **AI},
    ]


def test_prompt_gives_each_distinct_prompt_once_from_any_kind():
    rows = list(export_rows(PREFERENCE + SFT + KTO, "prompt"))

    assert rows == [{"prompt": Q1, **HUMAN}, {"prompt": Q2, **AI}, {"prompt": Q3, **HUMAN}]


def test_completion_and_sft_from_sft_rows_and_the_best_response():
    assert list(export_rows(SFT[:1] + PREFERENCE[1:2], "completion")) == [
        {"prompt": Q1, "completion": _assistant("Ideal 1"), **HUMAN},
        {"prompt": Q2, "completion": _assistant("A2"), **AI},
    ]
    assert list(export_rows(SFT[:1] + PREFERENCE[1:2], "sft")) == [
        {"messages": Q1 + _assistant("Ideal 1"), **HUMAN},
        {"messages": Q2 + _assistant("A2"), **AI},
    ]


def test_ranking_and_rating():
    assert list(export_rows(PREFERENCE[:2], "ranking")) == [
        {"prompt": Q1, "responses": ["A1", "B1", "C1"], "scores": [3.0, 2.0, 2.0], **HUMAN},
        {"prompt": Q2, "responses": ["A2", "B2"], "scores": None, **AI},
    ]
    rating = list(export_rows(PREFERENCE[:2], "rating"))  # the unscored row gives none
    assert rating == [
        {"prompt": Q1, "response": "A1", "score": 3.0, **HUMAN},
        {"prompt": Q1, "response": "B1", "score": 2.0, **HUMAN},
        {"prompt": Q1, "response": "C1", "score": 2.0, **HUMAN},
    ]
    assert type(rating[0]["score"]) is float


def test_standard_form_gives_plain_strings():
    first = PREFERENCE[:1]
    prompt = "System: Be brief.\n\nQ1?"

    assert next(export_rows(first, "dpo", conversational=False)) == {
        "prompt": prompt, "chosen": "A1", "rejected": "B1", **HUMAN}  # fmt: skip
    assert next(export_rows(first, "reward", conversational=False)) == {
        "chosen": f"{prompt}\n\nA1", "rejected": f"{prompt}\n\nB1", **HUMAN}  # fmt: skip
    assert next(export_rows(first, "sft", conversational=False)) == {
        "text": f"{prompt}\n\nA1", **HUMAN}  # fmt: skip
    assert next(export_rows(KTO, "kto", conversational=False)) == {
        "prompt": "Q2?", "completion": "Good", "label": True, **HUMAN}  # fmt: skip
    assert next(export_rows(first, "prompt", conversational=False)) == {"prompt": prompt, **HUMAN}


def test_check_format_says_what_a_kind_can_give():
    for kind, formats in FORMATS_OF_KIND.items():
        for fmt in formats:
            check_format(kind, fmt)
    assert set(FORMATS_OF_KIND["preference"]) == set(EXPORT_FORMATS)

    with pytest.raises(ValueError, match="A 'sft' version cannot be exported as 'dpo'"):
        check_format("sft", "dpo")
    with pytest.raises(ValueError, match="cannot be exported as 'rating': it gives kto, prompt"):
        check_format("kto", "rating")
    with pytest.raises(ValueError, match="Unknown export format 'csv'"):
        check_format("preference", "csv")
    with pytest.raises(ValueError, match="Unknown version kind 'ratings'"):
        check_format("ratings", "prompt")
    with pytest.raises(ValueError, match="'prompts' version cannot be exported as 'sft'"):
        list(export_rows([_row(9, "prompts", Q2, HUMAN)], "sft"))


def _load(path: Path, container: str) -> list[dict]:
    import datasets

    if container == "disk":
        return datasets.load_from_disk(str(path)).to_list()
    builder = {"jsonl": "json", "parquet": "parquet"}[container]
    rows = datasets.load_dataset(builder, data_files=str(path), split="train").to_list()
    # The JSON reader types ISO 8601 text as a timestamp (UTC, naive): the same instant.
    return [{key: _iso(value) for key, value in row.items()} for row in rows]


def _iso(value):
    return value.replace(tzinfo=UTC).isoformat() if isinstance(value, datetime) else value


@pytest.mark.parametrize("container", ["jsonl", "parquet", "disk"])
def test_each_container_reads_back_the_same_rows(tmp_path, container):
    # ranking rows whose scores are null in the whole first Arrow chunk and numbers later
    version = [_row(n, "preference", Q3 if n % 2 else Q1, AI if n % 3 else HUMAN,
                    responses=[f"A{n}", f"B{n}"], scores=None if n < 1500 else [2.0, 1.5])
               for n in range(1600)]  # fmt: skip
    rows = list(export_rows(version, "ranking"))
    output = tmp_path / f"out.{container}"

    written = write_export(iter(rows), output, fmt="ranking", container=container)

    assert written == 1600
    assert _load(output, container) == rows
    assert sorted(path.name for path in tmp_path.iterdir()) == [output.name]


@pytest.mark.parametrize("container", ["jsonl", "parquet", "disk"])
def test_a_failing_export_leaves_no_file_and_keeps_the_old_one(tmp_path, container):
    output = tmp_path / f"out.{container}"
    write_export(export_rows(PREFERENCE, "dpo"), output, fmt="dpo", container=container)
    before = _load(output, container)

    def failing():
        yield from export_rows(PREFERENCE, "dpo")
        raise RuntimeError("the version file went away")

    with pytest.raises(RuntimeError, match="went away"):
        write_export(failing(), output, fmt="dpo", container=container)
    with pytest.raises(RuntimeError, match="went away"):
        write_export(failing(), tmp_path / "new", fmt="dpo", container=container)

    assert _load(output, container) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == [output.name]


def test_rows_with_different_keys_fail_before_a_parquet_file_appears(tmp_path):
    rows = [{"prompt": "a", "source": "", "source_name": "", "language": ""}, {"prompt": "b"}]

    with pytest.raises(ValueError, match="Every exported row must have the keys"):
        write_export(iter(rows), tmp_path / "out.parquet", fmt="prompt", container="parquet")
    assert list(tmp_path.iterdir()) == []


def test_an_empty_export_has_the_format_columns(tmp_path):
    import pyarrow.parquet as pq

    assert write_export(iter(()), tmp_path / "e.parquet", fmt="dpo", container="parquet") == 0
    assert pq.read_schema(tmp_path / "e.parquet").names == [
        "prompt", "chosen", "rejected", "source", "source_name", "language", "prompt_id",
        "external_id", "labeler", "judged_at"]  # fmt: skip


def test_the_card_has_front_matter_and_every_section(tmp_path):
    text = dataset_card(
        name="helpful-prefs", version=3, kind="preference", content_hash="sha256:abc",
        row_count=12_345, counts_by_source={"human": 12_000, "ai": 345},
        counts_by_language={"en": 12_000, "fr": 300, "": 45},
        label_distribution={"a": 6000, "b": 6345}, agreement=None,
        recipe={"steps": [{"op": "dedupe", "threshold": 0.9}]},
        removed=[{"step": "dedupe", "removed": 12, "examples": ["Q: what is [EMAIL]?"]}],
        licence="cc-by-4.0", parents=["helpful-prefs v2"],
    )  # fmt: skip
    path = tmp_path / "README.md"
    write_card(path, text)

    front = yaml.safe_load(path.read_text(encoding="utf-8").split("---\n")[1])
    assert front["license"] == "cc-by-4.0"
    assert front["language"] == ["en", "fr"]
    assert front["size_categories"] == ["10K<n<100K"]
    assert front["task_categories"] == ["text-generation"]
    assert "dpo" in front["tags"]
    for heading in ("## Summary", "### By source", "### By kind", "### By language",
                    "## Label distribution", "## Agreement", "## Curation recipe",
                    "## Parents", "## How to load", "## Licence"):  # fmt: skip
        assert heading in text
    assert "Agreement: not measured." in text
    assert "| human | 12,000 |" in text
    assert "- removed: 12" in text and "Q: what is [EMAIL]?" in text
    assert "- helpful-prefs v2" in text
    assert 'load_dataset("json"' in text and 'load_dataset("parquet"' in text


def test_the_card_shows_agreement_figures():
    text = dataset_card(
        name="x", version=1, kind="kto", content_hash="h", row_count=5, counts_by_source={},
        counts_by_language={}, label_distribution={"True": 3, "False": 2},
        agreement={"krippendorff_alpha": 0.71}, recipe={}, removed=[], licence="",
        parents=[],
    )  # fmt: skip

    assert "| krippendorff_alpha | 0.71 |" in text
    assert "not measured" not in text
    assert yaml.safe_load(text.split("---\n")[1])["language"] == []


# --- TRL reads each format ------------------------------------------------------------------

TRAINING_VERSION = [
    _row(n, "preference", [{"role": "user", "content": f"Question {n}?"}], HUMAN,
         responses=["yes", "no"], scores=None)
    for n in range(4)
]  # fmt: skip


def _exported(tmp_path: Path, fmt: str):
    from datasets import load_dataset

    path = tmp_path / f"{fmt}.jsonl"
    write_export(export_rows(TRAINING_VERSION, fmt), path, fmt=fmt, container="jsonl")
    return load_dataset("json", data_files=str(path), split="train")


def _args(config_class, tmp_path: Path, **extra):
    return config_class(
        output_dir=str(tmp_path / "trl"), max_steps=1, per_device_train_batch_size=2,
        report_to=[], save_strategy="no", use_cpu=True, logging_steps=1, seed=0,
        dataloader_num_workers=0, **extra,
    )  # fmt: skip


def _train(trainer) -> None:
    assert trainer.train().global_step == 1


def test_trl_dpo_and_kto_trainers_train_on_their_exports(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    _train(DPOTrainer(model=model, args=_args(DPOConfig, tmp_path), processing_class=tokenizer,
                      train_dataset=_exported(tmp_path, "dpo")))  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    _train(KTOTrainer(model=model, args=_args(KTOConfig, tmp_path), processing_class=tokenizer,
                      train_dataset=_exported(tmp_path, "kto")))  # fmt: skip


def test_trl_reward_trainer_trains_on_the_reward_export(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    dataset = _exported(tmp_path, "reward")
    _train(RewardTrainer(model=str(tiny_model_dir), args=_args(RewardConfig, tmp_path),
                         processing_class=tokenizer, train_dataset=dataset))  # fmt: skip


@pytest.mark.parametrize("fmt", ["sft", "completion"])
def test_trl_sft_trainer_trains_on_the_sft_and_completion_exports(tmp_path, tiny_model_dir, fmt):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    _train(SFTTrainer(model=model, args=_args(SFTConfig, tmp_path), processing_class=tokenizer,
                      train_dataset=_exported(tmp_path, fmt)))  # fmt: skip


def test_trl_grpo_trainer_trains_on_the_prompt_export(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    def length_reward(completions, **kwargs):
        return [float(len(completion[0]["content"])) for completion in completions]

    dataset = _exported(tmp_path, "prompt")
    assert len(dataset) == 4
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    args = _args(GRPOConfig, tmp_path, num_generations=2, max_completion_length=4)
    _train(GRPOTrainer(model=model, reward_funcs=length_reward, args=args,
                       processing_class=tokenizer, train_dataset=dataset))  # fmt: skip
