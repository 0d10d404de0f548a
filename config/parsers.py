"""JSON that is safe to store: the API's parser and the checks import files share.

Three kinds of hostile JSON reached the database or blew the stack before this module:

- nesting thousands deep: ``json.loads`` recurses once per level, so 50,000 ``[`` raised
  RecursionError (a 500). The depth is measured on the raw text, with string contents left
  out, before ``json.loads`` runs, and bodies deeper than ``MAX_JSON_DEPTH`` are refused.
- a NUL character (``\\u0000``): PostgreSQL refuses it in text and jsonb, so a save failed
  half-way through a request (a 500 there, while SQLite stored it).
- a lone surrogate (``\\ud800``): not Unicode; it cannot be encoded as UTF-8, so it fails
  when stored or rendered.

``loads_checked`` is the one function that parses untrusted JSON text with those checks;
``SafeJSONParser`` is DRF's JSON parser on top of it (DEFAULT_PARSER_CLASSES), and it also
refuses a top-level array or scalar: every JSON endpoint of ours reads an object. A view
that takes another top-level value names ``AnyJSONParser`` in its ``parser_classes``.
"""

import json
import re

from django.conf import settings
from rest_framework import exceptions
from rest_framework.parsers import JSONParser

MAX_JSON_DEPTH = 64

# A JSON string (escapes included), and the characters no stored text may hold.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
_TO_PARENS = str.maketrans("[]{}", "()()")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})|[\x00\ud800-\udfff]")


class UnsafeJson(ValueError):
    """JSON text this product refuses; the message says why, fit to show the sender."""


def unstorable_character(text: str) -> str | None:
    """What is wrong with `text` if it holds a NUL or a lone surrogate, else None."""
    match = _UNSTORABLE.search(text)
    if match is None:
        return None
    if match.group() == "\x00":
        return "a NUL character (\\u0000), which cannot be stored"
    return f"a lone surrogate (\\u{ord(match.group()):04x}), which is not valid Unicode"


def _nested_deeper_than(text: str, limit: int) -> bool:
    """Whether the brackets of `text`, outside its strings, nest deeper than `limit`.

    Runs in C-speed passes (no recursion, no loop over characters): strings are cut out,
    then each pass removes the innermost bracket pairs, so pairs left after `limit` passes
    sit deeper than `limit`. Unclosed openers (invalid JSON, which json.loads would still
    recurse into) count as depth too."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_A_BRACKET.sub("", _JSON_STRING.sub("", text)).translate(_TO_PARENS)
    if "(" * (limit + 1) in brackets:  # the usual attack, found in one search
        return True
    for _ in range(limit):
        shorter = brackets.replace("()", "")
        if shorter == brackets:
            break
        brackets = shorter
    return "()" in brackets or brackets.count("(") > limit


class _Found(Exception):
    """A problem deep in a value; the path to it is gathered on the way back up."""

    def __init__(self, problem: str, *, in_key: bool = False):
        super().__init__(problem)
        self.problem, self.in_key, self.path = problem, in_key, []

    def message(self) -> str:
        parts = reversed(self.path)
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
        where = repr(where.removeprefix(".")) if where else "the top-level value"
        if self.in_key:
            where = f"a key of {where}" if self.path else "a top-level key"
        return f"{where} holds {self.problem}."


_TOO_DEEP = f"JSON nested too deeply (the limit is {MAX_JSON_DEPTH} levels)."


def _walk(value, depth: int) -> None:
    """Raise _Found for an unstorable character in a key or string, or for nesting
    beyond the limit (`depth`: the containers around `value`)."""
    if isinstance(value, str):
        if _UNSTORABLE.search(value):
            raise _Found(unstorable_character(value))
        return
    if isinstance(value, dict | list) and depth >= MAX_JSON_DEPTH:
        raise UnsafeJson(_TOO_DEEP)
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and _UNSTORABLE.search(key):
                raise _Found(unstorable_character(key), in_key=True)
            try:
                _walk(item, depth + 1)
            except _Found as found:
                found.path.append(key)
                raise
    elif isinstance(value, list):
        for index, item in enumerate(value):
            try:
                _walk(item, depth + 1)
            except _Found as found:
                found.path.append(index)
                raise


def _check_value(value) -> None:
    try:
        _walk(value, 0)
    except _Found as found:
        raise UnsafeJson(found.message()) from None


def _refuse_constant(name: str):
    raise UnsafeJson(f"{name} is not valid JSON.")


def check_json_value(value) -> None:
    """Raise UnsafeJson if an already-parsed value (e.g. a CSV row) holds an unstorable
    character or nests too deeply."""
    _check_value(value)


def loads_checked(text: str):
    """``json.loads`` for untrusted text: UnsafeJson (a ValueError) for nesting deeper than
    MAX_JSON_DEPTH, NaN/Infinity, a NUL or a lone surrogate anywhere in a key or string;
    json.JSONDecodeError (also a ValueError) for text that is not JSON."""
    if _nested_deeper_than(text, MAX_JSON_DEPTH):
        raise UnsafeJson(_TOO_DEEP)
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:  # the scan above should have caught it; never a 500
        raise UnsafeJson(_TOO_DEEP) from None
    # NUL and lone surrogates reach a parsed string only through \u escapes (JSON refuses
    # raw control characters; strict UTF-8 decoding refuses surrogates), so text without
    # such an escape needs no walk (nesting is already bounded by the scan).
    if _SUSPECT_ESCAPE.search(text):
        _check_value(value)
    return value


class BodyTooLarge(exceptions.APIException):
    status_code = 413
    default_code = "request_too_large"

    def __init__(self):
        limit_mb = settings.DATA_UPLOAD_MAX_MEMORY_SIZE // (1024 * 1024)
        super().__init__(f"The request body is larger than {limit_mb} MB.")


class SafeJSONParser(JSONParser):
    """DRF's JSON parser with ``loads_checked``'s refusals (400 naming the problem), a
    body-size limit (DATA_UPLOAD_MAX_MEMORY_SIZE, 413; Django checks it only for forms),
    and a top-level object required unless ``require_object`` is False."""

    require_object = True

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(raw) > limit:
            raise BodyTooLarge()
        try:
            text = raw.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            raise exceptions.ParseError(
                f"JSON parse error - the body is not valid {encoding} text."
            ) from None
        try:
            data = loads_checked(text)
        except ValueError as error:
            raise exceptions.ParseError(f"JSON parse error - {error}") from None
        if self.require_object and not isinstance(data, dict):
            raise exceptions.ParseError(
                f"JSON parse error - the body is {_json_kind(data)}. Send a JSON object ({{...}})."
            )
        return data


class AnyJSONParser(SafeJSONParser):
    """For a view whose body may be a top-level array or scalar."""

    require_object = False


def _json_kind(value) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
