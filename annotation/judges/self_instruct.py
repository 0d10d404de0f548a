"""Self-instruct: grow a project's prompt pool with a model (Wang et al. 2023,
https://arxiv.org/abs/2212.10560).

Each request shows the judge model a few example prompts (seeds, plus at most one prompt
this job already accepted, as the paper mixes human and machine-written examples) and asks
for ``per_request`` new, different ones, one per line and numbered. The answer is parsed
into a list, each item is normalised (numbering, bullets, labels and quotes dropped,
whitespace collapsed), and an item is kept only when it

- has at least ``MIN_WORDS`` words and at most ``MAX_PROMPT_CHARS`` characters and starts
  with a letter, digit or opening punctuation a request may start with, and
- is not a near-duplicate of any prompt in the project's labeling pool nor of any prompt
  accepted before it: ROUGE-L F1 on word tokens below ``max_similarity`` (0.7, as in the
  paper).

Accepted prompts become ``Prompt`` rows of the project with metadata
``{"source": "self_instruct", "judge", "judge_job", "seeds"}`` (``seeds``: the example
prompts shown, as prompt ids when they came from the project, else as texts), stored in
one transaction per request, so a later failure keeps them.

Options (``check_self_instruct_options``): ``count`` new prompts wanted (1-500),
``seeds`` (optional list of texts; default: up to ``SEED_SAMPLE`` prompts sampled from the
project, seeded by the job id), ``per_request`` (1-20, default 4), ``examples`` shown per
request (1-10, default 4), ``max_similarity`` (0-1, default 0.7), ``temperature`` (0-2,
default 0.7: sampling gives variety), ``max_tokens`` (16-2048, default 384).

The job stops when ``count`` prompts are accepted, the request budget is spent
(``BudgetExhausted`` from ``ctx.request``), the job is cancelled, ``MAX_FAILED_IN_A_ROW``
requests in a row fail, or ``MAX_IDLE_REQUESTS`` requests in a row add nothing.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from django.db import transaction

from annotation.judges.backends import BackendError
from annotation.judges.prompts import self_instruct_messages
from annotation.models import Prompt
from config.errors import ServiceError

MAX_COUNT = 500
DEFAULT_COUNT = 20
MAX_SEEDS = 200
MAX_SEED_CHARS = 4_000
SEED_SAMPLE = 50
MIN_WORDS = 3
MAX_PROMPT_CHARS = 1_000
MAX_FAILED_IN_A_ROW = 3
MAX_IDLE_REQUESTS = 10
SOURCE = "self_instruct"

_WORD = re.compile(r"\w+")
# "1.", "1)", "(1)", "#1", "1:", "1 -", "Q1:", "Prompt 1:", bullets "-", "*", "•".
_MARKER = re.compile(
    r"""^\s*(?:
        (?:\#|\(|\[)?\d{1,3}(?:[.):\]](?!\d)|\s+-\s)\s*  # 1.  1)  (1)  [1]  #1:  1 -
      | (?:prompt|request|instruction|task|question|example|item|q)\s*\#?\d{1,3}\s*[:.)]\s*
                                                          # Prompt 1:  Q1.  Task 2)
      | [-*\u2022]\s+                                     # - item  * item  • item
    )""",
    re.VERBOSE | re.IGNORECASE,
)
_LABEL = re.compile(r"^(?:new\s+)?(?:prompt|request|instruction|task|question)\s*:\s*", re.I)
_QUOTES = "\"'\u201c\u201d\u2018\u2019`"


# --- pure parts -----------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Word tokens for ROUGE-L: case-folded runs of letters and digits (Unicode-aware,
    unlike rouge_score's ASCII-only default tokenizer, so non-English prompts compare)."""
    return _WORD.findall(text.casefold())


def lcs_length(first: list[str], second: list[str]) -> int:
    """Length of the longest common subsequence of two token lists (O(n*m) time, O(m)
    memory)."""
    if len(first) < len(second):
        first, second = second, first
    if not second:
        return 0
    previous = [0] * (len(second) + 1)
    for token in first:
        current = [0]
        for j, other in enumerate(second, start=1):
            if token == other:
                current.append(previous[j - 1] + 1)
            else:
                current.append(max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(first: list[str], second: list[str]) -> float:
    """ROUGE-L F1 of two token lists (Lin 2004, beta = 1): with the LCS length L,
    P = L/len(first), R = L/len(second) and F1 = 2PR/(P+R) = 2L/(len(first)+len(second)).
    0.0 when either list is empty."""
    if not first or not second:
        return 0.0
    return 2 * lcs_length(first, second) / (len(first) + len(second))


class SimilarityIndex:
    """Prompts seen so far, to ask "is this a near-duplicate of any of them?" fast.

    ROUGE-L F1 is 2L/(m+n) and the LCS length L can be no more than the multiset overlap of
    the two token lists, so a pooled prompt whose overlap already keeps 2*overlap/(m+n) under
    the threshold cannot reach it and its LCS is never computed. Overlaps are counted
    through an inverted index (token -> {prompt: count}), so a candidate costs the postings
    of its own tokens plus one LCS per prompt that passes the bound."""

    def __init__(self, texts: Iterable[str] = ()):
        self._tokens: list[list[str]] = []
        self._postings: dict[str, dict[int, int]] = {}
        for text in texts:
            self.add(text)

    def __len__(self) -> int:
        return len(self._tokens)

    def add(self, text: str) -> None:
        tokens = words(text)
        index = len(self._tokens)
        self._tokens.append(tokens)
        for token, count in Counter(tokens).items():
            self._postings.setdefault(token, {})[index] = count

    def most_similar(self, text: str, *, at_least: float = 0.0) -> float:
        """The highest ROUGE-L F1 between ``text`` and a pooled prompt, looking only at
        prompts that could reach ``at_least``: the answer is exact when it is >= at_least,
        and some value below ``at_least`` otherwise. 0.0 for an empty pool or text."""
        tokens = words(text)
        if not tokens:
            return 0.0
        overlap: Counter[int] = Counter()
        for token, count in Counter(tokens).items():
            for index, pooled in self._postings.get(token, {}).items():
                overlap[index] += min(count, pooled)
        best = 0.0
        size = len(tokens)
        for index, shared in overlap.items():
            other = self._tokens[index]
            bound = 2 * shared / (size + len(other))
            if bound <= best or bound < at_least:
                continue
            best = max(best, rouge_l(tokens, other))
        return best

    def is_near_duplicate(self, text: str, *, max_similarity: float) -> bool:
        """True when some pooled prompt has ROUGE-L F1 >= max_similarity with ``text``."""
        return self.most_similar(text, at_least=max_similarity) >= max_similarity


def normalise_item(raw: str) -> str:
    """One listed prompt as plain text: list marker, "Prompt:"-style label, surrounding
    quotes and markdown emphasis dropped, whitespace collapsed."""
    text = " ".join(raw.split())
    text = _MARKER.sub("", text, count=1)
    text = text.replace("**", "").replace("__", "")
    text = _LABEL.sub("", text, count=1).strip()
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


def parse_prompt_list(answer: str) -> list[str]:
    """The prompts listed in a model's answer, in order, normalised (empty ones dropped).

    When some lines carry a list marker ("1.", "2)", "- "...), the items are those lines; an
    unmarked line right after an item (no blank line between) continues it, and other
    unmarked lines (a preamble, a closing remark) are dropped. When no line is marked,
    every non-blank line is an item, except a line ending in ":" (a heading)."""
    lines = answer.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    marked = [bool(_MARKER.match(line)) and bool(line.strip()) for line in lines]
    items: list[str] = []
    if any(marked):
        current: list[str] | None = None
        for line, is_item in zip(lines, marked, strict=True):
            if is_item:
                if current is not None:
                    items.append(" ".join(current))
                current = [line]
            elif not line.strip():
                if current is not None:
                    items.append(" ".join(current))
                current = None
            elif current is not None:
                current.append(line.strip())
        if current is not None:
            items.append(" ".join(current))
    else:
        items = [line for line in lines if line.strip() and not line.strip().endswith(":")]
    normalised = (normalise_item(item) for item in items)
    return [item for item in normalised if item]


def rejection_reason(text: str) -> str | None:
    """Why a parsed prompt cannot join the pool on its own (too short, too long, starts
    with something no request starts with), or None when it can."""
    if len(words(text)) < MIN_WORDS:
        return "too short"
    if len(text) > MAX_PROMPT_CHARS:
        return "too long"
    if not (text[0].isalnum() or text[0] in "¿¡("):
        return "does not start with a word"
    return None


@dataclass
class Screening:
    accepted: list[str] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)


def screen_prompts(
    candidates: Iterable[str], *, index: SimilarityIndex, max_similarity: float, limit: int
) -> Screening:
    """Keep up to ``limit`` candidates that pass ``rejection_reason`` and are no
    near-duplicate of the index nor of each other; each accepted one joins ``index``.
    ``dropped`` counts the others by reason."""
    result = Screening()
    for text in candidates:
        if len(result.accepted) >= limit:
            result.dropped["over the count"] += 1
            continue
        reason = rejection_reason(text)
        if reason is None and index.is_near_duplicate(text, max_similarity=max_similarity):
            reason = "near-duplicate"
        if reason is not None:
            result.dropped[reason] += 1
            continue
        result.accepted.append(text)
        index.add(text)
    return result


# --- options --------------------------------------------------------------------------


def _int_option(options: Mapping, key: str, default: int, low: int, high: int) -> int:
    raw = options.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise ServiceError(f"{key} must be a whole number from {low} to {high}.")
    return raw


def _float_option(options: Mapping, key: str, default: float, low: float, high: float) -> float:
    raw = options.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not low <= raw <= high:
        raise ServiceError(f"{key} must be a number from {low:g} to {high:g}.")
    return float(raw)


def check_self_instruct_options(options) -> dict:
    """The job's options with defaults filled in, or a ServiceError naming the bad one."""
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ServiceError("Options must be an object.")
    known = {
        "count",
        "seeds",
        "per_request",
        "examples",
        "max_similarity",
        "temperature",
        "max_tokens",
    }
    unknown = sorted(set(options) - known)
    if unknown:
        raise ServiceError(
            f"Unknown option {unknown[0]!r} for self-instruct; use {', '.join(sorted(known))}."
        )
    checked = {
        "count": _int_option(options, "count", DEFAULT_COUNT, 1, MAX_COUNT),
        "per_request": _int_option(options, "per_request", 4, 1, 20),
        "examples": _int_option(options, "examples", 4, 1, 10),
        "max_similarity": _float_option(options, "max_similarity", 0.7, 0.0, 1.0),
        "temperature": _float_option(options, "temperature", 0.7, 0.0, 2.0),
        "max_tokens": _int_option(options, "max_tokens", 384, 16, 2048),
        "seeds": None,
    }
    if checked["max_similarity"] <= 0:
        raise ServiceError("max_similarity must be above 0 (0 would drop every prompt).")
    seeds = options.get("seeds")
    if seeds is not None:
        if not isinstance(seeds, list) or not seeds or len(seeds) > MAX_SEEDS:
            raise ServiceError(f"seeds must be a list of 1 to {MAX_SEEDS} prompt texts.")
        cleaned = []
        for number, seed in enumerate(seeds, start=1):
            if not isinstance(seed, str) or not seed.strip():
                raise ServiceError(f"Seed {number} must be a non-empty text.")
            if len(seed) > MAX_SEED_CHARS:
                raise ServiceError(f"Seed {number} is longer than {MAX_SEED_CHARS} characters.")
            cleaned.append(seed.strip())
        checked["seeds"] = cleaned
    return checked


# --- the job --------------------------------------------------------------------------


@dataclass
class _Seed:
    text: str
    prompt_id: int | None = None

    @property
    def reference(self) -> int | str:
        return self.prompt_id if self.prompt_id is not None else self.text


def _seeds(options: dict, project, rng: random.Random) -> list[_Seed]:
    if options["seeds"] is not None:
        return [_Seed(text) for text in options["seeds"]]
    ids = list(project.prompts.labeling().alive().order_by("id").values_list("id", flat=True))
    chosen = sorted(rng.sample(ids, min(SEED_SAMPLE, len(ids))))
    texts = dict(Prompt.objects.filter(pk__in=chosen).values_list("id", "text"))
    return [_Seed(texts[pk], pk) for pk in chosen]


def _examples(seeds: list[_Seed], accepted: list[_Seed], count: int, rng) -> list[_Seed]:
    if accepted and count >= 3 and len(seeds) >= count - 1:
        return [*rng.sample(seeds, count - 1), rng.choice(accepted)]
    return rng.sample(seeds, min(count, len(seeds)))


def _store(ctx, texts: list[str], examples: list[_Seed]) -> list[Prompt]:
    metadata = {
        "source": SOURCE,
        "judge": ctx.judge.name,
        "judge_job": ctx.job.pk,
        "seeds": [seed.reference for seed in examples],
    }
    with transaction.atomic():
        return [
            Prompt.objects.create(project=ctx.job.project, text=text, metadata=dict(metadata))
            for text in texts
        ]


def _summary(dropped: Counter) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in sorted(dropped.items())) or "none"


def run_self_instruct(ctx) -> None:
    """Add up to ``count`` new prompts to the job's project (see the module docstring).
    Progress: total = count, done = prompts accepted. A failed request is logged, not
    counted as a failed item (the job still reaches its count with the next requests)."""
    options = check_self_instruct_options(ctx.job.options)
    project = ctx.job.project
    rng = random.Random(f"self_instruct:{ctx.job.pk}")
    seeds = _seeds(options, project, rng)
    if not seeds:
        raise ServiceError(
            "Self-instruct needs seed prompts: the project has none; import some or give seeds."
        )
    index = SimilarityIndex(project.prompts.labeling().values_list("text", flat=True).iterator())
    for seed in seeds:
        if seed.prompt_id is None:  # given as text: a copy of it is no new prompt either
            index.add(seed.text)
    count = options["count"]
    ctx.progress(done=0, total=count, failed=0)
    ctx.log(
        f"Self-instruct: {count} new prompts wanted, {len(seeds)} seeds, "
        f"{len(index)} prompts in the pool, max ROUGE-L {options['max_similarity']:g}."
    )
    accepted: list[_Seed] = []
    failed_in_a_row = idle = requests = 0
    while len(accepted) < count:
        if ctx.cancelled():
            ctx.log("Cancelled.")
            return
        examples = _examples(seeds, accepted, options["examples"], rng)
        room = count - len(accepted)
        ctx.request()
        requests += 1
        try:
            # Seeds on one line each: the answer is read as one prompt per line.
            shown = [" ".join(seed.text.split()) for seed in examples]
            answer = ctx.backend.complete(
                self_instruct_messages(shown, options["per_request"]),
                max_tokens=options["max_tokens"],
                temperature=options["temperature"],
            )
        except BackendError as error:
            failed_in_a_row += 1
            ctx.log(f"Request {requests} failed: {error.message}")
            if failed_in_a_row >= MAX_FAILED_IN_A_ROW:
                raise
            continue
        failed_in_a_row = 0
        parsed = parse_prompt_list(answer)
        screening = screen_prompts(
            parsed, index=index, max_similarity=options["max_similarity"], limit=room
        )
        if screening.accepted:
            rows = _store(ctx, screening.accepted, examples)
            accepted.extend(_Seed(row.text, row.pk) for row in rows)
            idle = 0
        else:
            idle += 1
        ctx.progress(done=len(accepted))
        ctx.log(
            f"Request {requests}: {len(parsed)} listed, {len(screening.accepted)} added "
            f"(dropped: {_summary(screening.dropped)})."
        )
        if idle >= MAX_IDLE_REQUESTS:
            raise ServiceError(
                f"Stopped: {MAX_IDLE_REQUESTS} requests in a row gave no new prompt "
                f"({len(accepted)} of {count} added)."
            )
    ctx.log(f"Done: {len(accepted)} new prompts in {requests} requests.")
