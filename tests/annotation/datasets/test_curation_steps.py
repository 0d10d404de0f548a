"""Curation steps: duplicates (exact, near), language, quality rules. Plain Python, no database."""

import random

import pytest

from annotation.datasets.curation.dedupe import (
    ExactDeduper,
    NearDeduper,
    normalise,
    shingle_hashes,
)
from annotation.datasets.curation.language import (
    detect_language,
    language_detector,
    parse_languages,
)
from annotation.datasets.curation.quality import (
    QualityRules,
    parse_quality_rules,
    repetition,
    symbol_ratio,
)

# --- duplicates ---------------------------------------------------------------------------


def _vocabulary(seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choices(letters, k=rng.randint(3, 9))) for _ in range(3000)]


VOCABULARY = _vocabulary()


def _text(rng: random.Random, words: int = 60) -> str:
    return " ".join(rng.choice(VOCABULARY) for _ in range(words))


def _with_words_changed(text: str, count: int, rng: random.Random) -> str:
    words = text.split()
    for position in rng.sample(range(len(words)), count):
        words[position] = rng.choice(VOCABULARY)
    return " ".join(words)


def test_normalise_folds_case_width_whitespace_and_punctuation():
    assert (
        normalise("  Hello,\tWORLD!!  (Don't)…  ＦＵＬＬ　width 👍 ")
        == "hello world dont full width"
    )


def test_exact_deduper_catches_copies_differing_in_case_spacing_and_punctuation():
    deduper = ExactDeduper()

    assert deduper.first_of("a", "What is the capital of France? Paris.") is None
    assert deduper.first_of("b", "what is the capital of france paris") == "a"
    assert deduper.first_of("c", "  WHAT is the   capital of France?!\n\nParis ") == "a"


def test_exact_deduper_keeps_different_texts_and_remembers_only_the_first():
    deduper = ExactDeduper()

    assert deduper.first_of("a", "Paris is the capital of France.") is None
    assert deduper.first_of("b", "Rome is the capital of Italy.") is None
    assert deduper.first_of("c", "Rome is the capital of Italy") == "b"
    assert deduper.first_of("d", "Rome is the capital of italy.") == "b"


def _near_deduper_holding(originals: list[str]) -> NearDeduper:
    deduper = NearDeduper()
    for number, text in enumerate(originals):
        assert deduper.first_of(f"row{number}", text) is None
    return deduper


def test_near_deduper_catches_texts_with_three_words_changed():
    rng = random.Random(11)
    originals = [_text(rng) for _ in range(30)]
    deduper = _near_deduper_holding(originals)

    found = [
        deduper.first_of(f"edit{number}", _with_words_changed(text, 3, rng))
        for number, text in enumerate(originals)
    ]

    # 3 of 60 words changed leave a shingle Jaccard near 0.87. LSH is probabilistic: this
    # seed catches 29 of 30; datasketch's default bands (no recall weighting) catch ~21.
    assert sum(earlier == f"row{number}" for number, earlier in enumerate(found)) >= 26
    assert all(earlier in (None, f"row{number}") for number, earlier in enumerate(found))


def test_near_deduper_keeps_texts_with_a_sixth_of_their_words_changed():
    rng = random.Random(17)
    originals = [_text(rng) for _ in range(30)]
    deduper = _near_deduper_holding(originals)

    found = [
        deduper.first_of(f"edit{number}", _with_words_changed(text, 10, rng))
        for number, text in enumerate(originals)
    ]

    # Jaccard near 0.6: the recall-leaning bands let some through as candidates (5 to 10
    # of 30 without the signature check); the check turns them all away.
    assert found == [None] * 30


def test_near_deduper_keeps_clearly_different_texts():
    rng = random.Random(12)
    deduper = NearDeduper()

    duplicates = [deduper.first_of(f"row{number}", _text(rng)) for number in range(300)]

    assert duplicates == [None] * 300


def test_near_deduper_catches_exact_copies_and_short_texts():
    deduper = NearDeduper()
    text = _text(random.Random(13))

    assert deduper.first_of("long", text) is None
    assert deduper.first_of("long copy", text.upper() + "!") == "long"
    assert deduper.first_of("short", "Yes.") is None
    assert deduper.first_of("short copy", "yes") == "short"
    assert deduper.first_of("other short", "No.") is None


def test_near_deduper_names_the_earliest_of_several_similar_rows():
    rng = random.Random(14)
    text = _text(rng)
    deduper = NearDeduper()
    deduper.first_of("first", text)
    # A second copy is a duplicate and is not remembered, so later copies name the first.
    assert deduper.first_of("second", _with_words_changed(text, 1, rng)) == "first"

    assert deduper.first_of("third", _with_words_changed(text, 1, rng)) == "first"


def test_near_deduper_gives_the_same_answers_on_every_run():
    rng = random.Random(15)
    originals = [_text(rng) for _ in range(40)]
    rows = originals + [_with_words_changed(text, 3, rng) for text in originals]

    def run() -> list[str | None]:
        deduper = NearDeduper()
        return [deduper.first_of(str(number), text) for number, text in enumerate(rows)]

    assert run() == run()


def test_near_signature_estimates_the_shingle_jaccard():
    rng = random.Random(16)
    left = _text(rng)
    right = _with_words_changed(left, 6, rng)
    left_set = set(shingle_hashes(normalise(left)).tolist())
    right_set = set(shingle_hashes(normalise(right)).tolist())
    true_jaccard = len(left_set & right_set) / len(left_set | right_set)
    deduper = NearDeduper(num_perm=256)

    estimate = deduper.sketch(normalise(left)).jaccard(deduper.sketch(normalise(right)))

    assert 0.55 < true_jaccard < 0.9
    assert abs(estimate - true_jaccard) < 0.1


# --- language -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector():
    # Built once for the module: its first detection loads lingua's models (about 1 s).
    return language_detector()


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("The committee will meet again next week to review the budget.", "en"),
        ("Der Ausschuss wird sich nächste Woche erneut treffen, um den Haushalt zu prüfen.", "de"),
        ("Udvalget mødes igen i næste uge for at gennemgå budgettet.", "da"),
        ("Le comité se réunira de nouveau la semaine prochaine pour examiner le budget.", "fr"),
        ("El comité se reunirá de nuevo la próxima semana para revisar el presupuesto.", "es"),
    ],
)
def test_detect_language_names_the_language(detector, text, code):
    assert detect_language(text) == code


def test_detect_language_reads_only_the_start_of_a_long_text(detector):
    text = "Das ist ein ganz normaler deutscher Satz über das Wetter. " * 4 + "x" * 5000

    assert detect_language(text) == "de"


@pytest.mark.parametrize("text", ["ok", "", "   ", "👍👍👍", "1234 5678"])
def test_detect_language_is_unsure_of_too_little_text(detector, text):
    assert detect_language(text) == ""


def test_language_detector_is_built_once(detector):
    assert language_detector() is detector


def test_parse_languages_reads_codes_in_any_case_and_spacing():
    assert parse_languages(" EN, de ,da") == frozenset({"en", "de", "da"})


def test_parse_languages_names_unknown_codes_and_lists_the_valid_ones():
    with pytest.raises(
        ValueError, match=r"Unknown language code\(s\): english, xx\. Use ISO 639-1 codes: af, "
    ):
        parse_languages("en,xx,english")


def test_parse_languages_refuses_an_empty_list():
    with pytest.raises(ValueError, match="No language given"):
        parse_languages(" , ")


# --- quality ------------------------------------------------------------------------------

PLAIN = "The committee will meet again next week to review the budget and decide."


def test_parse_quality_rules_reads_every_rule():
    rules = parse_quality_rules(
        "min_chars=10, max_chars=4000,min_words=3,max_repetition=0.3,max_symbol_ratio=0.25,top=0.5"
    )

    assert rules == QualityRules(
        min_chars=10,
        max_chars=4000,
        min_words=3,
        max_repetition=0.3,
        max_symbol_ratio=0.25,
        top_share=0.5,
    )


def test_parse_quality_rules_of_nothing_switches_every_rule_off():
    assert parse_quality_rules("") == QualityRules()
    assert QualityRules().failure("") is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("min_len=10", r"Unknown quality rule 'min_len'; known rules: min_chars, max_chars, "),
        ("min_chars=ten", r"min_chars must be a whole number, got 'ten'"),
        ("min_chars=2.5", r"min_chars must be a whole number, got '2.5'"),
        ("max_repetition=lots", r"max_repetition must be a number between 0 and 1, got 'lots'"),
        ("max_repetition=1.5", r"max_repetition must be between 0 and 1, got 1.5"),
        ("top=0", r"top must be above 0 and at most 1, got 0"),
        ("min_chars", r"Write each rule as name=value, got 'min_chars'"),
        ("min_chars=5,min_chars=6", r"Quality rule 'min_chars' is given twice"),
        ("min_chars=-1", r"min_chars must be 0 or more, got -1"),
        ("min_chars=50,max_chars=10", r"min_chars 50 is above max_chars 10"),
    ],
)
def test_parse_quality_rules_explains_bad_input(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_quality_rules(spec)


@pytest.mark.parametrize(
    ("rules", "passing", "failing", "reason"),
    [
        (QualityRules(min_chars=10), "Ten chars!", "Too short", "shorter than 10 characters"),
        (QualityRules(max_chars=10), "Ten chars!", "Eleven char", "longer than 10 characters"),
        (QualityRules(min_words=3), "one two three", "one two", "fewer than 3 words"),
        (
            QualityRules(max_symbol_ratio=0.25),
            PLAIN,
            "{{#if}} <<<>>> ::: ok",
            "symbol ratio 0.78 above 0.25",
        ),
        (
            QualityRules(max_repetition=0.3),
            PLAIN,
            "buy now please " * 5,
            "repetition 0.77 above 0.3",
        ),
    ],
)
def test_each_quality_rule_passes_and_fails(rules, passing, failing, reason):
    assert rules.failure(passing) is None
    assert rules.failure(failing) == reason


def test_quality_failure_names_the_first_rule_failed():
    rules = QualityRules(min_chars=100, max_repetition=0.1)

    assert rules.failure("spam " * 3) == "shorter than 100 characters"


def test_symbol_ratio_and_repetition_measures():
    assert symbol_ratio("ab !?") == 0.5
    assert symbol_ratio("   ") == 0.0
    # 3-grams: (a b c) (b c a) (c a b) (a b c) -> one of four repeats an earlier one.
    assert repetition(["a", "b", "c", "A", "B", "C"]) == 0.25
    assert repetition(["only", "two"]) == 0.0
