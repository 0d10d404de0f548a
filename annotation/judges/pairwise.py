"""Pairwise AI feedback (RLAIF): which of two responses is better under one principle.

The question is asked twice, once with X as option (A) and once with Y as (A), so a judge
that prefers whatever comes first cancels out (Constitutional AI, Bai et al. 2022, 4.1;
https://arxiv.org/abs/2212.08073). Each order gives P(X better): from the next-token
probabilities of "A" and "B" when the backend has them, else from the parsed verdict (1 or
0, 0.5 when it names neither). The soft label is their mean. With a chain-of-thought
critique first, each order's probability is clamped to [0.4, 0.6]: reasoning makes the
verdict near certain, and the paper found clamped labels better calibrated.
Plain Python: the job runner (annotation/judges/jobs.py) stores what this returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from annotation.judges import prompts
from annotation.judges.backends import JudgeBackend

COT_CLAMP = (0.4, 0.6)
# A soft label this close to 0.5 is a tie.
TIE_EPSILON = 1e-6
DEFAULT_UNSURE_THRESHOLD = 0.1
VERDICT_MAX_TOKENS = 16
CRITIQUE_MAX_TOKENS = 192


class PairFailed(Exception):
    """The judge gave no usable verdict for the pair (both orders unparseable)."""

    def __init__(self, message: str, orders: list[dict]):
        super().__init__(message)
        self.message = message
        self.orders = orders


@dataclass
class OrderResult:
    """One asking of the question. ``first`` is ``"x"`` when X was shown as (A)."""

    first: str
    method: str  # "logprobs" | "verdict"
    probabilities: dict[str, float] | None  # the backend's P("A"), P("B"), renormalised
    verdict: str | None  # "A" | "B" | None (unparseable)
    verdict_text: str | None  # what the judge wrote (verdict method only)
    critique: str  # chain of thought, "" without
    p_x_raw: float  # P(X better) from this order before the clamp
    p_x: float  # after the clamp (equal without chain of thought)

    @property
    def winner(self) -> str | None:
        """ "x", "y", or None for no preference."""
        if self.p_x > 0.5:
            return "x"
        if self.p_x < 0.5:
            return "y"
        return None


@dataclass
class PairResult:
    principle: str
    orders: list[OrderResult]
    soft_label: float  # P(X better), position bias cancelled
    agree: bool  # both orders name the same winner
    method: str  # "logprobs" when both orders read probabilities, else "verdict"
    choice: str  # "a" (X), "b" (Y) or "tie"
    unsure: bool
    critique: str = field(default="")

    def details(self) -> dict:
        return {
            "orders": [asdict(order) for order in self.orders],
            "agree": self.agree,
            "method": self.method,
            "unsure": self.unsure,
        }


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def judge_order(
    backend: JudgeBackend,
    *,
    conversation: list[dict],
    first: str,
    response_x: str,
    response_y: str,
    principle: dict,
    chain_of_thought: bool,
    before_request: Callable[[], None],
    critique_max_tokens: int = CRITIQUE_MAX_TOKENS,
) -> OrderResult:
    """Ask once, X as (A) when ``first == "x"``, else Y as (A)."""
    option_a, option_b = (response_x, response_y) if first == "x" else (response_y, response_x)
    critique = ""
    if chain_of_thought:
        critique_messages = prompts.comparison_critique_messages(
            conversation, option_a, option_b, principle
        )
        before_request()
        critique = backend.complete(critique_messages, max_tokens=critique_max_tokens).strip()
        messages = prompts.comparison_verdict_messages(critique_messages, critique)
    else:
        messages = prompts.comparison_messages(conversation, option_a, option_b, principle)

    probabilities = None
    if getattr(backend, "logprobs_supported", None) is not False:
        before_request()
        probabilities = backend.choice_probabilities(messages, prompts.CHOICE_LABELS)
    verdict_text = None
    if probabilities is not None:
        method = "logprobs"
        p_a = probabilities["A"]
        verdict = "A" if p_a > 0.5 else "B" if p_a < 0.5 else None
    else:
        method = "verdict"
        before_request()
        verdict_text = backend.complete(messages, max_tokens=VERDICT_MAX_TOKENS)
        verdict = prompts.parse_verdict(verdict_text)
        p_a = {"A": 1.0, "B": 0.0}.get(verdict, 0.5)
    p_x_raw = p_a if first == "x" else 1.0 - p_a
    p_x = _clamp(p_x_raw, COT_CLAMP) if chain_of_thought else p_x_raw
    return OrderResult(
        first=first,
        method=method,
        probabilities=probabilities,
        verdict=verdict,
        verdict_text=verdict_text,
        critique=critique,
        p_x_raw=p_x_raw,
        p_x=p_x,
    )


def judge_pair(
    backend: JudgeBackend,
    *,
    conversation: list[dict],
    response_x: str,
    response_y: str,
    principle: dict,
    chain_of_thought: bool = False,
    before_request: Callable[[], None] = lambda: None,
    unsure_threshold: float = DEFAULT_UNSURE_THRESHOLD,
    critique_max_tokens: int = CRITIQUE_MAX_TOKENS,
) -> PairResult:
    """Judge X against Y in both orders; ``soft_label`` is P(X better). ``before_request`` is
    called before every model request (the job counts its budget there). PairFailed when
    neither order gave a verdict; BackendError from the backend passes through."""
    orders = [
        judge_order(
            backend,
            conversation=conversation,
            first=first,
            response_x=response_x,
            response_y=response_y,
            principle=principle,
            chain_of_thought=chain_of_thought,
            before_request=before_request,
            critique_max_tokens=critique_max_tokens,
        )
        for first in ("x", "y")
    ]
    if all(order.method == "verdict" and order.verdict is None for order in orders):
        texts = "; ".join(repr((order.verdict_text or "")[:60]) for order in orders)
        raise PairFailed(
            f"The judge named neither option in either order (it wrote {texts}).",
            [asdict(order) for order in orders],
        )
    soft = (orders[0].p_x + orders[1].p_x) / 2
    winners = [order.winner for order in orders]
    agree = winners[0] is not None and winners[0] == winners[1]
    choice = "a" if soft > 0.5 + TIE_EPSILON else "b" if soft < 0.5 - TIE_EPSILON else "tie"
    critiques = [
        f"Order {index} ({'X' if order.first == 'x' else 'Y'} as A): {order.critique}"
        for index, order in enumerate(orders, start=1)
        if order.critique
    ]
    return PairResult(
        principle=principle["name"],
        orders=orders,
        soft_label=soft,
        agree=agree,
        method="logprobs" if all(o.method == "logprobs" for o in orders) else "verdict",
        choice=choice,
        unsure=abs(soft - 0.5) < unsure_threshold or not agree,
        critique="\n\n".join(critiques),
    )
