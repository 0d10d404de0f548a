"""Self-instruct: ROUGE-L, list parsing, screening, options; the runner with a scripted
backend and with the tiny random model."""

import random
import time

import pytest

from annotation.ai.self_instruct import (
    SimilarityIndex,
    check_self_instruct_options,
    lcs_length,
    normalise_item,
    parse_prompt_list,
    rejection_reason,
    rouge_l,
    screen_prompts,
    words,
)
from annotation.errors import ServiceError

# --- ROUGE-L --------------------------------------------------------------------------


def _brute_lcs(a, b):
    """LCS by recursion over all prefixes (memoised): an independent reference."""
    from functools import cache

    @cache
    def go(i, j):
        if i == len(a) or j == len(b):
            return 0
        if a[i] == b[j]:
            return 1 + go(i + 1, j + 1)
        return max(go(i + 1, j), go(i, j + 1))

    return go(0, 0)


def test_words_casefold_and_split_on_non_word_characters():
    assert words("Hello, WORLD! It's 2024 — Straße") == [
        "hello",
        "world",
        "it",
        "s",
        "2024",
        "strasse",
    ]
    assert words("  ...  ") == []


def test_lcs_length_known_cases():
    assert lcs_length([], []) == 0
    assert lcs_length(["a"], []) == 0
    assert lcs_length(list("abcbdab"), list("bdcaba")) == 4
    assert lcs_length(list("abc"), list("abc")) == 3
    assert lcs_length(list("abc"), list("def")) == 0
    # symmetric
    assert lcs_length(list("xaybz"), list("ab")) == lcs_length(list("ab"), list("xaybz")) == 2


def test_lcs_length_matches_brute_force_on_random_lists():
    rng = random.Random(7)
    for _ in range(300):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 9))]
        b = [rng.choice("abcd") for _ in range(rng.randint(0, 9))]
        assert lcs_length(a, b) == _brute_lcs(tuple(a), tuple(b))


def test_rouge_l_is_the_lcs_f1():
    # LCS "the cat sat" = 3; P = 3/4, R = 3/5; F1 = 2PR/(P+R) = 2*3/(4+5)
    first = words("the cat sat down")
    second = words("the big cat sat quietly")
    precision, recall = 3 / 4, 3 / 5
    assert rouge_l(first, second) == pytest.approx(2 * precision * recall / (precision + recall))
    assert rouge_l(first, second) == pytest.approx(6 / 9)
    assert rouge_l(first, first) == 1.0
    assert rouge_l(first, []) == 0.0
    assert rouge_l([], []) == 0.0
    assert rouge_l(words("a b"), words("c d")) == 0.0


def test_index_gives_the_best_score_over_the_pool():
    pool = ["Write a poem about the sea.", "Explain how rainbows form.", "List three fruits."]
    index = SimilarityIndex(pool)
    text = "Write a short poem about the sea."
    expected = max(rouge_l(words(text), words(other)) for other in pool)
    assert index.most_similar(text) == pytest.approx(expected)
    assert index.is_near_duplicate(text, max_similarity=0.7)
    assert not index.is_near_duplicate("How do volcanoes erupt?", max_similarity=0.7)
    assert SimilarityIndex().most_similar(text) == 0.0
    assert index.most_similar("!!!") == 0.0


def test_index_agrees_with_brute_force_on_random_prompts():
    rng = random.Random(3)
    vocabulary = ["how", "why", "what", "the", "a", "of", "to", "write", "explain", "list"]
    vocabulary += ["give", "poem", "sea", "cat", "code"]
    pool = [" ".join(rng.choices(vocabulary, k=rng.randint(1, 12))) for _ in range(200)]
    index = SimilarityIndex(pool)
    for _ in range(200):
        text = " ".join(rng.choices(vocabulary, k=rng.randint(1, 12)))
        exact = max(rouge_l(words(text), words(other)) for other in pool)
        assert index.most_similar(text) == pytest.approx(exact)
        for threshold in (0.3, 0.5, 0.7, 0.9):
            assert index.is_near_duplicate(text, max_similarity=threshold) == (exact >= threshold)


def test_threshold_is_inclusive():
    index = SimilarityIndex(["a b c d e f g h i j"])
    # 7 of 10 words shared in order, same length: F1 = 0.7 exactly
    assert index.most_similar("a b c d e f g x y z") == pytest.approx(0.7)
    assert index.is_near_duplicate("a b c d e f g x y z", max_similarity=0.7)
    assert not index.is_near_duplicate("a b c d e f x y z w", max_similarity=0.7)


def test_index_is_fast_on_a_pool_of_thousands():
    rng = random.Random(1)
    vocabulary = [f"w{i}" for i in range(3000)] + ["the", "a", "how", "to", "what", "is"] * 50
    pool = [" ".join(rng.choices(vocabulary, k=rng.randint(5, 40))) for _ in range(5000)]
    started = time.perf_counter()
    index = SimilarityIndex(pool)
    for _ in range(100):
        index.is_near_duplicate(
            " ".join(rng.choices(vocabulary, k=rng.randint(5, 40))), max_similarity=0.7
        )
    # About 0.5 s here, building the index included; the bound is loose so a busy machine
    # does not fail it, but an all-pairs LCS (seconds per candidate) would.
    assert time.perf_counter() - started < 20


# --- parsing --------------------------------------------------------------------------


def test_parse_numbered_list_with_preamble_and_closing_remark():
    answer = (
        "Sure! Here are four new requests:\n\n"
        "1. How do I bake sourdough bread at home?\n"
        "2) Write a haiku about autumn leaves.\n"
        "(3) Explain the difference between TCP and UDP.\n"
        "4: Give me three tips for a job interview.\n\n"
        "I hope these help!"
    )
    assert parse_prompt_list(answer) == [
        "How do I bake sourdough bread at home?",
        "Write a haiku about autumn leaves.",
        "Explain the difference between TCP and UDP.",
        "Give me three tips for a job interview.",
    ]


def test_parse_joins_continuation_lines_and_handles_bullets_and_labels():
    answer = (
        "- Prompt: Summarise this\n  paragraph in one sentence.\n"
        "* **Translate 'good morning' into French.**\n"
        '\u2022 "What is a prime number?"\n'
        "Request 4: Plan a three-day trip to Rome.\r\n"
        "5.Suggest a name for a cat."
    )
    assert parse_prompt_list(answer) == [
        "Summarise this paragraph in one sentence.",
        "Translate 'good morning' into French.",
        "What is a prime number?",
        "Plan a three-day trip to Rome.",
        "Suggest a name for a cat.",
    ]


def test_parse_unnumbered_lines_are_items_except_headings():
    answer = "New requests:\nHow tall is Mount Everest?\n\n  Describe a sunset in two lines.  \n"
    assert parse_prompt_list(answer) == [
        "How tall is Mount Everest?",
        "Describe a sunset in two lines.",
    ]


def test_parse_keeps_numbers_that_are_not_list_markers():
    assert parse_prompt_list("1. Convert 1.5 liters to cups.\n2. What happened in 1989?") == [
        "Convert 1.5 liters to cups.",
        "What happened in 1989?",
    ]
    assert parse_prompt_list("2020: was it a leap year?") == ["2020: was it a leap year?"]
    assert normalise_item("1.5 liters is how many cups?") == "1.5 liters is how many cups?"


def test_parse_empty_and_marker_only_answers():
    assert parse_prompt_list("") == []
    assert parse_prompt_list("\n\n  \n") == []
    assert parse_prompt_list("1.\n2.\n3. ") == []


def test_rejection_reasons():
    assert rejection_reason("Hi there") == "too short"
    assert rejection_reason("Tell me a story about dragons " * 60) == "too long"
    assert rejection_reason("... and then what happened next?") == "does not start with a word"
    assert rejection_reason("¿Qué hora es ahora mismo?") is None
    assert rejection_reason("Write a limerick about cheese.") is None


def test_screen_drops_short_duplicates_of_the_pool_and_of_each_other():
    index = SimilarityIndex(["Write a poem about the sea."])
    result = screen_prompts(
        [
            "Write a poem about the sea!",  # the pool has it
            "Explain how a rainbow forms in the sky.",
            "Explain how a rainbow forms in the sky please.",  # the previous one again
            "Hi",
            "Give three tips for learning a language.",
            "Name the planets of the solar system in order.",
        ],
        index=index,
        max_similarity=0.7,
        limit=2,
    )
    assert result.accepted == [
        "Explain how a rainbow forms in the sky.",
        "Give three tips for learning a language.",
    ]
    assert result.dropped == {"near-duplicate": 2, "too short": 1, "over the count": 1}
    assert len(index) == 3


# --- options --------------------------------------------------------------------------


def test_options_defaults_and_cleaning():
    assert check_self_instruct_options({}) == {
        "count": 20,
        "per_request": 4,
        "examples": 4,
        "max_similarity": 0.7,
        "temperature": 0.7,
        "max_tokens": 384,
        "seeds": None,
    }
    options = check_self_instruct_options({"count": 5, "seeds": ["  Say hi.  "]})
    assert options["count"] == 5 and options["seeds"] == ["Say hi."]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([], "Options must be an object"),
        ({"count": 0}, "count must be a whole number from 1 to 500"),
        ({"count": 501}, "count must be"),
        ({"count": "5"}, "count must be"),
        ({"count": True}, "count must be"),
        ({"per_request": 21}, "per_request must be"),
        ({"max_similarity": 1.5}, "max_similarity must be"),
        ({"max_similarity": 0}, "max_similarity must be above 0"),
        ({"seeds": []}, "seeds must be a list"),
        ({"seeds": "hi"}, "seeds must be a list"),
        ({"seeds": ["ok", " "]}, "Seed 2 must be a non-empty text"),
        ({"limit": 3}, "Unknown option 'limit'"),
    ],
)
def test_bad_options_are_refused_with_the_reason(options, message):
    with pytest.raises(ServiceError, match=message):
        check_self_instruct_options(options)
