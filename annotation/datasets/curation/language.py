"""Which language a row is written in, with lingua (lingua-language-detector, Rust inside).

`detect_language(text)` gives an ISO 639-1 code ("en", "de", "da", ...) or "" when the text
is too short or lingua is unsure; `parse_languages("en,de")` reads the set a curation
config keeps.

The detector: all 75 languages, low-accuracy mode (trigrams only), models loaded lazily,
minimum relative distance 0.1, and only the first 200 characters of a text are read.
Figures from the dev machine (2 CPUs, shared, so rough), texts of eight European languages:

| detector (all 75 languages)       | first call | texts/s at 260 chars | RSS     |
|-----------------------------------|------------|----------------------|---------|
| high accuracy, lazy               | 0.4-0.9 s  | 600-1,500            | +104 MB |
| high accuracy, preloaded          | 23 s build | ~700                 | +1.2 GB |
| low accuracy, lazy (chosen)       | 0.4-0.7 s  | 700-1,500            | +104 MB |
| low accuracy, preloaded           | 1.5 s build| 450-570              | +145 MB |

High accuracy costs nothing extra on texts of 120 characters or more, but on shorter ones
it loads every n-gram model (RSS +900 MB) and ran at 55 texts/s, so low accuracy it is.
Time grows with length (low accuracy: 30 chars ~6,000/s, 60 ~4,000/s, 120 ~1,750/s, 200
~900/s, 300 ~560/s), so 5,000 texts/s of 40 words is out of reach here; 200 characters
(about 35 words) kept every test sentence right, 120 did too but leaves Danish, Norwegian
and Swedish little to go on. The minimum relative distance 0.1 turns lingua's close calls
into "" (a short Dutch sentence read as Estonian without it) and kept every long one.
Preloading only moves the load to start-up and holds models of scripts never seen.
"""

from __future__ import annotations

import threading

from lingua import Language, LanguageDetector, LanguageDetectorBuilder

CHARACTERS_READ = 200
# Fewer letters than this ("ok", "Ja.", "👍") say nothing about a language.
MIN_LETTERS = 5
MIN_RELATIVE_DISTANCE = 0.1

_detector: LanguageDetector | None = None
_detector_lock = threading.Lock()


def language_detector() -> LanguageDetector:
    """The process's one detector, built on first use (safe to call from many threads)."""
    global _detector
    if _detector is None:
        with _detector_lock:
            if _detector is None:
                _detector = (
                    LanguageDetectorBuilder.from_all_languages()
                    .with_low_accuracy_mode()
                    .with_minimum_relative_distance(MIN_RELATIVE_DISTANCE)
                    .build()
                )
    return _detector


def detect_language(text: str) -> str:
    """ISO 639-1 code of the text's language, lower case; "" when too short or unsure."""
    head = _head(text)
    if sum(character.isalpha() for character in head) < MIN_LETTERS:
        return ""
    language = language_detector().detect_language_of(head)
    return "" if language is None else language.iso_code_639_1.name.lower()


def _head(text: str) -> str:
    """The first CHARACTERS_READ characters, cut back to a word boundary when one is near."""
    if len(text) <= CHARACTERS_READ:
        return text
    head = text[:CHARACTERS_READ]
    last_space = head.rfind(" ")
    return head[:last_space] if last_space > CHARACTERS_READ // 2 else head


def supported_languages() -> frozenset[str]:
    """Every code detect_language can return (besides "")."""
    return frozenset(language.iso_code_639_1.name.lower() for language in Language.all())


def parse_languages(spec: str) -> frozenset[str]:
    """Read "en,de" (any case, spaces allowed) into {"en", "de"}.

    Raises ValueError naming the unknown codes and listing the supported ones.
    """
    codes = {part.strip().lower() for part in spec.split(",")} - {""}
    if not codes:
        raise ValueError("No language given: write ISO 639-1 codes separated by commas, e.g. en,de")
    supported = supported_languages()
    unknown = sorted(codes - supported)
    if unknown:
        raise ValueError(
            f"Unknown language code(s): {', '.join(unknown)}. "
            f"Use ISO 639-1 codes: {', '.join(sorted(supported))}."
        )
    return frozenset(codes)
