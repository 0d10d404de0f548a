"""Critique -> revision: the pure parts, then the runner with a scripted backend and with the
tiny random model, through a real JobContext."""

import random

import pytest

from annotation.judges.revision import (
    Round,
    check_revision_options,
    clean_revision,
    pick_principles,
    rationale,
    same_text,
)
from config.errors import ServiceError

PRINCIPLES = [
    {
        "name": name,
        "critique_request": f"Critique for {name}.",
        "revision_request": f"Revise for {name}.",
        "comparison_question": f"Which is more {name}?",
    }
    for name in ("harmless", "helpful", "honest")
]


# --- pure parts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("  A kinder reply.  ", "A kinder reply."),
        ("Revision: A kinder reply.", "A kinder reply."),
        ("**Revised response:** A kinder reply.", "A kinder reply."),
        (
            "Here is the rewritten response:\nA kinder reply.\nSecond line.",
            "A kinder reply.\nSecond line.",
        ),
        ("Sure, here's a revision:\n\n\u201cA kinder reply.\u201d", "A kinder reply."),
        ('"A kinder reply."', "A kinder reply."),
        ("Line one\r\nLine two", "Line one\nLine two"),
        ("Revision:", ""),
        ("   ", ""),
        ("", ""),
        # Not a label: kept as written.
        ("Here is why: the sky is blue.", "Here is why: the sky is blue."),
        ('He said "hi" and left, "bye"', 'He said "hi" and left, "bye"'),
    ],
)
def test_clean_revision(answer, expected):
    assert clean_revision(answer) == expected


def test_same_text_ignores_whitespace_only():
    assert same_text("A  reply.\n", " A reply.")
    assert not same_text("A reply.", "A reply!")


def test_pick_principles_draws_a_new_one_each_round_and_is_seeded():
    picked = pick_principles(PRINCIPLES, 3, random.Random("job-1"))
    assert sorted(p["name"] for p in picked) == ["harmless", "helpful", "honest"]
    again = pick_principles(PRINCIPLES, 3, random.Random("job-1"))
    assert [p["name"] for p in again] == [p["name"] for p in picked]
    draws = {
        tuple(p["name"] for p in pick_principles(PRINCIPLES, 3, random.Random(seed)))
        for seed in range(50)
    }
    assert len(draws) == 6  # every order of the three shows up


def test_pick_principles_beyond_the_constitution_never_repeats_back_to_back():
    for seed in range(100):
        names = [p["name"] for p in pick_principles(PRINCIPLES[:2], 4, random.Random(seed))]
        assert len(names) == 4
        assert all(first != second for first, second in zip(names, names[1:], strict=False))
    only = pick_principles(PRINCIPLES[:1], 3, random.Random(0))
    assert [p["name"] for p in only] == ["harmless"] * 3


def test_rationale_lists_each_round_under_its_principle():
    rounds = [Round("harmless", "Rude.", "r1"), Round("honest", "Made up a date.", "r2")]
    assert rationale(rounds) == "[harmless] Rude.\n\n[honest] Made up a date."


def test_options_defaults():
    assert check_revision_options(None) == {
        "limit": 20,
        "rounds": 1,
        "max_tokens": 256,
        "temperature": 0.0,
        "only_model_responses": True,
        "response_ids": None,
    }
    assert check_revision_options({"rounds": 4, "response_ids": [3, 1]})["response_ids"] == [3, 1]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("x", "Options must be an object"),
        ({"rounds": 0}, "rounds must be a whole number from 1 to 4"),
        ({"rounds": 5}, "rounds must be"),
        ({"limit": 1001}, "limit must be"),
        ({"limit": 2.0}, "limit must be"),
        ({"response_ids": []}, "response_ids must be a list"),
        ({"response_ids": ["3"]}, "response_ids must be a list"),
        ({"response_ids": [True]}, "response_ids must be a list"),
        ({"response_ids": [2, 2]}, "lists a response twice"),
        ({"only_model_responses": "yes"}, "only_model_responses must be true or false"),
        ({"temperature": 3}, "temperature must be"),
        ({"count": 3}, "Unknown option 'count'"),
    ],
)
def test_bad_options_are_refused_with_the_reason(options, message):
    with pytest.raises(ServiceError, match=message):
        check_revision_options(options)


# --- the runner -----------------------------------------------------------------------


class ScriptedBackend:
    """A fake judge model (an external model, so faking it is fair): answers critique and
    revision requests with ``critique(text, principle)`` and ``revise(text, principle)``,
    where ``text`` is the response under review, and records every request.
    ``on_request`` runs before each answer (to fail, or to cancel the job)."""

    def __init__(self, *, revise=None, critique=None, on_request=None):
        self.revise = revise or (lambda text, principle: f"{text} [fixed for {principle}]")
        self.critique = critique or (lambda text, principle: f"Too blunt for {principle}.")
        self.on_request = on_request
        self.requests: list[list[dict]] = []

    @staticmethod
    def _principle(content: str, verb: str) -> str | None:
        for principle in PRINCIPLES:
            if f"{verb} for {principle['name']}." in content:
                return principle["name"]
        return None

    def complete(self, messages, *, max_tokens=256, temperature=0.0):
        self.requests.append(messages)
        if self.on_request:
            self.on_request(len(self.requests))
        last = messages[-1]["content"]
        revising = self._principle(last, "Revise")
        if revising:
            # The response under review is the assistant turn before the critique request.
            return self.revise(messages[-4]["content"], revising)
        critiquing = self._principle(last, "Critique")
        assert critiquing, f"unexpected request: {last!r}"
        return self.critique(messages[-2]["content"], critiquing)

    def choice_probabilities(self, messages, choices):
        return None


@pytest.fixture
def constitution(db):
    from annotation.models import Constitution

    return Constitution.objects.create(name="test-rules", version=3, principles=PRINCIPLES)


@pytest.fixture
def judge_version(db):
    from tests.factories import make_version

    return make_version("judge-model")


@pytest.fixture
def local_judge(project, constitution, judge_version):
    from annotation.models import Judge

    return Judge.objects.create(
        workspace=project.workspace,
        name="local-judge",
        backend=Judge.Backend.LOCAL,
        model_version=judge_version,
        constitution=constitution,
    )


@pytest.fixture
def remote_judge(project, constitution):
    from annotation.models import Judge

    return Judge.objects.create(
        workspace=project.workspace,
        name="remote-judge",
        backend=Judge.Backend.REMOTE,
        endpoint_url="http://127.0.0.1:9/v1",
        endpoint_model="m",
        api_key="sk-secret-key",
        constitution=constitution,
    )


def _model_reply(project, text, *, version=None, prompt=None, sample_index=0):
    from annotation.models import Response
    from tests.factories import make_prompt, make_version

    return Response.objects.create(
        prompt=prompt or make_prompt(project),
        model_version=version or make_version(),
        sample_index=sample_index,
        text=text,
    )


def _run(project, judge, backend, *, options=None, max_requests=200, pk=None):
    from annotation.judges.jobs import judge_job_execute
    from annotation.models import JudgeJob

    job = JudgeJob.objects.create(
        pk=pk,
        project=project,
        judge=judge,
        kind=JudgeJob.Kind.REVISION,
        options=options or {},
        max_requests=max_requests,
    )
    return judge_job_execute(job_id=job.pk, backend=backend)


def _stored(original):
    """The AI demonstration and comparison made from ``original`` (or Nones)."""
    from annotation.models import Judgment

    demonstration = Judgment.objects.filter(kind="demonstration", edited_from=original).first()
    comparison = Judgment.objects.filter(kind="comparison", response_a=original).first()
    return demonstration, comparison


def test_revisions_are_stored_as_responses_demonstrations_and_comparisons(
    project, local_judge, judge_version, constitution
):
    from annotation.labeling.kinds.demonstration import edit_diff
    from annotation.models import Judgment, Response

    # Given two model replies (one on a prompt where the judge's own model already answered
    # at sample 0) and a human-written reply, which the default selection leaves alone
    own = _model_reply(project, "Go away.", version=judge_version)
    other = _model_reply(project, "It is 5pm.")
    Response.objects.create(prompt=other.prompt, author="someone", text="Human reply.")
    backend = ScriptedBackend()

    # When a one-round revision job runs
    job = _run(project, local_judge, backend)

    # Then both model replies are revised, with 2 requests each, and the job succeeded
    assert (job.status, job.total, job.done, job.failed, job.error) == ("succeeded", 2, 2, 0, "")
    assert job.requests_made == 4
    for original in (own, other):
        demonstration, comparison = _stored(original)
        revision = Response.objects.get(pk=demonstration.ai_details["revision_response"])
        principle = demonstration.principle
        assert principle in {"harmless", "helpful", "honest"}
        assert revision.text == f"{original.text} [fixed for {principle}]"
        assert revision.prompt_id == original.prompt_id
        assert revision.model_version == judge_version
        assert revision.author == "judge:local-judge"
        assert revision.generation_params == {
            "judge": "local-judge",
            "judge_id": local_judge.pk,
            "judge_job": job.pk,
            "constitution": "test-rules",
            "constitution_version": 3,
            "principles": [principle],
            "rounds": 1,
            "revision_of": original.pk,
            "max_tokens": 256,
            "temperature": 0.0,
        }
        # the demonstration: an edit of the original, with its diff
        assert demonstration.source == Judgment.Source.AI and demonstration.labeler is None
        assert demonstration.text == revision.text
        assert demonstration.edit_diff == edit_diff(original=original.text, edited=revision.text)
        assert f"-{original.text}" in demonstration.edit_diff
        assert f"+{revision.text}" in demonstration.edit_diff
        assert (demonstration.judge, demonstration.judge_job_id) == (local_judge, job.pk)
        assert demonstration.constitution == constitution
        assert demonstration.rationale == f"[{principle}] Too blunt for {principle}."
        assert demonstration.ai_details["rounds"] == [
            {
                "principle": principle,
                "critique": f"Too blunt for {principle}.",
                "revision": revision.text,
            }
        ]
        # the comparison: original as A, revision as B, presumed, not judged
        assert comparison.source == Judgment.Source.AI and comparison.labeler is None
        assert (comparison.response_a, comparison.response_b) == (original, revision)
        assert comparison.choice == "b" and comparison.soft_label is None
        assert comparison.ai_details["presumed"] is True
        assert comparison.ai_details["demonstration"] == demonstration.pk
        assert comparison.principle == principle and comparison.judge_job_id == job.pk
    # the judge's own reply was at sample 0 of its version: the revision took sample 1
    own_revision = Response.objects.get(generation_params__revision_of=own.pk)
    assert own_revision.sample_index == 1
    assert Judgment.objects.count() == 4

    # And a second job finds nothing left to revise for this judge and constitution
    again = _run(project, local_judge, ScriptedBackend())
    assert (again.status, again.total, again.requests_made) == ("succeeded", 0, 0)


def test_revisions_export_as_sft_rows_and_preferences(project, local_judge):
    from annotation.datasets.selectors import dpo_rows, sft_rows
    from annotation.models import Prompt

    prompt = Prompt.objects.create(
        project=project,
        text="And tomorrow?",
        metadata={
            "context": [
                {"role": "user", "content": "Weather today?"},
                {"role": "assistant", "content": "Sunny."},
            ]
        },
    )
    original = _model_reply(project, "No idea, stop asking.", prompt=prompt)
    backend = ScriptedBackend()

    job = _run(project, local_judge, backend)

    assert job.status == "succeeded"
    conversation = [
        {"role": "user", "content": "Weather today?"},
        {"role": "assistant", "content": "Sunny."},
        {"role": "user", "content": "And tomorrow?"},
    ]
    # the judge saw the whole conversation, then the reply under review
    assert backend.requests[0][:4] == [
        *conversation,
        {"role": "assistant", "content": original.text},
    ]
    demonstration, _ = _stored(original)
    assert demonstration.context == conversation[:2]
    revised = {"role": "assistant", "content": demonstration.text}
    # (rows may carry provenance keys too: only the training fields are compared)
    (sft,) = sft_rows(project, ai="include")
    assert sft["messages"] == [*conversation, revised]
    (preference,) = dpo_rows(project, ai="include")
    assert {key: preference[key] for key in ("prompt", "chosen", "rejected")} == {
        "prompt": conversation,
        "chosen": [revised],
        "rejected": [{"role": "assistant", "content": original.text}],
    }


def test_several_rounds_use_a_new_principle_each_and_revise_the_last_revision(project, local_judge):
    from annotation.models import Response

    original = _model_reply(project, "Draft.")
    backend = ScriptedBackend()

    job = _run(project, local_judge, backend, options={"rounds": 3})

    assert (job.status, job.done, job.requests_made) == ("succeeded", 1, 6)
    demonstration, comparison = _stored(original)
    rounds = demonstration.ai_details["rounds"]
    names = [item["principle"] for item in rounds]
    assert sorted(names) == ["harmless", "helpful", "honest"]
    # each round works on the previous round's revision
    expected = "Draft."
    for number, item in enumerate(rounds):
        assert backend.requests[2 * number][-2] == {"role": "assistant", "content": expected}
        expected = f"{expected} [fixed for {item['principle']}]"
        assert item["revision"] == expected
        assert item["critique"] == f"Too blunt for {item['principle']}."
    assert demonstration.text == expected == comparison.response_b.text
    assert demonstration.principle == names[-1] == comparison.principle
    assert demonstration.ai_details["principles"] == names
    assert demonstration.rationale == "\n\n".join(
        f"[{name}] Too blunt for {name}." for name in names
    )
    revision = Response.objects.get(pk=comparison.response_b_id)
    assert revision.generation_params["principles"] == names
    assert revision.generation_params["rounds"] == 3


def test_principles_are_seeded_by_the_job(project, local_judge, constitution):
    from annotation.models import Judge

    # Two judges on the same constitution revising the same reply in jobs with different ids
    # draw their principles from the job id: a rerun of one job's draw is reproducible.
    original = _model_reply(project, "Draft.")
    first = _run(project, local_judge, ScriptedBackend(), options={"rounds": 3})
    second_judge = Judge.objects.create(
        workspace=project.workspace,
        name="second",
        backend="remote",
        endpoint_url="http://x/v1",
        constitution=constitution,
    )
    second = _run(project, second_judge, ScriptedBackend(), options={"rounds": 3})
    import random as _random

    from annotation.judges.revision import pick_principles

    for job in (first, second):
        demonstration = job.judgments.get(kind="demonstration")
        drawn = pick_principles(PRINCIPLES, 3, _random.Random(f"revision:{job.pk}:{original.pk}"))
        assert demonstration.ai_details["principles"] == [p["name"] for p in drawn]


def test_a_remote_judge_writes_revisions_with_no_model_version(project, remote_judge):
    from annotation.models import Response

    original = _model_reply(project, "Meh.")
    Response.objects.create(prompt=original.prompt, author="x", text="Other human reply.")

    job = _run(project, remote_judge, ScriptedBackend())

    assert job.status == "succeeded"
    revision = Response.objects.get(generation_params__revision_of=original.pk)
    assert revision.model_version is None
    assert revision.author == "judge:remote-judge"
    assert revision.sample_index == 1  # the human reply holds sample 0 with no version
    assert "sk-secret-key" not in job.log


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("", "the revision in round 1"),
        ("Revision:   ", "was empty"),
        ("Same  old\nreply.", "the revision is the original unchanged"),
        ("Too blunt for  harmless.", "only repeats the critique"),
    ],
)
def test_an_empty_or_unchanged_revision_fails_the_item_and_stores_nothing(
    project, local_judge, answer, why
):
    from annotation.models import Judgment, Response

    original = _model_reply(project, "Same old reply.")
    before = Response.objects.count()

    backend = ScriptedBackend(
        revise=lambda text, principle: answer,
        critique=lambda text, principle: "Too blunt for harmless.",
    )
    job = _run(project, local_judge, backend)

    assert (job.status, job.done, job.failed) == ("failed", 0, 1)
    assert why in job.log and f"response {original.pk}" in job.log
    assert "1 of 1 items failed" in job.error
    assert Response.objects.count() == before
    assert not Judgment.objects.exists()


def test_a_failed_item_in_a_later_round_stores_nothing_and_the_job_goes_on(project, local_judge):
    from annotation.models import Judgment, Response

    failing = _model_reply(project, "First.")
    fine = _model_reply(project, "Second.")

    def revise(text, principle):
        # the failing reply's second round comes back empty
        return "" if text.startswith("First.") and "[fixed" in text else f"{text} [fixed]"

    job = _run(project, local_judge, ScriptedBackend(revise=revise), options={"rounds": 2})

    assert (job.status, job.done, job.failed) == ("partial", 1, 1)
    assert "the revision in round 2" in job.log
    assert _stored(failing) == (None, None)
    assert not Response.objects.filter(generation_params__revision_of=failing.pk).exists()
    demonstration, comparison = _stored(fine)
    assert demonstration.text == "Second. [fixed] [fixed]" and comparison is not None
    assert Judgment.objects.count() == 2


def test_the_budget_stops_the_job_and_keeps_finished_items(project, local_judge):
    from annotation.models import Judgment, Response

    first = _model_reply(project, "One.")
    second = _model_reply(project, "Two.")
    _model_reply(project, "Three.")

    # When the budget allows 3 requests (an item takes 2)
    job = _run(project, local_judge, ScriptedBackend(), max_requests=3)

    # Then the first item is stored, the second stopped after its critique, the third
    # never started
    assert (job.status, job.done, job.requests_made) == ("partial", 1, 3)
    assert "Stopped by the budget: 3 model requests" in job.error
    assert _stored(first)[0] is not None and _stored(first)[1] is not None
    assert _stored(second) == (None, None)
    assert Judgment.objects.count() == 2
    assert Response.objects.filter(generation_params__has_key="revision_of").count() == 1


def test_a_dead_backend_fails_items_then_stops_the_job(project, local_judge):
    from annotation.judges.backends import BackendError
    from annotation.models import Judgment

    for number in range(5):
        _model_reply(project, f"Reply {number}.")

    def fail(count):
        raise BackendError("The endpoint answered HTTP 500.", retryable=True)

    job = _run(project, local_judge, ScriptedBackend(on_request=fail))

    assert (job.status, job.done, job.failed, job.requests_made) == ("failed", 0, 3, 3)
    assert job.error.startswith("The judge's model failed: The endpoint answered HTTP 500.")
    assert not Judgment.objects.exists()


def test_one_backend_error_fails_only_its_item(project, local_judge):
    from annotation.judges.backends import BackendError

    broken = _model_reply(project, "Broken.")
    fine = _model_reply(project, "Fine.")

    def fail_once(count):
        if count == 2:  # the first item's revision request
            raise BackendError("The endpoint's answer is not JSON: <html>")

    job = _run(project, local_judge, ScriptedBackend(on_request=fail_once))

    assert (job.status, job.done, job.failed) == ("partial", 1, 1)
    assert "not JSON" in job.error
    assert _stored(broken) == (None, None)
    assert _stored(fine)[0] is not None


def test_cancel_stops_before_the_next_item(project, local_judge):
    from annotation.models import JudgeJob, Judgment

    first = _model_reply(project, "One.")
    _model_reply(project, "Two.")

    def cancel(count):
        JudgeJob.objects.update(cancel_requested=True)

    job = _run(project, local_judge, ScriptedBackend(on_request=cancel))

    assert (job.status, job.done, job.requests_made) == ("cancelled", 1, 2)
    assert _stored(first)[0] is not None
    assert Judgment.objects.count() == 2


def test_listed_responses_are_revised_whoever_wrote_them(project, other_project, local_judge):
    from annotation.models import Judgment, Prompt, Response
    from tests.factories import make_prompt

    human = Response.objects.create(prompt=make_prompt(project), author="ann", text="Hi.")
    model = _model_reply(project, "Hello.")
    _model_reply(project, "Not listed.")
    elsewhere = _model_reply(other_project, "Elsewhere.")

    job = _run(project, local_judge, ScriptedBackend(), options={"response_ids": [human.pk]})
    assert (job.status, job.total, job.done) == ("succeeded", 1, 1)
    assert _stored(human)[0].text == "Hi. [fixed for " + _stored(human)[0].principle + "]"

    chat_prompt = Prompt.objects.create(project=project, text="Hey", metadata={"chat_session": 1})
    chat = _model_reply(project, "Chat reply.", prompt=chat_prompt)
    bad = _run(
        project,
        local_judge,
        ScriptedBackend(),
        options={"response_ids": [model.pk, elsewhere.pk, chat.pk]},
    )
    assert bad.status == "failed"
    assert bad.error == (
        f"These responses are not in the project's labeling pool: {elsewhere.pk}, {chat.pk}."
    )
    assert bad.requests_made == 0
    assert Judgment.objects.count() == 2


def test_bad_options_fail_the_job_with_the_reason(project, local_judge):
    from annotation.models import Judgment

    _model_reply(project, "Reply.")

    job = _run(project, local_judge, ScriptedBackend(), options={"rounds": 9})

    assert job.status == "failed"
    assert job.error == "rounds must be a whole number from 1 to 4."
    assert not Judgment.objects.exists()


def _tiny_judge(project, tiny_model_dir):
    """A local judge on the tiny random model, under a one-principle constitution (the
    principle drawn per item is then no source of chance)."""
    from annotation.models import Constitution, Judge
    from tests.factories import make_version

    constitution = Constitution.objects.create(name="tiny", version=1, principles=PRINCIPLES[1:2])
    version = make_version("tiny-judge", path=str(tiny_model_dir))
    return Judge.objects.create(
        workspace=project.workspace,
        name="tiny",
        backend="local",
        model_version=version,
        constitution=constitution,
    )


def _log_lines(job):
    return [line.split(" ", 2)[2] for line in job.log.splitlines()]


def test_tiny_local_model_greedy_writes_nothing_so_every_item_fails(project, tiny_model_dir):
    """Greedy, the tiny random model (two layers of width 32, tied embeddings) predicts the
    prompt's last token again, the newline after "assistant", and then that newline again up
    to max_tokens, whatever the prompt: every critique and revision is empty once stripped,
    so each item fails with that reason and nothing is stored for it."""
    from annotation.models import Judgment, Response

    judge = _tiny_judge(project, tiny_model_dir)
    originals = [_model_reply(project, f"Reply number {n}.") for n in range(2)]

    job = _run(project, judge, None, options={"max_tokens": 16, "temperature": 0.0})

    assert (job.status, job.done, job.failed) == ("failed", 0, 2)
    assert (job.total, job.requests_made) == (2, 4)
    reasons = [
        f"response {original.pk}: the revision in round 1 (helpful) was empty; "
        "nothing stored for it."
        for original in originals
    ]
    assert job.error == f"2 of 2 items failed (last: {reasons[1]})"
    assert _log_lines(job) == [
        "Revision: 2 responses, 1 round(s) each, constitution tiny v1.",
        f"Item failed: {reasons[0]}",
        f"Item failed: {reasons[1]}",
        "Done: 0 revised, 2 failed.",
        f"Finished: Failed - {job.error}",
    ]
    assert not Judgment.objects.exists()
    assert not Response.objects.filter(generation_params__has_key="revision_of").exists()


def test_tiny_local_model_sampled_writes_random_tokens_stored_as_revisions(project, tiny_model_dir):
    """At temperature 1 the tiny random model's next-token distribution is almost flat: each
    critique and revision is a run of random tokens, neither empty nor the critique nor the
    original, so both items are stored whole (revision, demonstration, comparison). The job
    id seeds the sampling, and on PostgreSQL an id comes from a sequence that earlier tests
    moved on, so the job is given its id."""
    from annotation.models import Judgment, Response

    judge = _tiny_judge(project, tiny_model_dir)
    originals = [_model_reply(project, f"Reply number {n}.") for n in range(2)]

    job = _run(project, judge, None, options={"max_tokens": 16, "temperature": 1.0}, pk=1)

    assert (job.status, job.error) == ("succeeded", "")
    assert (job.done, job.failed, job.total, job.requests_made) == (2, 0, 2, 4)
    assert _log_lines(job) == [
        "Revision: 2 responses, 1 round(s) each, constitution tiny v1.",
        f"Response {originals[0].pk}: revised under helpful.",
        f"Response {originals[1].pk}: revised under helpful.",
        "Done: 2 revised, 0 failed.",
        "Finished: Succeeded",
    ]
    for original in originals:
        demonstration, comparison = _stored(original)
        revision = Response.objects.get(generation_params__revision_of=original.pk)
        assert revision.model_version == judge.model_version
        assert revision.text == demonstration.text
        assert demonstration.text.strip() and not same_text(demonstration.text, original.text)
        assert demonstration.principle == comparison.principle == "helpful"
        assert (comparison.response_a, comparison.response_b) == (original, revision)
        assert comparison.choice == "b"
    assert Judgment.objects.count() == 4
