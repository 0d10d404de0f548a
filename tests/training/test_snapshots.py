"""What a training run trains on: per-method snapshots with margin, agreement and filters."""

import json
from pathlib import Path

import pytest

from annotation.labeling.services import ensure_task
from annotation.models import Response, Role
from config.errors import ServiceError
from tests.annotation.datasets.test_export_kinds import _answer
from tests.factories import judge_all, make_member, make_prompt, make_task
from training.models import DatasetSnapshot
from training.services import snapshot_create


def _rows(snapshot):
    return [json.loads(line) for line in Path(snapshot.path).read_text().splitlines()]


def test_preference_rows_carry_the_labelers_strength_and_agreement(project, labeler):
    # given: one pair judged by three labelers, two of whom prefer "Yes"
    project.overlap_target = 3
    project.save(update_fields=["overlap_target"])
    make_task(project, texts=("Yes.", "No."))
    second, third = (make_member(project, Role.LABELER, name) for name in ("l2", "l3"))
    yes = lambda text: text == "Yes."  # noqa: E731
    judge_all(project, labeler, prefer=yes, strength=4)
    judge_all(project, second, prefer=yes, strength=2)
    judge_all(project, third, prefer=lambda text: text == "No.", strength=1)

    # when
    rows = _rows(snapshot_create(project=project, dataset="preferences"))

    # then
    assert [(r["chosen"][0]["content"], r["margin"]) for r in rows] == [
        ("Yes.", 4),
        ("Yes.", 2),
        ("No.", 1),
    ]
    assert [r["agreement"] for r in rows] == pytest.approx([2 / 3, 2 / 3, 1 / 3])


def test_ranking_pairs_carry_how_many_places_apart_they_were(project, labeler):
    prompt = make_prompt(project, "Pick the best fruit.")
    best, middle, worst = (
        Response.objects.create(prompt=prompt, author="t", text=text)
        for text in ("apple", "pear", "rock")
    )
    ensure_task(project=project, kind="ranking", prompt=prompt, responses=[best, middle, worst])
    _answer(project, labeler, {"ranking": [best.pk, middle.pk, worst.pk]})

    rows = _rows(snapshot_create(project=project, dataset="preferences"))

    margins = {(r["chosen"][0]["content"], r["rejected"][0]["content"]): r["margin"] for r in rows}
    assert margins == {("apple", "pear"): 1, ("apple", "rock"): 2, ("pear", "rock"): 1}


def test_min_margin_leaves_out_weak_pairs_and_is_recorded(project, labeler):
    make_task(project, texts=("Yes.", "No."))
    make_task(project, texts=("Yes!", "No!"))
    judge_all(project, labeler, prefer=lambda text: text.startswith("Yes"), strength=1)
    make_task(project, texts=("Yes?", "No?"))
    judge_all(project, labeler, prefer=lambda text: text.startswith("Yes"), strength=3)

    snapshot = snapshot_create(project=project, dataset="preferences", filters={"min_margin": 2})

    assert snapshot.row_count == 1
    assert snapshot.filters == {"min_margin": 2, "ai": "exclude"}  # the project's default
    assert _rows(snapshot)[0]["chosen"][0]["content"] == "Yes?"


def test_sft_snapshots_can_add_the_chosen_replies(project, labeler):
    make_task(project, texts=("Yes.", "No."))
    judge_all(project, labeler, prefer=lambda text: text == "Yes.")

    without = snapshot_create(project=project, dataset="sft")
    with_chosen = snapshot_create(project=project, dataset="sft", filters={"include_chosen": True})

    assert without.row_count == 0
    [row] = _rows(with_chosen)
    assert row["completion"] == [{"role": "assistant", "content": "Yes."}]
    assert row["prompt"][-1]["role"] == "user"
    assert with_chosen.filters == {"include_chosen": True, "ai": "exclude"}


def test_prompt_snapshots_hold_every_labeling_prompt(project):
    make_prompt(project, "First?")
    make_prompt(project, "Second?")

    rows = _rows(snapshot_create(project=project, dataset="prompts"))

    assert [r["prompt"][-1]["content"] for r in rows] == ["First?", "Second?"]


@pytest.mark.parametrize(
    ("dataset", "filters", "message"),
    [
        ("everything", {}, "Unknown dataset 'everything'"),
        ("preferences", {"min_margin": -1}, "min_margin must be a number >= 0."),
        ("preferences", {"include_chosen": True}, "Unknown filter(s) for preferences data"),
        ("sft", {"include_chosen": "yes"}, "include_chosen must be true or false."),
    ],
)
def test_bad_snapshot_requests_are_refused_and_store_nothing(project, dataset, filters, message):
    with pytest.raises(ServiceError) as error:
        snapshot_create(project=project, dataset=dataset, filters=filters)
    assert message in error.value.message
    assert DatasetSnapshot.objects.count() == 0
