"""The messages an AI judge reads, and the reading of its verdicts. Plain Python.

The formats follow Constitutional AI (Bai et al. 2022, https://arxiv.org/abs/2212.08073):
the pairwise feedback is a multiple-choice question ("Consider the following conversation
... Options: (A) ... (B) ..."), optionally preceded by a step-by-step critique; the
supervised stage appends a critique request and then a revision request to the
conversation. Every builder returns chat messages (``[{"role", "content"}]``), so any
chat template or OpenAI-compatible endpoint can render them.
"""

from __future__ import annotations

import re

CHOICE_LABELS = ["A", "B"]


def _conversation_text(conversation: list[dict]) -> str:
    speakers = {"user": "Human", "assistant": "Assistant", "system": "System"}
    lines = []
    for message in conversation:
        speaker = speakers.get(message.get("role", ""), str(message.get("role", "")).title())
        lines.append(f"{speaker}: {str(message.get('content', '')).strip()}")
    return "\n\n".join(lines)


def _comparison_body(
    conversation: list[dict], response_a: str, response_b: str, principle: dict
) -> str:
    return (
        "Consider the following conversation between a human and an assistant:\n\n"
        f"{_conversation_text(conversation)}\n\n"
        f"{principle['comparison_question'].strip()}\n\n"
        "Options:\n"
        f"(A) {response_a.strip()}\n\n"
        f"(B) {response_b.strip()}"
    )


def comparison_messages(
    conversation: list[dict], response_a: str, response_b: str, principle: dict
) -> list[dict]:
    """The multiple-choice question: the conversation, the principle's comparison question,
    options (A) and (B), and "Answer with A or B". The judge's next token is the verdict."""
    body = _comparison_body(conversation, response_a, response_b, principle)
    return [{"role": "user", "content": f"{body}\n\nAnswer with A or B only."}]


def comparison_critique_messages(
    conversation: list[dict], response_a: str, response_b: str, principle: dict
) -> list[dict]:
    """Chain of thought, step one: the same question, asking for reasoning first."""
    body = _comparison_body(conversation, response_a, response_b, principle)
    return [
        {
            "role": "user",
            "content": (
                f"{body}\n\nBefore answering, compare the two options against the question "
                "above. Let's think step by step."
            ),
        }
    ]


def comparison_verdict_messages(critique_messages: list[dict], critique: str) -> list[dict]:
    """Chain of thought, step two: the reasoning as the judge's own turn, then the verdict
    question. The judge's next token is the verdict."""
    return [
        *critique_messages,
        {"role": "assistant", "content": f"Let's think step by step: {critique.strip()}"},
        {
            "role": "user",
            "content": "Therefore, which option is better? Answer with A or B only.",
        },
    ]


def critique_messages(conversation: list[dict], response: str, principle: dict) -> list[dict]:
    """The conversation with the assistant's response, then the principle's critique
    request. The judge's reply is the critique."""
    return [
        *conversation,
        {"role": "assistant", "content": response},
        {"role": "user", "content": f"Critique request: {principle['critique_request'].strip()}"},
    ]


def revision_messages(
    conversation: list[dict], response: str, principle: dict, critique: str
) -> list[dict]:
    """The critique exchange, then the principle's revision request. The judge's reply is
    the revised response (to be stored as it is, with no preamble)."""
    return [
        *critique_messages(conversation, response, principle),
        {"role": "assistant", "content": critique.strip()},
        {
            "role": "user",
            "content": (
                f"Revision request: {principle['revision_request'].strip()}\n\n"
                "Reply with the rewritten response only."
            ),
        },
    ]


def self_instruct_messages(seed_prompts: list[str], count: int) -> list[dict]:
    """Ask for ``count`` new user requests in the style of the seeds, one per line
    (Self-Instruct, Wang et al. 2022, https://arxiv.org/abs/2212.10560)."""
    examples = "\n".join(f"{i}. {text.strip()}" for i, text in enumerate(seed_prompts, start=1))
    return [
        {
            "role": "user",
            "content": (
                "Here are some requests that users sent to a chat assistant:\n\n"
                f"{examples}\n\n"
                f"Write {count} new, different requests a user might send, on other topics and "
                "of varied difficulty. Write one request per line, numbered, and nothing else."
            ),
        }
    ]


_LIST_MARKER = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s*")


def parse_prompt_list(text: str) -> list[str]:
    """The requests in a numbered or bulleted list, one per line, markers dropped."""
    items = []
    for line in text.splitlines():
        item = _LIST_MARKER.sub("", line).strip().strip('"').strip()
        if item:
            items.append(item)
    return items


# --- Reading a verdict ----------------------------------------------------------------------

_L = r"\(?\b((?-i:[AB]))\b\)?"  # a label, maybe in parentheses: A, (A)
_BETTER = (
    r"(?:the\s+)?(?:better|best|preferable|preferred|superior|safer|more|less|correct|right"
    r"|stronger)"
)
# Tier 2: the judge names its answer.
_NAMED = [
    re.compile(
        r"(?:final\s+answer|answer|verdict|choice|decision)\s*(?:is|would\s+be|:|-)\s*"
        r"(?:option|response)?\s*" + _L,
        re.IGNORECASE,
    ),
    re.compile(
        r"(?:the\s+)?better\s+(?:option|response|one|answer)\s+(?:is|would\s+be)\s*"
        r"(?:option|response)?\s*" + _L,
        re.IGNORECASE,
    ),
    re.compile(r"\bI\s+(?:choose|pick|prefer|select|go\s+with)\s+(?:option|response)?\s*" + _L),
]
# Tier 3: "Option A is better", "(B) is preferable", "A is more helpful".
_PRAISED = [
    re.compile(r"\b(?:option|response)\s*" + _L + r"\s+is\s+" + _BETTER, re.IGNORECASE),
    re.compile(r"(?:^|[\s(])\(?([AB])\)?\s+is\s+" + _BETTER),
]
# Tier 4: the whole answer starts with the label: "A", "(B)", "A.", "B: ...".
_LEADING = re.compile(r"^[\s*_\"'`]*\(?([AB])\)?(?:[\s*_\"'`]*$|[.,:;!)\]]|\s*\n)")
# Tier 5: the only labels mentioned with a marker: "(A)", "option B".
_MARKED = [re.compile(r"\(([AB])\)"), re.compile(r"\b(?:option|response)\s+((?-i:[AB]))\b", re.I)]
_UNDECIDED = re.compile(
    r"\b(?:neither|both\s+(?:are|options|responses)|equally|a\s+tie|cannot\s+decide)\b", re.I
)


def _single(labels: list[str]) -> str | None | bool:
    """The one label found, None if both (ambiguous), False if none."""
    found = {label.upper() for label in labels}
    if len(found) == 1:
        return found.pop()
    return None if found else False


def parse_verdict(text: str | None) -> str | None:
    """``"A"`` or ``"B"`` when the text names one option as the answer ("(A)", "Answer: B",
    "Option A is better", "B"), else None: empty text, garbage, both options, or neither."""
    if not text or not text.strip():
        return None
    text = text.strip()
    tiers = [
        [m.group(1) for pattern in _NAMED for m in pattern.finditer(text)],
        [m.group(1) for pattern in _PRAISED for m in pattern.finditer(text)],
    ]
    for labels in tiers:
        result = _single(labels)
        if result is not False:
            return result
    marked = [m.group(1) for pattern in _MARKED for m in pattern.finditer(text)]
    leading = _LEADING.match(text)
    if leading:
        # "(A) and (B)" names both options: no verdict.
        return _single([leading.group(1), *marked]) or None
    if _UNDECIDED.search(text):
        return None
    return _single(marked) or None
