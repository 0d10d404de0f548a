"""Self-instruct: ROUGE-L, list parsing, screening, options; the runner with a scripted
backend and with the tiny random model."""

import random
import time

import pytest

from annotation.judges.self_instruct import (
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
from config.errors import ServiceError

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


# --- the runner -----------------------------------------------------------------------


class ScriptedBackend:
    """A fake judge model (an external model, so faking it is fair): answers each request
    with the next scripted answer (a string, or an exception to raise; the last one repeats)
    and records the requests. ``on_request`` runs before each answer."""

    def __init__(self, answers, on_request=None):
        self.answers = list(answers)
        self.on_request = on_request
        self.requests: list[list[dict]] = []

    def complete(self, messages, *, max_tokens=256, temperature=0.0):
        self.requests.append(messages)
        if self.on_request:
            self.on_request(len(self.requests))
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def choice_probabilities(self, messages, choices):
        return None


@pytest.fixture
def judge(project):
    from annotation.models import Constitution, Judge

    constitution = Constitution.objects.create(name="c", version=1, principles=[])
    return Judge.objects.create(
        workspace=project.workspace,
        name="writer",
        backend=Judge.Backend.REMOTE,
        endpoint_url="http://127.0.0.1:9/v1",
        api_key="sk-key",
        constitution=constitution,
    )


def _run(project, judge, backend, *, options=None, max_requests=200, pk=None):
    from annotation.judges.jobs import judge_job_execute
    from annotation.models import JudgeJob

    job = JudgeJob.objects.create(
        pk=pk,
        project=project,
        judge=judge,
        kind=JudgeJob.Kind.SELF_INSTRUCT,
        options=options or {},
        max_requests=max_requests,
    )
    return judge_job_execute(job_id=job.pk, backend=backend)


def _new_prompts(project):
    return list(project.prompts.filter(metadata__source="self_instruct").order_by("id"))


POOL = [
    "Write a poem about the sea.",
    "How do I make a cup of green tea?",
    "Explain why the sky is blue.",
]


def test_new_prompts_are_stored_and_near_duplicates_dropped(project, judge):
    from tests.factories import make_prompt

    pool = [make_prompt(project, text) for text in POOL]
    backend = ScriptedBackend(
        [
            "Here you go:\n"
            "1. Write a short poem about the sea.\n"  # near the pool's poem prompt
            "2. Give me three tips for sleeping better.\n"
            "3. Give me three tips for sleeping better at night.\n"  # near item 2
            "4. Hi!\n",  # too short
            "1. Explain how vaccines train the immune system.\n"
            "2. Plan a vegetarian dinner for six people.\n"
            "3. Suggest names for a bakery run by two cats.\n",
        ]
    )

    job = _run(project, judge, backend, options={"count": 3})

    assert (job.status, job.total, job.done, job.error) == ("succeeded", 3, 3, "")
    assert job.requests_made == 2
    new = _new_prompts(project)
    assert [prompt.text for prompt in new] == [
        "Give me three tips for sleeping better.",
        "Explain how vaccines train the immune system.",
        "Plan a vegetarian dinner for six people.",
    ]
    pool_ids = {prompt.pk for prompt in pool}
    for prompt in new:
        assert prompt.metadata["source"] == "self_instruct"
        assert prompt.metadata["judge"] == "writer"
        assert prompt.metadata["judge_job"] == job.pk
        assert prompt.metadata["seeds"]
    # the first request showed pool prompts (by id); later ones may show one new prompt
    assert set(new[0].metadata["seeds"]) <= pool_ids
    assert set(new[1].metadata["seeds"]) <= pool_ids | {new[0].pk}
    assert "Request 1: 4 listed, 1 added (dropped: 2 near-duplicate, 1 too short)." in job.log
    assert "Request 2: 3 listed, 2 added (dropped: 1 over the count)." in job.log
    # the requests show the examples one per line, numbered
    first = backend.requests[0][-1]["content"]
    assert all(f". {text}" in first for text in POOL)
    assert "sk-key" not in job.log


def test_given_seeds_are_shown_and_recorded_as_texts(project, judge):
    from tests.factories import make_prompt

    make_prompt(project, "An existing prompt that is never shown here.")
    seeds = ["Name three rivers in Africa.", "Write a limerick\nabout a goat."]
    backend = ScriptedBackend(
        [
            "1. Name three rivers in Africa!\n"  # a copy of a seed
            "2. Describe how a bicycle gear works.\n"
        ]
    )

    job = _run(project, judge, backend, options={"count": 1, "seeds": seeds, "examples": 2})

    assert job.status == "succeeded"
    (prompt,) = _new_prompts(project)
    assert prompt.text == "Describe how a bicycle gear works."
    assert sorted(prompt.metadata["seeds"]) == sorted(seeds)
    shown = backend.requests[0][-1]["content"]
    assert "Write a limerick about a goat." in shown
    assert "never shown" not in shown


def test_the_count_caps_what_one_request_adds(project, judge):
    from tests.factories import make_prompt

    make_prompt(project, "Seed prompt about gardening in spring.")
    backend = ScriptedBackend(
        [
            "1. Explain black holes simply.\n"
            "2. Draft an email asking for leave.\n"
            "3. List prime numbers."
        ]
    )

    job = _run(project, judge, backend, options={"count": 2})

    assert (job.status, job.done, job.requests_made) == ("succeeded", 2, 1)
    assert len(_new_prompts(project)) == 2


def test_the_budget_stops_the_job_and_keeps_what_was_added(project, judge):
    from tests.factories import make_prompt

    make_prompt(project, "Seed prompt about gardening in spring.")
    backend = ScriptedBackend(
        ["1. Explain black holes simply.", "1. Draft an email asking for a day off."]
    )

    job = _run(project, judge, backend, options={"count": 5}, max_requests=2)

    assert (job.status, job.done, job.requests_made) == ("partial", 2, 2)
    assert "Stopped by the budget: 2 model requests" in job.error
    assert [p.text for p in _new_prompts(project)] == [
        "Explain black holes simply.",
        "Draft an email asking for a day off.",
    ]


def test_requests_that_add_nothing_stop_the_job(project, judge):
    from tests.factories import make_prompt

    make_prompt(project, "Write a poem about the sea.")
    backend = ScriptedBackend(["1. Write a poem about the sea.\n2. ok\n3. ???"])

    job = _run(project, judge, backend, options={"count": 3})

    assert job.status == "failed"
    assert job.error == "Stopped: 10 requests in a row gave no new prompt (0 of 3 added)."
    assert job.requests_made == 10
    assert _new_prompts(project) == []


def test_backend_errors_are_retried_with_the_next_request_then_stop_the_job(project, judge):
    from annotation.judges.backends import BackendError
    from tests.factories import make_prompt

    make_prompt(project, "Seed prompt about gardening in spring.")
    down = BackendError("The endpoint did not answer within 30 s (timeout).", retryable=True)

    # one failure, then an answer: the job reaches its count
    job = _run(
        project,
        judge,
        ScriptedBackend([down, "1. Explain black holes simply."]),
        options={"count": 1},
    )
    assert (job.status, job.done, job.failed) == ("succeeded", 1, 0)
    assert "Request 1 failed: The endpoint did not answer" in job.log

    # failures only: three in a row end it
    job = _run(project, judge, ScriptedBackend([down]), options={"count": 1})
    assert job.status == "failed" and job.requests_made == 3
    assert (
        job.error == "The judge's model failed: The endpoint did not answer within 30 s (timeout)."
    )


def test_cancel_stops_before_the_next_request(project, judge):
    from annotation.models import JudgeJob
    from tests.factories import make_prompt

    make_prompt(project, "Seed prompt about gardening in spring.")

    def cancel(count):
        JudgeJob.objects.update(cancel_requested=True)

    backend = ScriptedBackend(
        ["1. Explain black holes simply.", "1. Draft an email asking for leave."], on_request=cancel
    )
    job = _run(project, judge, backend, options={"count": 5})

    assert (job.status, job.done, job.requests_made) == ("cancelled", 1, 1)
    assert len(_new_prompts(project)) == 1


def test_no_seeds_and_bad_options_fail_with_the_reason_and_store_nothing(project, judge):
    job = _run(project, judge, ScriptedBackend(["1. Explain black holes simply."]))
    assert job.status == "failed"
    assert job.error.startswith("Self-instruct needs seed prompts")
    assert job.requests_made == 0

    job = _run(
        project, judge, ScriptedBackend(["x"]), options={"count": 0, "seeds": ["Hi there you"]}
    )
    assert (job.status, job.error) == ("failed", "count must be a whole number from 1 to 500.")
    assert _new_prompts(project) == []


def test_chat_and_arena_prompts_are_neither_seeds_nor_the_pool(project, judge):
    from annotation.models import Prompt
    from tests.factories import make_prompt

    seed = make_prompt(project, "Seed prompt about gardening in spring.")
    Prompt.objects.create(
        project=project, text="Explain black holes simply.", metadata={"chat_session": 1}
    )

    backend = ScriptedBackend(["1. Explain black holes simply."])
    job = _run(project, judge, backend, options={"count": 1})

    assert job.status == "succeeded"
    (prompt,) = _new_prompts(project)
    assert prompt.metadata["seeds"] == [seed.pk]


def test_tiny_local_model_samples_one_prompt_a_line_and_the_filters_drop_the_rest(
    project, tiny_model_dir
):
    """Sampled at temperature 1, the tiny random model's next-token distribution is almost
    flat, so each answer is a line of random tokens: one item, kept when its first token
    starts with a letter. The job id seeds everything random here (the order the seeds are
    shown in and the model's sampling), and on PostgreSQL an id comes from a sequence that
    earlier tests moved on, so the job is given its id. Job 8's first answer starts with
    punctuation and is dropped; its next two add a prompt each, so the count is met on the
    last request the budget allows."""
    from annotation.models import Constitution, Judge
    from tests.factories import make_prompt, make_version

    pool = [make_prompt(project, text) for text in POOL]
    constitution = Constitution.objects.create(name="tiny", version=1, principles=[])
    version = make_version("tiny-writer", path=str(tiny_model_dir))
    judge = Judge.objects.create(
        workspace=project.workspace,
        name="tiny",
        backend="local",
        model_version=version,
        constitution=constitution,
    )

    job = _run(
        project,
        judge,
        None,
        options={"count": 2, "max_tokens": 32, "temperature": 1.0},
        max_requests=3,
        pk=8,
    )

    assert (job.status, job.error) == ("succeeded", "")
    assert (job.done, job.failed, job.total, job.requests_made) == (2, 0, 2, 3)
    assert [line.split(" ", 2)[2] for line in job.log.splitlines()] == [
        "Self-instruct: 2 new prompts wanted, 3 seeds, 3 prompts in the pool, max ROUGE-L 0.7.",
        "Request 1: 1 listed, 0 added (dropped: 1 does not start with a word).",
        "Request 2: 1 listed, 1 added (dropped: none).",
        "Request 3: 1 listed, 1 added (dropped: none).",
        "Done: 2 new prompts in 3 requests.",
        "Finished: Succeeded",
    ]
    first, second = _new_prompts(project)
    index = SimilarityIndex(POOL)
    for prompt in (first, second):
        assert rejection_reason(prompt.text) is None
        assert not index.is_near_duplicate(prompt.text, max_similarity=0.7)
        index.add(prompt.text)
    pool_ids = {prompt.pk for prompt in pool}
    assert first.metadata["judge_job"] == second.metadata["judge_job"] == 8
    assert set(first.metadata["seeds"]) == pool_ids  # three seeds, no accepted prompt yet
    # then three seeds and the prompt this job accepted first
    assert set(second.metadata["seeds"]) == pool_ids | {first.pk}
