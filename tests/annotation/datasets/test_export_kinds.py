import uuid

from annotation.datasets.selectors import preference_rows
from annotation.labeling.services import assignment_next, ensure_task, judgment_submit
from annotation.models import Judgment, Response, Review
from tests.factories import make_prompt


def _answer(project, labeler, data):
    assignment = assignment_next(project=project, labeler=labeler)
    return assignment, judgment_submit(
        project=project,
        labeler=labeler,
        assignment_id=assignment.pk,
        data=data,
        client_id=uuid.uuid4(),
    )


def _responses(project, texts):
    prompt = make_prompt(project, "Pick the best fruit.")
    return [Response.objects.create(prompt=prompt, author="t", text=text) for text in texts]


def test_a_ranking_of_k_gives_k_choose_2_dpo_pairs_best_over_worse(project, labeler):
    best, middle, worst = _responses(project, ["apple", "pear", "rock"])
    ensure_task(
        project=project, kind="ranking", prompt=best.prompt, responses=[best, middle, worst]
    )

    _answer(project, labeler, {"ranking": [best.pk, middle.pk, worst.pk]})

    pairs = [
        (row["chosen"][0]["content"], row["rejected"][0]["content"])
        for row in preference_rows(project, export_format="dpo")
    ]
    assert pairs == [("apple", "pear"), ("apple", "rock"), ("pear", "rock")]
    ranking = list(preference_rows(project, export_format="ranking"))
    analysis = ("prompt_id", "external_id", "labeler", "judged_at")
    assert [{k: v for k, v in row.items() if k not in analysis} for row in ranking] == [
        {
            "prompt": [{"role": "user", "content": "Pick the best fruit."}],
            "responses": ["apple", "pear", "rock"],
            "all_bad": False,
            "source": "human",
            "judge": "",
            "constitution": "",
            "principle": "",
        }
    ]
    assert ranking[0]["prompt_id"] == best.prompt_id


def test_all_bad_rankings_give_no_pairs(project, labeler):
    responses = _responses(project, ["a", "b", "c"])
    ensure_task(project=project, kind="ranking", prompt=responses[0].prompt, responses=responses)

    _answer(project, labeler, {"all_bad": True})

    assert list(preference_rows(project, export_format="dpo")) == []


def test_rating_rows_carry_scores_and_flags(project, labeler):
    (response,) = _responses(project, ["Call me at 555-0100."])
    ensure_task(project=project, kind="rating", prompt=response.prompt, responses=[response])

    _answer(
        project,
        labeler,
        {"scores": {"helpful": 2, "harmless": 5, "honest": 6}, "flags": ["pii"]},
    )

    (row,) = preference_rows(project, export_format="rating")
    assert row["response"] == "Call me at 555-0100."
    assert row["scores"] == {"helpful": 2, "harmless": 5, "honest": 6}
    assert row["flags"] == ["pii"]


def test_a_rejected_judgment_leaves_every_export(project, labeler, admin_member):
    responses = _responses(project, ["x", "y", "z"])
    ensure_task(project=project, kind="ranking", prompt=responses[0].prompt, responses=responses)
    _, judgment = _answer(project, labeler, {"ranking": [r.pk for r in responses]})

    Review.objects.create(judgment=judgment, reviewer=admin_member, decision="rejected")

    assert list(preference_rows(project, export_format="dpo")) == []
    assert list(preference_rows(project, export_format="ranking")) == []
    assert Judgment.objects.filter(pk=judgment.pk).exists()  # kept, only left out


def test_chat_context_becomes_the_start_of_the_prompt(project, labeler):
    a, b = _responses(project, ["Sure, Paris.", "No idea."])
    context = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ]
    ensure_task(
        project=project, kind="comparison", prompt=a.prompt, responses=[a, b], context=context
    )

    assignment, _ = _answer(project, labeler, {"choice": "left"})

    (row,) = preference_rows(project, export_format="dpo")
    assert row["prompt"] == [*context, {"role": "user", "content": "Pick the best fruit."}]
    shown_first = Response.objects.get(pk=assignment.shown_order[0]).text
    assert row["chosen"] == [{"role": "assistant", "content": shown_first}]
