"""Personal data in a row's text: find it, replace it with typed placeholders, or flag the row.

`find_pii(text)` returns the spans of e-mail addresses, phone numbers, national identity
numbers, payment card numbers, IBANs and IP addresses; `scrub(text)` replaces each span with
its placeholder (`PLACEHOLDERS`); `has_pii(text)` is what the pipeline's "drop" mode asks.

How a span is found: a pattern proposes a candidate by its shape, then a library that knows
the number's rules validates it, so that things that only look alike (prices, dates, years,
counts, ISBNs, version strings, times) survive.

- Phone numbers: `phonenumbers` (the port of Google's libphonenumber) at POSSIBLE leniency,
  but only for numbers written internationally and grouped, "+45 12 34 56 78". An ungrouped
  "+4512345678" (also a signed count) and "0045 70 12 34 56" (we rewrite a leading "00" to
  "+" at the same offsets; "00" also opens zero runs in account numbers) must be VALID, not
  merely possible, and "00" must not follow a digit group.
  A number in national format ("(415) 555-0132", "020 7946 0958") is found only when a
  phone word ("phone", "tel", "call", "mobile", ...) stands in the 40 characters before it,
  is not shaped like a date, and one of `NATIONAL_PHONE_REGIONS` calls it valid and grouped
  as that region groups its numbers (STRICT_GROUPING): without a country, ten digits are as
  likely a count or an id.
- Payment cards: 13 to 19 digits, optionally grouped by one kind of separator (space or
  hyphen), with an issuer prefix and a length that issuer uses (Visa 4 and 13/16/19 digits,
  Mastercard 51-55/2221-2720 and 16, Amex 34/37 and 15, ...: `_CARD_BRANDS`, our own table
  as python-stdnum has no card module), passing `stdnum.luhn`. Luhn alone passes one random
  number in ten; the prefixes keep ISBN-13s (978/979) and millisecond timestamps (1...) out.
- IBANs: `stdnum.iban` (country length and format, mod-97 check digits).
- National identity numbers, validated by python-stdnum: dk.cpr (its date check),
  us.ssn (no 000/666/9xx areas), se.personnummer, no.fodselsnummer, fi.hetu, nl.bsn, es.dni,
  it.codicefiscale, fr.nir, de.idnr, be.nn, pl.pesel. The rule against look-alikes: a number
  written in its national format with separators or letters (070761-4285, 536-90-4399,
  131052-308T, RCCMNL83S18D969H, 85.07.30-033.28) counts by itself; a bare digit run
  (0707614285, 536904399, 111222333) counts only when the number's own word ("CPR", "SSN",
  "BSN", "personnummer", "PESEL", ...) stands in the 40 characters before it, because weak
  checks pass too many counts (nl.bsn's 11-proof passes one random 9-digit number in 11).
  es.dni's check letter (1 in 23) is weak too, so DNI also needs its word.
- UK National Insurance numbers: python-stdnum has no module for them, so we check HMRC's
  published rules here: two prefix letters (not D, F, I, Q, U, V; the second not O; not
  BG, GB, KN, NK, NT, TN, ZZ), six digits, a suffix A-D. "QQ 12 34 56 C", HMRC's own
  example, is therefore not a NINO.
- IP addresses: the standard library's `ipaddress`. A dotted quad (127.0.0.1) is an IPv4
  address unless "v", "version", "release", ... stands right before it or a fifth part
  follows (v2.10.1.4 and 1.2.3.4.5 are versions); three parts (1.2.3) are never an address.
  An IPv6 candidate must contain a decimal digit, so "dead::beef" in code survives, and
  times (12:30:45) are not valid IPv6.
- E-mail addresses: a pattern of our own (local@domain.tld); no library validates an
  address in running text better than the pattern that finds it.

Names of people are NOT detected: that needs a named-entity model, and no local NER model
ships with this project. A row with a name and nothing else passes unchanged.

Speed: a text with no "@" and no digit is answered by one compiled regex search. Otherwise
each finder first asks a cheap question (is there a "+" or "00", a phone word, three dots,
"::"?) and the card, IBAN and national-id patterns search only inside runs of digits,
capitals and separators that hold six digits or more, so phonenumbers and stdnum are called
only on candidates.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import phonenumbers
from phonenumbers import Leniency
from stdnum import iban, luhn
from stdnum.be import nn as be_nn
from stdnum.de import idnr as de_idnr
from stdnum.dk import cpr as dk_cpr
from stdnum.es import dni as es_dni
from stdnum.fi import hetu as fi_hetu
from stdnum.fr import nir as fr_nir
from stdnum.it import codicefiscale as it_codicefiscale
from stdnum.nl import bsn as nl_bsn
from stdnum.no import fodselsnummer as no_fodselsnummer
from stdnum.pl import pesel as pl_pesel
from stdnum.se import personnummer as se_personnummer
from stdnum.us import ssn as us_ssn

PLACEHOLDERS = {
    "email": "<EMAIL>",
    "phone": "<PHONE>",
    "national_id": "<NATIONAL_ID>",
    "card": "<CARD>",
    "iban": "<IBAN>",
    "ip": "<IP>",
}

# Where two candidates overlap, the longer wins; at equal length, the earlier kind here.
_PRIORITY = {
    kind: rank for rank, kind in enumerate(("email", "iban", "card", "national_id", "phone", "ip"))
}

NATIONAL_PHONE_REGIONS = ("US", "GB", "DK", "DE", "FR", "SE", "NO", "NL")

# Not a number's neighbour: a candidate must not continue a word, a signed value or a
# longer dotted/slashed number on either side. The right side is a lookahead; the left side is
# checked in Python (`_starts_clear`), as a leading lookbehind makes each search try it at
# every position and costs several times the search itself.
_AFTER = r"(?![\w\-]|[.,/:]\d)"
_KEYWORD_WINDOW = 40


@dataclass(frozen=True)
class PiiSpan:
    kind: str
    start: int
    end: int
    text: str


_ANY_DIGIT = re.compile(r"\d")
# Every card, IBAN and national id lies in a run of at least nine digits, capitals, spaces,
# dots, pluses and hyphens that holds six digits or more; their patterns search only there.
_NUMBER_RUN = re.compile(r"[\dA-Z][\dA-Z.+\- ]{7,}[\dA-Z]")
_MIN_RUN_DIGITS = 6


def find_pii(text: str) -> list[PiiSpan]:
    """Spans of personal data in `text`, sorted by start and not overlapping."""
    if "@" not in text and not _ANY_DIGIT.search(text):
        return []
    runs = _number_runs(text)
    candidates = [
        *_emails(text),
        *_ibans(text, runs),
        *_cards(text, runs),
        *_national_ids(text, runs),
        *_phones(text),
        *_ips(text),
    ]
    return _without_overlaps(candidates)


def _number_runs(text: str) -> list[tuple[int, int]]:
    return [
        run.span()
        for run in _NUMBER_RUN.finditer(text)
        if sum(map(str.isdigit, run.group())) >= _MIN_RUN_DIGITS
    ]


def _search_runs(
    pattern: re.Pattern[str], text: str, runs: list[tuple[int, int]]
) -> Iterator[re.Match[str]]:
    for run_start, run_end in runs:
        yield from pattern.finditer(text, run_start, run_end)


def scrub(text: str) -> tuple[str, list[str]]:
    """`text` with each span replaced by its kind's placeholder, and the kinds replaced."""
    spans = find_pii(text)
    parts, cursor = [], 0
    for span in spans:
        parts += [text[cursor : span.start], PLACEHOLDERS[span.kind]]
        cursor = span.end
    parts.append(text[cursor:])
    return "".join(parts), [span.kind for span in spans]


def has_pii(text: str) -> bool:
    return bool(find_pii(text))


def _without_overlaps(candidates: list[PiiSpan]) -> list[PiiSpan]:
    kept: list[PiiSpan] = []
    for span in sorted(candidates, key=lambda s: (s.start - s.end, _PRIORITY[s.kind], s.start)):
        if all(span.end <= other.start or other.end <= span.start for other in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: s.start)


def _span(kind: str, text: str, start: int, end: int) -> PiiSpan:
    return PiiSpan(kind=kind, start=start, end=end, text=text[start:end])


def _starts_clear(text: str, start: int) -> bool:
    """No letter, digit, sign or digit-and-dot stands right before `start`."""
    if start == 0:
        return True
    before = text[start - 1]
    if before.isalnum() or before in "_+-":
        return False
    return not (before in ".,/:" and start >= 2 and text[start - 2].isdigit())


# --- e-mail -----------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@(?:[\w-]+\.)+[\w-]{2,}(?![\w-]|\.\w)")


def _emails(text: str) -> Iterator[PiiSpan]:
    if "@" in text:
        for match in _EMAIL.finditer(text):
            yield _span("email", text, *match.span())


# --- IBAN -------------------------------------------------------------------------------

_IBAN = re.compile(r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?!\w)")


def _ibans(text: str, runs: list[tuple[int, int]]) -> Iterator[PiiSpan]:
    for match in _search_runs(_IBAN, text, runs):
        if not _starts_clear(text, match.start()):
            continue
        end = _longest_valid_prefix_end(match.group(), iban.is_valid)
        if end:
            yield _span("iban", text, match.start(), match.start() + end)


def _longest_valid_prefix_end(candidate: str, is_valid: Callable[[str], bool]) -> int:
    """The end of the longest space-delimited prefix of `candidate` that is valid, or 0.

    The IBAN pattern may run on into an upper-case word after the number ("... 00 AND").
    """
    ends = [m.start() for m in re.finditer(" ", candidate)] + [len(candidate)]
    return next((end for end in reversed(ends) if is_valid(candidate[:end])), 0)


# --- payment cards ----------------------------------------------------------------------

_CARD = re.compile(r"[2-6](?:[ \-]?\d){12,18}" + _AFTER)
# Issuer number prefixes and the lengths each issues (Visa, Mastercard, Amex, Diners, JCB,
# Discover and UnionPay): a Luhn-valid run of another prefix or length is not a card.
_CARD_BRANDS = (
    (re.compile(r"4"), {13, 16, 19}),
    (re.compile(r"5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)"), {16}),
    (re.compile(r"3[47]"), {15}),
    (re.compile(r"3(?:0[0-5]|[68])"), {14, 16}),
    (re.compile(r"35"), {16, 17, 18, 19}),
    (re.compile(r"6(?:011|4[4-9]|5|2)"), {16, 17, 18, 19}),
)


def _cards(text: str, runs: list[tuple[int, int]]) -> Iterator[PiiSpan]:
    for match in _search_runs(_CARD, text, runs):
        candidate = match.group()
        separators = set(candidate) - set("0123456789")
        digits = re.sub(r"\D", "", candidate)
        if _starts_clear(text, match.start()) and len(separators) <= 1 and _is_card(digits):
            yield _span("card", text, *match.span())


def _is_card(digits: str) -> bool:
    issued = any(
        prefix.match(digits) and len(digits) in lengths for prefix, lengths in _CARD_BRANDS
    )
    return issued and luhn.is_valid(digits)


# --- national identity numbers ----------------------------------------------------------


@dataclass(frozen=True)
class _IdRule:
    shape: re.Pattern[str]
    validators: tuple[Callable[[str], bool], ...]
    keywords: re.Pattern[str] | None  # None: the shape alone is distinctive enough


def _rule(shape: str, *modules, keywords: str | None = None) -> _IdRule:
    return _IdRule(
        shape=re.compile("(?:" + shape + ")" + _AFTER),
        validators=tuple(module.is_valid for module in modules),
        keywords=re.compile(keywords) if keywords else None,
    )


_NINO_PREFIX_BANNED = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}


def _is_valid_nino(candidate: str) -> bool:
    number = candidate.replace(" ", "")
    prefix = number[:2]
    return (
        prefix[0] not in "DFIQUV"
        and prefix[1] not in "DFIOQUV"
        and prefix not in _NINO_PREFIX_BANNED
        and number[2:8].isdigit()
        and number[8] in "ABCD"
    )


class _Nino:
    is_valid = staticmethod(_is_valid_nino)


# National formats: the separators or letters make them distinctive.
_ID_RULES_ALONE = (
    _rule(r"\d{6}[-+]\d{4}", dk_cpr, se_personnummer),
    _rule(r"\d{8}-\d{4}", se_personnummer),
    _rule(r"\d{3}-\d{2}-\d{4}", us_ssn),
    _rule(r"[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]", _Nino),
    _rule(r"\d{6} \d{5}", no_fodselsnummer),
    _rule(r"\d{6}[-+A-FU-Y]\d{3}[0-9A-Y]", fi_hetu),
    _rule(r"[A-Z]{6}\d{2}[A-Z]\d{2}[A-Z]\d{3}[A-Z]", it_codicefiscale),
    _rule(r"[12] \d{2} \d{2} (?:\d{2}|2[AB]) \d{3} \d{3} \d{2}", fr_nir),
    _rule(r"\d{2}\.\d{2}\.\d{2}-\d{3}\.\d{2}", be_nn),
)
# Bare digit runs (and weak checks): only after the number's own word (in lower case).
_ID_RULES_KEYED = (
    _rule(r"\d{10}|\d{6} \d{4}", dk_cpr, keywords=r"\bcpr"),
    _rule(r"\d{9}|\d{3} \d{2} \d{4}", us_ssn, keywords=r"\bssn|social security"),
    _rule(r"\d{10}|\d{12}", se_personnummer, keywords=r"personnummer|personnr"),
    _rule(r"\d{11}", no_fodselsnummer, keywords=r"f[øo]dselsnummer|personnummer"),
    _rule(r"\d{9}|\d{4}\.\d{2}\.\d{3}", nl_bsn, keywords=r"\bbsn|burgerservicenummer|sofinummer"),
    _rule(r"\d{8}-?[A-Z]", es_dni, keywords=r"\bdni|\bnif\b|documento nacional"),
    _rule(
        r"[12]\d{14}|[12]\d{4}2[AB]\d{8}", fr_nir, keywords=r"\bnir\b|insee|s[ée]curit[ée] sociale"
    ),
    _rule(
        r"\d{11}|\d{2} \d{3} \d{3} \d{3}",
        de_idnr,
        keywords=r"steuer-?id|identifikationsnummer|\bidnr",
    ),
    _rule(
        r"\d{11}",
        be_nn,
        keywords=r"rijksregister|registre national|national number|num[ée]ro national",
    ),
    _rule(r"\d{11}", pl_pesel, keywords=r"pesel"),
)


# Substrings of the keywords above: a text holding none of them skips the keyed search.
_KEYWORD_STEMS = (
    "cpr", "ssn", "social security", "personn", "dselsnummer", "bsn", "burgerservice",
    "sofinummer", "dni", "nif", "documento nacional", "nir", "insee", "sociale", "steuer",
    "identifikationsnummer", "idnr", "rijksregister", "registre national", "national number",
    "ro national", "pesel",
)  # fmt: skip


def _national_ids(text: str, runs: list[tuple[int, int]]) -> Iterator[PiiSpan]:
    if not runs:
        return
    lowered = text.lower()
    keyed = any(stem in lowered for stem in _KEYWORD_STEMS)
    for rule in _ID_RULES_ALONE + (_ID_RULES_KEYED if keyed else ()):
        for match in _search_runs(rule.shape, text, runs):
            if _is_national_id(rule, text, match.start(), match.group()):
                yield _span("national_id", text, *match.span())


def _is_national_id(rule: _IdRule, text: str, start: int, candidate: str) -> bool:
    if not _starts_clear(text, start):
        return False
    if rule.keywords is not None:
        context = text[max(0, start - _KEYWORD_WINDOW) : start].lower()
        if not rule.keywords.search(context):
            return False
    return any(is_valid(candidate) for is_valid in rule.validators)


# --- phone numbers ----------------------------------------------------------------------

_INTERNATIONAL_PHONE = re.compile(r"(?:\+|(?<!\d[ \-.])00)\d[\d \t().\-/]{5,}\d")
_NATIONAL_PHONE = re.compile(r"\(?\d[\d \-.()]{5,}\d")
# Some regions' eight-digit numbers are also dates (2024-01-15 is a valid Danish number).
_DATE = re.compile(r"\d{4}([-./ ])\d{1,2}\1\d{1,2}|\d{1,2}([-./ ])\d{1,2}\2\d{4}")
_PHONE_WORD = re.compile(r"\b(?:phone|tel|telephone|call|mobile|mob|cell|fax|ring|telefon|tlf)\b")
# Substrings of the phone words: a text holding none of them skips the national search.
_PHONE_WORD_STEMS = ("phone", "tel", "call", "mob", "cell", "fax", "ring", "tlf")


def _phones(text: str) -> Iterator[PiiSpan]:
    if "+" in text or "00" in text:
        for match in _INTERNATIONAL_PHONE.finditer(text):
            start = match.start()
            if start == 0 or not (text[start - 1].isalnum() or text[start - 1] in "_+"):
                yield from _international_phones(text, start, match.group())
    lowered = text.lower()
    if not any(stem in lowered for stem in _PHONE_WORD_STEMS):
        return
    for match in _NATIONAL_PHONE.finditer(text):
        context = text[max(0, match.start() - _KEYWORD_WINDOW) : match.start()].lower()
        if (
            _starts_clear(text, match.start())
            and _PHONE_WORD.search(context)
            and not _DATE.fullmatch(match.group())
        ):
            yield from _national_phone(text, match.start(), match.group())


def _international_phones(text: str, offset: int, candidate: str) -> Iterator[PiiSpan]:
    # "00" also opens runs of zeros in ids and account numbers, and "+1500000" is as often a
    # signed count as a number: those need a VALID number, a grouped "+" number a POSSIBLE one.
    if candidate.startswith("00"):
        rewritten, leniency = " +" + candidate[2:], Leniency.VALID
    elif candidate[1:].isdigit():
        rewritten, leniency = candidate, Leniency.VALID
    else:
        rewritten, leniency = candidate, Leniency.POSSIBLE
    for found in phonenumbers.PhoneNumberMatcher(rewritten, None, leniency=leniency):
        start = offset + found.start
        if candidate.startswith("00") and found.start == 1:
            start = offset  # the span covers the "00" that stood for "+"
        yield _span("phone", text, start, offset + found.end)


def _national_phone(text: str, offset: int, candidate: str) -> Iterator[PiiSpan]:
    """The number in `candidate`, if a region in NATIONAL_PHONE_REGIONS calls it valid and
    grouped its way."""
    for region in NATIONAL_PHONE_REGIONS:
        matches = phonenumbers.PhoneNumberMatcher(candidate, region, Leniency.STRICT_GROUPING)
        found = next(iter(matches), None)
        if found is not None:
            yield _span("phone", text, offset + found.start, offset + found.end)
            return


# --- IP addresses -----------------------------------------------------------------------

_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w]|\.\d)")
_VERSION_WORD = re.compile(r"(?:\bv|\bver\.?|version|release|build|rev\.?)\s*$", re.IGNORECASE)
_IPV6 = re.compile(r"(?<![\w:])[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:[0-9A-Fa-f:]*(?![\w:])")


def _ips(text: str) -> Iterator[PiiSpan]:
    if text.count(".") >= 3:
        for match in _IPV4.finditer(text):
            before = text[max(0, match.start() - 12) : match.start()]
            if _is_ip(match.group()) and not _VERSION_WORD.search(before):
                yield _span("ip", text, *match.span())
    if "::" in text or text.count(":") >= 7:
        for match in _IPV6.finditer(text):
            if re.search(r"\d", match.group()) and _is_ip(match.group()):
                yield _span("ip", text, *match.span())


def _is_ip(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True
