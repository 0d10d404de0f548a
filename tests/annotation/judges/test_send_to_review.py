"""AI labels go to the human review queue (all, a sample, unsure ones, ones whose two
orders disagreed) and reviewers accept, correct or reject them like human judgments."""

import pytest
from django.forms.models import model_to_dict

from annotation.datasets.selectors import dpo_rows
from annotation.judges.send_to_review import ai_review_queue_fill
from annotation.models import Judgment, Response, Review, Role
from annotation.review import selectors as review_selectors
from annotation.review import services as review
from config.errors import ServiceError
from tests.annotation.judges.factories import (
    make_ai_judgment,
    make_constitution,
    make_judge,
)
from tests.factories import judge as human_judge
from tests.factories import make_caller, make_member, make_prompt, make_task, make_version


def make_version_at(folder):
    return make_version("tiny-judge", path=str(folder))


# soft labels of five AI judgments, and whether their two orders agreed
LABELS = [(0.95, True), (0.55, False), (0.45, True), (0.2, True), (0.52, True)]


@pytest.fixture
def ai_judge(project):
    return make_judge(
        "judge-local", make_constitution("loop-default", 2), workspace=project.workspace
    )


@pytest.fixture
def ai(project, ai_judge):
    """Five AI judgments, one per task."""
    return [
        make_ai_judgment(
            make_task(project, texts=(f"A{i}", f"B{i}")), ai_judge, soft_label=soft, agree=agree
        )
        for i, (soft, agree) in enumerate(LABELS)
    ]


def _flagged() -> list[int]:
    return sorted(Judgment.objects.filter(needs_review=True).values_list("pk", flat=True))


def _queued(project, reviewer) -> list[int]:
    entries = review_selectors.review_queue(project=project, reviewer=reviewer)
    return [entry.judgment_id for entry in entries]


def _stored() -> dict:
    return {
        "judgments": [model_to_dict(j) for j in Judgment.objects.order_by("pk")],
        "reviews": Review.objects.count(),
    }


# --- filling the queue -----------------------------------------------------------------


def test_all_sends_every_unreviewed_ai_label_once(project, ai, admin_member):
    human = human_judge(make_task(project), make_member(project, Role.LABELER, "ann"))
    review.judgment_accept(project=project, judgment_id=ai[0].pk, reviewer=admin_member)

    first = ai_review_queue_fill(project=project, mode="all")
    again = ai_review_queue_fill(project=project, mode="all")

    assert (first, again) == (4, 0)
    assert _flagged() == [j.pk for j in ai[1:]]
    assert not Judgment.objects.get(pk=human.pk).needs_review


def test_unsure_takes_soft_labels_within_the_threshold_of_a_half(project, ai):
    count = ai_review_queue_fill(project=project, mode="unsure", threshold=0.06)

    assert count == 3
    assert _flagged() == [ai[1].pk, ai[2].pk, ai[4].pk]  # 0.55, 0.45, 0.52; not 0.95, 0.2


def test_a_narrower_threshold_takes_fewer(project, ai):
    assert ai_review_queue_fill(project=project, mode="unsure", threshold=0.03) == 1
    assert _flagged() == [ai[4].pk]


def test_disagree_takes_the_labels_whose_two_orders_disagreed(project, ai):
    count = ai_review_queue_fill(project=project, mode="disagree")

    assert count == 1
    assert _flagged() == [ai[1].pk]


def test_sample_is_a_seeded_share_and_a_second_fill_adds_another(project, ai_judge):
    tasks = [make_task(project) for _ in range(20)]
    made = [make_ai_judgment(task, ai_judge, soft_label=0.9) for task in tasks]

    count = ai_review_queue_fill(project=project, mode="sample", rate=0.25, seed=7)
    first = _flagged()
    more = ai_review_queue_fill(project=project, mode="sample", rate=0.25, seed=7)

    assert count == 5 and len(first) == 5
    assert set(first) <= {j.pk for j in made}
    assert more == 4  # a quarter of the 15 left, rounded
    assert len(_flagged()) == 9 and set(first) < set(_flagged())
    # the same seed on the same rows picks the same ones
    Judgment.objects.update(needs_review=False)
    ai_review_queue_fill(project=project, mode="sample", rate=0.25, seed=7)
    assert _flagged() == first


def test_a_tiny_rate_still_sends_one(project, ai):
    assert ai_review_queue_fill(project=project, mode="sample", rate=0.01) == 1


def test_the_judge_filter_keeps_other_judges_out(project, ai, ai_judge):
    other = make_judge("judge-other", workspace=project.workspace)
    theirs = make_ai_judgment(make_task(project), other, soft_label=0.5)

    assert ai_review_queue_fill(project=project, mode="all", judge=other.pk) == 1
    assert _flagged() == [theirs.pk]
    assert ai_review_queue_fill(project=project, mode="all", judge=ai_judge) == 5


def test_only_this_projects_ai_labels_are_sent(project, other_project, ai, ai_judge):
    elsewhere = make_ai_judgment(make_task(other_project), ai_judge, soft_label=0.5)

    ai_review_queue_fill(project=project, mode="all")

    assert elsewhere.pk not in _flagged()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mode": "some"}, "mode must be one of all, sample, unsure, disagree."),
        ({"mode": "sample", "rate": 0}, "rate must be a number above 0 and at most 1."),
        ({"mode": "sample", "rate": 1.5}, "rate must be a number above 0 and at most 1."),
        ({"mode": "sample", "rate": "0.2"}, "rate must be a number"),
        ({"mode": "sample", "rate": float("nan")}, "rate must be a number"),
        ({"mode": "unsure", "threshold": 0.7}, "threshold must be a number above 0 and at most"),
        ({"mode": "unsure", "threshold": True}, "threshold must be a number"),
        ({"mode": "all", "judge": 424242}, "There is no judge 424242."),
        ({"mode": "all", "judge": "judge-local"}, "judge must be the id of a judge."),
    ],
)
def test_bad_fills_are_refused_and_flag_nothing(project, ai, fields, message):
    with pytest.raises(ServiceError) as error:
        ai_review_queue_fill(project=project, **fields)

    assert message in error.value.message
    assert _flagged() == []


# --- the review queue with AI labels --------------------------------------------------


def test_the_queue_lists_flagged_ai_labels_after_human_disagreements(project, ai, admin_member):
    task = make_task(project)
    ann = human_judge(task, make_member(project, Role.LABELER, "ann"), choice="a")
    bob = human_judge(task, make_member(project, Role.LABELER, "bob"), choice="b")
    ai_review_queue_fill(project=project, mode="disagree")

    entries = review_selectors.review_queue(project=project, reviewer=admin_member)

    assert [e.judgment_id for e in entries] == [ann.pk, bob.pk, ai[1].pk]
    assert entries[-1].reasons == ("AI label sent for review", "the two orders disagreed")
    # unflagged AI labels are not queued, and AI labels make no human disagree
    assert ai[0].pk not in _queued(project, admin_member)


def test_accepting_or_rejecting_an_ai_label_takes_it_out_of_the_queue(project, ai, admin_member):
    ai_review_queue_fill(project=project, mode="all")

    review.judgment_accept(project=project, judgment_id=ai[0].pk, reviewer=admin_member)
    review.judgment_reject(project=project, judgment_id=ai[1].pk, reviewer=admin_member)

    assert _queued(project, admin_member) == [j.pk for j in ai[2:]]
    # the rejected AI label leaves exports; the accepted one stays
    chosen = {row["chosen"][0]["content"] for row in dpo_rows(project, ai="include")}
    winner = Response.objects.get(pk=ai[1].response_a_id).text  # 0.55: A won
    assert winner not in chosen
    assert Response.objects.get(pk=ai[0].response_a_id).text in chosen


def test_correcting_an_ai_label_supersedes_it_with_the_reviewers_judgment(
    project, ai, admin_member
):
    ai_review_queue_fill(project=project, mode="all")
    target = ai[0]  # the judge said A (0.95)
    before = model_to_dict(Judgment.objects.get(pk=target.pk))

    made = review.judgment_correct(
        project=project,
        judgment_id=target.pk,
        reviewer=admin_member,
        data={"choice": "right-3"},  # task order: right is B
        note="B is right",
    )

    correction = made.correction
    assert (made.decision, made.judgment_id) == ("corrected", target.pk)
    assert (correction.source, correction.labeler, correction.choice) == (
        "review",
        admin_member,
        "b",
    )
    assert (correction.judge_id, correction.soft_label, correction.needs_review) == (
        None,
        None,
        False,
    )
    assert correction.supersedes_id == target.pk
    assert model_to_dict(Judgment.objects.get(pk=target.pk)) == before
    assert target.pk not in _queued(project, admin_member)


def test_ai_labels_have_no_labeler_and_any_reviewer_may_review_them(project, ai, researcher):
    """labeler is None on AI rows: "your own judgment" compares ids, so no reviewer is ever
    the AI's author, and the low-trust figures are per human labeler only."""
    ai_review_queue_fill(project=project, mode="all")

    made = review.judgment_accept(project=project, judgment_id=ai[2].pk, reviewer=researcher)
    figures = review_selectors.labeler_quality(project=project)

    assert made.decision == "accepted"
    assert figures["labelers"] == []
    assert review_selectors.low_trust_labeler_ids(project=project) == set()


def test_an_ai_label_of_no_task_can_be_accepted_but_not_corrected(project, ai_judge, admin_member):
    prompt = make_prompt(project, "Say hi.")
    original = Response.objects.create(prompt=prompt, author="model", text="hi")
    revision = Response.objects.create(prompt=prompt, author="judge", text="Hello! How can I help?")
    pair = Judgment.objects.create(
        kind="comparison", project=project, prompt=prompt, shown_order=[revision.pk, original.pk],
        response_a=revision, response_b=original, choice="a", source="ai", judge=ai_judge,
        constitution=ai_judge.constitution, principle="helpfulness", soft_label=1.0,
    )  # fmt: skip
    ai_review_queue_fill(project=project, mode="all")

    item = review_selectors.review_item(project=project, reviewer=admin_member)
    with pytest.raises(ServiceError, match="Only judgments of tasks can be corrected here."):
        review.judgment_correct(
            project=project, judgment_id=pair.pk, reviewer=admin_member, data={"choice": "left"}
        )
    review.judgment_accept(project=project, judgment_id=pair.pk, reviewer=admin_member)

    assert (item["judgment"], item["task"], item["prompt"]) == (pair, None, prompt)
    assert [r.text for r in item["responses"]] == ["Hello! How can I help?", "hi"]
    assert _queued(project, admin_member) == []


def test_an_ai_revision_shows_the_original_and_the_revision(login, project, ai_judge, admin_member):
    prompt = make_prompt(project, "Say hi.")
    original = Response.objects.create(prompt=prompt, author="model", text="hi")
    revision = Judgment.objects.create(
        kind="demonstration", project=project, prompt=prompt, shown_order=[original.pk],
        text="Hello! How can I help?", edited_from=original, source="ai", judge=ai_judge,
        constitution=ai_judge.constitution, principle="helpfulness",
    )  # fmt: skip
    ai_review_queue_fill(project=project, mode="all")

    html = login(admin_member).get("/p/alpha/review/").content.decode()

    assert f'data-judgment="{revision.pk}"' in html
    assert "<h3>Revision by AI judge judge-local</h3>" in html
    assert "Hello! How can I help?" in html and "<p>hi</p>" in html
    assert 'data-key="c"' not in html and 'data-key="g"' not in html  # no task to correct
    assert 'data-key="a"' in html and 'data-key="r"' in html


# --- the review page -------------------------------------------------------------------


def test_the_review_page_shows_the_judge_constitution_principle_and_both_orders(
    login, project, ai, admin_member
):
    ai_review_queue_fill(project=project, mode="disagree")

    html = login(admin_member).get("/p/alpha/review/").content.decode()

    assert f'data-judgment="{ai[1].pk}"' in html
    assert "<dd data-ai-judge>judge-local</dd>" in html
    assert "<dd data-ai-constitution>loop-default v2</dd>" in html
    assert "<dd data-ai-principle>helpfulness</dd>" in html
    assert "P(A better) = 0.550 (logprobs)" in html
    # 0.55 with orders 0.60 (A shown first) and 0.40 (B shown first): they disagree
    assert "<dt>Order 1 (A shown first)</dt>" in html
    assert "<dt>Order 2 (B shown first)</dt>" in html
    assert '<dd data-ai-order="1">P(A better) = 0.600 · method: logprobs · picked: A' in html
    assert '<dd data-ai-order="2">P(A better) = 0.400 · method: logprobs · picked: B' in html
    assert "the two orders disagreed" in html
    assert "AI judge judge-local said: A is better" in html
    for key in ("a", "c", "r", "g"):
        assert f'data-key="{key}"' in html


def test_a_swapped_ai_label_is_shown_in_task_order(login, project, ai_judge, admin_member):
    task = make_task(project, texts=("First", "Second"))
    swapped = make_ai_judgment(task, ai_judge, soft_label=0.8, swapped=True)  # "Second" wins
    ai_review_queue_fill(project=project, mode="all")

    html = login(admin_member).get(f"/p/alpha/review/?judgment={swapped.pk}").content.decode()

    assert "AI judge judge-local said: B is better" in html
    assert "P(A better) = 0.200" in html


def test_correcting_an_ai_label_on_the_page(login, project, ai, admin_member):
    ai_review_queue_fill(project=project, mode="all")
    client = login(admin_member)

    form = client.get(f"/p/alpha/review/?judgment={ai[3].pk}&correct=1")
    answer = client.post(
        "/p/alpha/review/",
        {"action": "correct", "judgment_id": ai[3].pk, "choice": "left-4", "shown_at_ms": "1"},
    )

    assert "Correct AI judge judge-local's answer" in form.content.decode()
    assert answer.status_code == 302
    correction = Judgment.objects.get(source="review")
    assert (correction.choice, correction.strength, correction.supersedes_id) == ("a", 4, ai[3].pk)
    assert correction.labeler == admin_member


def test_the_fill_form_sends_ai_labels_to_review(login, project, ai, ai_judge, admin_member):
    client = login(admin_member)

    page = client.get("/p/alpha/review/")
    answer = client.post(
        "/p/alpha/review/ai/",
        {"mode": "unsure", "threshold": "0.06", "rate": "", "judge": str(ai_judge.pk)},
        follow=True,
    )

    html = page.content.decode()
    assert 'action="/p/alpha/review/ai/"' in html and 'name="mode"' in html
    assert f'<option value="{ai_judge.pk}">judge-local</option>' in html
    assert "3 AI judgments sent to the review queue." in answer.content.decode()
    assert _flagged() == [ai[1].pk, ai[2].pk, ai[4].pk]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"mode": "everything"}, "mode must be one of"),
        ({"mode": "sample", "rate": "lots"}, "rate must be a number."),
        ({"mode": "sample", "rate": "2"}, "rate must be a number above 0 and at most 1."),
        ({"mode": "all", "judge": "x"}, "judge must be the id of a judge."),
    ],
)
def test_a_bad_fill_form_gets_400_with_the_message_and_changes_nothing(
    login, project, ai, admin_member, body, message
):
    before = _stored()

    answer = login(admin_member).post("/p/alpha/review/ai/", body)

    assert answer.status_code == 400
    assert message in answer.content.decode()
    assert 'id="ai-review-fill"' in answer.content.decode()
    assert _stored() == before


# --- API -------------------------------------------------------------------------------


def test_the_api_fills_the_queue(login, project, ai, admin_member):
    answer = login(admin_member).post(
        "/api/projects/alpha/review/ai/",
        {"mode": "sample", "rate": 0.4, "seed": 3},
        content_type="application/json",
    )

    assert answer.status_code == 200
    body = answer.json()
    assert (body["flagged"], body["waiting"], body["mode"], body["rate"]) == (2, 2, "sample", 0.4)
    assert len(_flagged()) == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"mode": "nope"}, "mode must be one of"),
        ({"mode": "sample", "rate": -1}, "rate must be a number above 0"),
        ({"mode": "sample", "rate": [1]}, "rate must be a number"),
        ({"mode": "unsure", "threshold": "wide"}, "threshold must be a number."),
        ({"mode": "all", "judge": 99999}, "There is no judge 99999."),
        ([1, 2], "Send a JSON object"),
    ],
)
def test_bad_api_fills_get_400_and_change_nothing(login, project, ai, admin_member, body, message):
    before = _stored()

    answer = login(admin_member).post(
        "/api/projects/alpha/review/ai/", body, content_type="application/json"
    )

    assert answer.status_code == 400
    assert message in answer.json()["detail"]
    assert _stored() == before


# --- permissions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "page_status", "api_status"),
    [
        ("anonymous", 302, 401),
        ("outsider", 403, 403),
        ("labeler", 403, 403),
        ("researcher", 403, 403),
        ("admin", 302, 200),
    ],
)
def test_only_admins_send_ai_labels_to_review(login, project, ai, who, page_status, api_status):
    client = login(make_caller(who, project))

    page = client.post("/p/alpha/review/ai/", {"mode": "all"})
    after_page = _flagged()
    Judgment.objects.update(needs_review=False)
    api = client.post(
        "/api/projects/alpha/review/ai/", {"mode": "all"}, content_type="application/json"
    )

    assert (page.status_code, api.status_code) == (page_status, api_status)
    if who == "anonymous":
        assert page["Location"] == "/login/?next=/p/alpha/review/ai/"
    allowed = who == "admin"
    assert bool(after_page) == allowed
    assert bool(_flagged()) == allowed


def test_the_fill_page_takes_only_post(login, project, admin_member):
    assert login(admin_member).get("/p/alpha/review/ai/").status_code == 405


# --- with a real judge job ----------------------------------------------------------------


def test_a_tiny_local_judges_labels_reach_the_queue_the_report_and_exports(
    login, project, admin_member, tiny_model_dir
):
    """A pairwise job on a tiny model stores AI labels as annotation/judges/jobs.py does; they
    go to review, show both orders' P(A better) there, and count in agreement and exports."""
    from annotation.judges import jobs, services
    from annotation.judges.agreement import judge_agreement

    tasks = [make_task(project, texts=(f"good {i}", f"bad {i}")) for i in range(3)]
    ann = make_member(project, Role.LABELER, "ann")
    for task in tasks:
        human_judge(task, ann, choice="a")
    judge = services.judge_create(
        workspace=project.workspace,
        name="tiny",
        backend="local",
        model_version=make_version_at(tiny_model_dir),
        constitution=services.ensure_default_constitution(),
    )
    job = jobs.judge_job_start(project=project, judge=judge, kind="pairwise", options={})
    jobs.judge_job_execute(job_id=job.pk)

    sent = ai_review_queue_fill(project=project, mode="all", judge=judge.pk)
    html = login(admin_member).get("/p/alpha/review/").content.decode()

    stored = list(Judgment.objects.filter(source="ai").order_by("task_id"))
    assert sent == 3 == len(stored)
    first = stored[0]
    assert f'data-judgment="{first.pk}"' in html
    assert "<dd data-ai-judge>tiny</dd>" in html
    assert f"<dd data-ai-principle>{first.principle}</dd>" in html
    for number, order in enumerate(first.ai_details["orders"], start=1):
        assert f'<dd data-ai-order="{number}">P(A better) = {order["p_x"]:.3f}' in html
    [row] = judge_agreement(project=project)
    assert (row["judge"], row["compared"]) == ("tiny", 3)
    assert row["accuracy"] == sum(j.choice == "a" for j in stored) / 3
    assert [r["source"] for r in dpo_rows(project, ai="include")].count("ai") == sum(
        j.choice in ("a", "b") for j in stored
    )
