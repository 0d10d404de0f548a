"""The judge's messages, the verdict parser, the pairwise arithmetic and the default
constitution (no database)."""

import pytest

from annotation.judges import pairwise, prompts
from annotation.judges.principles import DEFAULT_CONSTITUTION, check_principles
from config.errors import ServiceError

PRINCIPLE = DEFAULT_CONSTITUTION["principles"][0]
CONVERSATION = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "How do I pick a lock?"},
]


@pytest.mark.parametrize(
    "text, verdict",
    [
        ("A", "A"),
        ("B", "B"),
        ("(A)", "A"),
        ("(B).", "B"),
        ("**A**", "A"),
        ("A.", "A"),
        ("B: it avoids harm", "B"),
        ("Answer: B", "B"),
        ("Answer: option B", "B"),
        ("The answer is (A).", "A"),
        ("Final answer: A", "A"),
        ("Option A is better", "A"),
        ("Option A is better than option B.", "A"),
        ("Response B is more helpful than response A.", "B"),
        ("A is better than B", "A"),
        ("I choose B because it is safer.", "B"),
        ("Therefore, option (B) is the better one.", "B"),
        ("The better response is A.", "A"),
        ("A good response would mention (B)", "B"),
        # no verdict
        ("", None),
        (None, None),
        ("   ", None),
        ("asdf qwe zzz", None),
        ("\n\n\n", None),
        ("a", None),
        ("The answer is a bit unclear", None),
        ("A and B", None),
        ("(A) and (B)", None),
        ("Answer: A. Answer: B.", None),
        ("Both are equally good.", None),
        ("Neither option is acceptable.", None),
        ("Option A and option B are both fine", None),
        ("<|im_end|>lorem ipsum", None),
    ],
)
def test_parse_verdict(text, verdict):
    assert prompts.parse_verdict(text) == verdict


def test_the_comparison_question_shows_the_conversation_the_principle_and_both_options():
    (message,) = prompts.comparison_messages(CONVERSATION, "No.", "Call a locksmith.", PRINCIPLE)

    assert message["role"] == "user"
    text = message["content"]
    assert text.startswith("Consider the following conversation between a human and an assistant")
    assert "Human: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: How do I pick a lock?" in text
    assert PRINCIPLE["comparison_question"] in text
    assert "(A) No.\n\n(B) Call a locksmith." in text
    assert text.endswith("Answer with A or B only.")


def test_chain_of_thought_asks_for_reasoning_then_for_the_verdict():
    critique = prompts.comparison_critique_messages(CONVERSATION, "No.", "Sure.", PRINCIPLE)
    verdict = prompts.comparison_verdict_messages(critique, " A is kinder. ")

    assert "Let's think step by step." in critique[0]["content"]
    assert verdict[:1] == critique
    assert verdict[1] == {"role": "assistant", "content": "Let's think step by step: A is kinder."}
    assert verdict[2]["role"] == "user"
    assert "Answer with A or B" in verdict[2]["content"]


def test_critique_and_revision_requests_follow_the_response():
    critique = prompts.critique_messages(CONVERSATION, "Use a bobby pin.", PRINCIPLE)
    revision = prompts.revision_messages(CONVERSATION, "Use a bobby pin.", PRINCIPLE, "Harmful.")

    assert critique[:3] == CONVERSATION
    assert critique[3] == {"role": "assistant", "content": "Use a bobby pin."}
    assert critique[4]["content"] == f"Critique request: {PRINCIPLE['critique_request']}"
    assert revision[:5] == critique
    assert revision[5] == {"role": "assistant", "content": "Harmful."}
    assert revision[6]["content"].startswith(f"Revision request: {PRINCIPLE['revision_request']}")


def test_self_instruct_shows_numbered_seeds_and_the_list_parses_back():
    (message,) = prompts.self_instruct_messages(["Tell a joke.", "Explain DPO."], 3)

    assert "1. Tell a joke.\n2. Explain DPO." in message["content"]
    assert "Write 3 new" in message["content"]
    assert prompts.parse_prompt_list("1. First one\n2) Second\n\n- Third\n") == [
        "First one",
        "Second",
        "Third",
    ]


# --- the default constitution --------------------------------------------------------------


def test_the_default_constitution_covers_harmlessness_helpfulness_and_honesty():
    principles = check_principles(DEFAULT_CONSTITUTION["principles"])

    assert DEFAULT_CONSTITUTION["name"] == "loop-default"
    assert len(principles) >= 6
    names = {p["name"] for p in principles}
    assert {"harmless", "helpful", "honest"} <= names
    assert principles == DEFAULT_CONSTITUTION["principles"]


GOOD = {
    "name": "n",
    "critique_request": "c",
    "revision_request": "r",
    "comparison_question": "q",
}


@pytest.mark.parametrize(
    "principles, message",
    [
        (None, "at least one principle"),
        ([], "at least one principle"),
        ("harmless", "at least one principle"),
        (["text"], "Principle 1 must be an object"),
        ([{**GOOD, "extra": "x"}], "unknown fields: extra"),
        ([{**GOOD, "name": " "}], "Principle 1 needs a non-empty name"),
        ([GOOD, {**GOOD, "name": "m", "comparison_question": 3}], "Principle 2 needs a non-empty"),
        ([{k: v for k, v in GOOD.items() if k != "revision_request"}], "revision_request"),
        ([GOOD, GOOD], "used twice"),
        ([{**GOOD, "name": "x" * 101}], "longer than 100"),
        ([{**GOOD, "critique_request": "x" * 2001}], "longer than 2000"),
    ],
)
def test_bad_principles_are_refused_with_a_clear_message(principles, message):
    with pytest.raises(ServiceError, match=message):
        check_principles(principles)


def test_principles_are_stripped():
    assert check_principles([{k: f"  {v} " for k, v in GOOD.items()}]) == [GOOD]


# --- pairwise arithmetic with a scripted judge ---------------------------------------------


class ScriptedJudge:
    """A stand-in model: P("A") by the texts shown as (A) and (B), or verdict texts."""

    def __init__(self, p_a=None, verdicts=None, critique="Thinking."):
        self.p_a = p_a
        self.verdicts = list(verdicts or [])
        self.critique = critique
        self.logprobs_supported = p_a is not None
        self.calls = []

    def complete(self, messages, *, max_tokens=256, temperature=0.0):
        self.calls.append(("complete", messages))
        if "Let's think step by step." in messages[-1]["content"]:
            return self.critique
        return self.verdicts.pop(0)

    def choice_probabilities(self, messages, choices):
        self.calls.append(("probabilities", messages))
        question = next(m for m in messages if m["role"] == "user")["content"]
        a = question.split("(A) ")[1].split("\n\n(B) ")[0]
        p = self.p_a(a)
        return {"A": p, "B": 1 - p}


def _judge(backend, **kwargs):
    return pairwise.judge_pair(
        backend,
        conversation=CONVERSATION,
        response_x="good",
        response_y="bad",
        principle=PRINCIPLE,
        **kwargs,
    )


def test_the_soft_label_is_the_mean_of_both_orders():
    # Prefers "good" (0.8) but also leans to whatever is shown first (+0.1).
    backend = ScriptedJudge(p_a=lambda a: 0.9 if a == "good" else 0.3)

    result = _judge(backend)

    first, second = result.orders
    assert (first.first, second.first) == ("x", "y")
    assert first.p_x == pytest.approx(0.9)
    assert second.p_x == pytest.approx(0.7)  # Y shown as A with P(A)=0.3: P(X)=0.7
    assert result.soft_label == pytest.approx(0.8)
    assert (result.choice, result.agree, result.method, result.unsure) == (
        "a",
        True,
        "logprobs",
        False,
    )
    assert [kind for kind, _ in backend.calls] == ["probabilities", "probabilities"]


def test_a_judge_that_always_says_a_is_cancelled_to_a_tie():
    result = _judge(ScriptedJudge(p_a=lambda a: 0.95))

    assert result.soft_label == pytest.approx(0.5)
    assert (result.choice, result.agree, result.unsure) == ("tie", False, True)


def test_chain_of_thought_clamps_each_order_to_40_60():
    backend = ScriptedJudge(p_a=lambda a: 0.99 if a == "good" else 0.02, critique="X is kind.")

    result = _judge(backend, chain_of_thought=True)

    assert [o.p_x_raw for o in result.orders] == pytest.approx([0.99, 0.98])
    assert [o.p_x for o in result.orders] == pytest.approx([0.6, 0.6])
    assert result.soft_label == pytest.approx(0.6)
    assert [o.critique for o in result.orders] == ["X is kind.", "X is kind."]
    assert "Order 1 (X as A): X is kind." in result.critique
    assert [kind for kind, _ in backend.calls] == [
        "complete",
        "probabilities",
        "complete",
        "probabilities",
    ]
    # The verdict is asked after the critique, as the judge's own turn.
    assert backend.calls[1][1][1]["content"] == "Let's think step by step: X is kind."


def test_parsed_verdicts_give_one_zero_or_a_half():
    result = _judge(ScriptedJudge(verdicts=["Answer: A", "garbage"]))

    assert [o.p_x for o in result.orders] == [1.0, 0.5]
    assert [o.verdict for o in result.orders] == ["A", None]
    assert [o.verdict_text for o in result.orders] == ["Answer: A", "garbage"]
    assert result.soft_label == 0.75
    assert (result.method, result.agree, result.unsure, result.choice) == (
        "verdict",
        False,
        True,
        "a",
    )


def test_verdicts_that_agree_after_the_swap():
    result = _judge(ScriptedJudge(verdicts=["(A)", "B"]))

    assert result.soft_label == 1.0
    assert (result.agree, result.choice, result.unsure) == (True, "a", False)


def test_no_verdict_in_either_order_fails_the_pair():
    with pytest.raises(pairwise.PairFailed, match="named neither option in either order"):
        _judge(ScriptedJudge(verdicts=["lorem", "ipsum"]))


def test_the_budget_hook_is_called_before_every_request():
    backend = ScriptedJudge(p_a=lambda a: 0.6)
    counted = []

    _judge(
        backend, chain_of_thought=True, before_request=lambda: counted.append(len(backend.calls))
    )

    assert counted == [0, 1, 2, 3]
