"""Critique -> revision: the pure parts, then the runner with a scripted backend and with the
tiny random model, through a real JobContext."""

import random

import pytest

from annotation.ai.revision import (
    Round,
    check_revision_options,
    clean_revision,
    pick_principles,
    rationale,
    same_text,
)
from annotation.errors import ServiceError

PRINCIPLES = [
    {
        "name": name,
        "critique_request": f"Critique for {name}.",
        "revision_request": f"Revise for {name}.",
        "comparison_question": f"Which is more {name}?",
    }
    for name in ("harmless", "helpful", "honest")
]


# --- pure parts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("  A kinder reply.  ", "A kinder reply."),
        ("Revision: A kinder reply.", "A kinder reply."),
        ("**Revised response:** A kinder reply.", "A kinder reply."),
        (
            "Here is the rewritten response:\nA kinder reply.\nSecond line.",
            "A kinder reply.\nSecond line.",
        ),
        ("Sure, here's a revision:\n\n\u201cA kinder reply.\u201d", "A kinder reply."),
        ('"A kinder reply."', "A kinder reply."),
        ("Line one\r\nLine two", "Line one\nLine two"),
        ("Revision:", ""),
        ("   ", ""),
        ("", ""),
        # Not a label: kept as written.
        ("Here is why: the sky is blue.", "Here is why: the sky is blue."),
        ('He said "hi" and left, "bye"', 'He said "hi" and left, "bye"'),
    ],
)
def test_clean_revision(answer, expected):
    assert clean_revision(answer) == expected


def test_same_text_ignores_whitespace_only():
    assert same_text("A  reply.\n", " A reply.")
    assert not same_text("A reply.", "A reply!")


def test_pick_principles_draws_a_new_one_each_round_and_is_seeded():
    picked = pick_principles(PRINCIPLES, 3, random.Random("job-1"))
    assert sorted(p["name"] for p in picked) == ["harmless", "helpful", "honest"]
    again = pick_principles(PRINCIPLES, 3, random.Random("job-1"))
    assert [p["name"] for p in again] == [p["name"] for p in picked]
    draws = {
        tuple(p["name"] for p in pick_principles(PRINCIPLES, 3, random.Random(seed)))
        for seed in range(50)
    }
    assert len(draws) == 6  # every order of the three shows up


def test_pick_principles_beyond_the_constitution_never_repeats_back_to_back():
    for seed in range(100):
        names = [p["name"] for p in pick_principles(PRINCIPLES[:2], 4, random.Random(seed))]
        assert len(names) == 4
        assert all(first != second for first, second in zip(names, names[1:], strict=False))
    only = pick_principles(PRINCIPLES[:1], 3, random.Random(0))
    assert [p["name"] for p in only] == ["harmless"] * 3


def test_rationale_lists_each_round_under_its_principle():
    rounds = [Round("harmless", "Rude.", "r1"), Round("honest", "Made up a date.", "r2")]
    assert rationale(rounds) == "[harmless] Rude.\n\n[honest] Made up a date."


def test_options_defaults():
    assert check_revision_options(None) == {
        "limit": 20,
        "rounds": 1,
        "max_tokens": 256,
        "temperature": 0.0,
        "only_model_responses": True,
        "response_ids": None,
    }
    assert check_revision_options({"rounds": 4, "response_ids": [3, 1]})["response_ids"] == [3, 1]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("x", "Options must be an object"),
        ({"rounds": 0}, "rounds must be a whole number from 1 to 4"),
        ({"rounds": 5}, "rounds must be"),
        ({"limit": 1001}, "limit must be"),
        ({"limit": 2.0}, "limit must be"),
        ({"response_ids": []}, "response_ids must be a list"),
        ({"response_ids": ["3"]}, "response_ids must be a list"),
        ({"response_ids": [True]}, "response_ids must be a list"),
        ({"response_ids": [2, 2]}, "lists a response twice"),
        ({"only_model_responses": "yes"}, "only_model_responses must be true or false"),
        ({"temperature": 3}, "temperature must be"),
        ({"count": 3}, "Unknown option 'count'"),
    ],
)
def test_bad_options_are_refused_with_the_reason(options, message):
    with pytest.raises(ServiceError, match=message):
        check_revision_options(options)
