"""Rule-based quality filter: length, word count, symbol share and repetition of a row's text.

The rules are simplified forms of the MassiveText quality filters of the Gopher paper (Rae
et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from Training Gopher",
arXiv:2112.11446, appendix A.1.1: word-count bounds, a symbol-to-word ratio, and the share
of text in duplicate n-grams), the "quality filtering: remove low-quality ... bad OCR'ed"
step of corpus curation in the course notes of ../shared/reference/002 ("Post Training
Large Language Models", step 0(a)). They are written here rather than taken from a library
because each is a line or two over one string and the pipeline needs to say which rule a
row failed, in words.

Measures:
- symbol ratio: share of the text's non-space characters that are not letters or digits
  (Gopher counts only "#" and "..." per word; markup-heavy or broken text shows up as
  punctuation and symbols of every kind, so we count them all).
- repetition: share of the text's word 3-grams (case-folded) that repeat an earlier
  3-gram of the same text; Gopher's nearest measure is the share of characters inside
  duplicate 3-grams, with 0.18 as its limit.

`top` keeps the best share of rows by a judge's or reward model's score; it is carried here
as `top_share` and applied by the caller, which holds the scores.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, fields

REPETITION_N = 3


@dataclass(frozen=True, kw_only=True)
class QualityRules:
    """Limits a row's text must meet; None switches a rule off (all are off by default)."""

    min_chars: int | None = None
    max_chars: int | None = None
    min_words: int | None = None
    max_symbol_ratio: float | None = None
    max_repetition: float | None = None
    top_share: float | None = None

    def __post_init__(self) -> None:
        for name in ("min_chars", "max_chars", "min_words"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be 0 or more, got {value}")
        for name in ("max_symbol_ratio", "max_repetition"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.top_share is not None and not 0 < self.top_share <= 1:
            raise ValueError(f"top must be above 0 and at most 1, got {self.top_share}")
        if None not in (self.min_chars, self.max_chars) and self.min_chars > self.max_chars:
            raise ValueError(f"min_chars {self.min_chars} is above max_chars {self.max_chars}")

    def failure(self, text: str) -> str | None:
        """The first rule the text fails, in words; None when it passes them all."""
        length = len(text)
        if self.min_chars is not None and length < self.min_chars:
            return f"shorter than {self.min_chars} characters"
        if self.max_chars is not None and length > self.max_chars:
            return f"longer than {self.max_chars} characters"
        words = text.split()
        if self.min_words is not None and len(words) < self.min_words:
            return f"fewer than {self.min_words} words"
        if self.max_symbol_ratio is not None:
            ratio = symbol_ratio(text)
            if ratio > self.max_symbol_ratio:
                return f"symbol ratio {ratio:.2f} above {self.max_symbol_ratio:g}"
        if self.max_repetition is not None:
            repeated = repetition(words)
            if repeated > self.max_repetition:
                return f"repetition {repeated:.2f} above {self.max_repetition:g}"
        return None


def symbol_ratio(text: str) -> float:
    """Share of the non-space characters that are neither letters nor digits (0 if none)."""
    visible = "".join(text.split())
    if not visible:
        return 0.0
    return sum(not character.isalnum() for character in visible) / len(visible)


def repetition(words: list[str]) -> float:
    """Share of the word 3-grams that repeat an earlier one (0 under three words)."""
    folded = [word.casefold() for word in words]
    grams = list(zip(*(folded[start:] for start in range(REPETITION_N)), strict=False))
    if not grams:
        return 0.0
    return (len(grams) - len(Counter(grams))) / len(grams)


# Name in the config string -> (field, how to read the value, what the reader expects).
_SETTINGS = {
    "min_chars": ("min_chars", int, "a whole number"),
    "max_chars": ("max_chars", int, "a whole number"),
    "min_words": ("min_words", int, "a whole number"),
    "max_symbol_ratio": ("max_symbol_ratio", float, "a number between 0 and 1"),
    "max_repetition": ("max_repetition", float, "a number between 0 and 1"),
    "top": ("top_share", float, "a number above 0 and at most 1"),
}
assert {field for field, _, _ in _SETTINGS.values()} == {f.name for f in fields(QualityRules)}


def parse_quality_rules(spec: str) -> QualityRules:
    """Read "min_chars=10,max_chars=4000,max_repetition=0.3,top=0.5" into QualityRules.

    Raises ValueError with a message fit to show a user: unknown names (listing the known
    ones), values that are not numbers, names given twice, values out of range.
    """
    values: dict[str, int | float] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, separator, raw = (piece.strip() for piece in item.partition("="))
        if not separator:
            raise ValueError(f"Write each rule as name=value, got {item!r}")
        if name not in _SETTINGS:
            raise ValueError(f"Unknown quality rule {name!r}; known rules: {', '.join(_SETTINGS)}")
        field, read, expected = _SETTINGS[name]
        if field in values:
            raise ValueError(f"Quality rule {name!r} is given twice")
        try:
            values[field] = read(raw)
        except ValueError:
            raise ValueError(f"{name} must be {expected}, got {raw!r}") from None
    return QualityRules(**values)
