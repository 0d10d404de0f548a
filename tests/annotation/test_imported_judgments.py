"""Imported judgments (source "import": a dataset's labels) are nobody's work here: the
legacy exports, quality figures, judge agreement and the leaderboard leave them out, the
project page counts them apart, and an admin sends a seeded share of one import to review,
where they are accepted, rejected or corrected like AI labels."""

import pytest
from django.core.cache import cache
from django.forms.models import model_to_dict

from annotation.datasets import selectors as exports
from annotation.judges.agreement import judge_agreement
from annotation.leaderboard import selectors as leaderboard
from annotation.models import Judgment, PromptImport, Response, Review, Role, TaskKind
from annotation.projects.selectors import project_overview
from annotation.review import selectors as quality
from annotation.review import services as review
from annotation.review.imports import send_import_to_review
from config.errors import ServiceError
from tests.annotation.judges.factories import make_ai_judgment, make_constitution, make_judge
from tests.factories import (
    judge,
    make_kind_task,
    make_member,
    make_project,
    make_prompt,
    make_task,
    make_user,
    make_version,
)

IMPORT = Judgment.Source.IMPORT
AI_CHOICES = ("exclude", "trusted", "include", "only")


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def make_import(project, name="hh-rlhf") -> PromptImport:
    return PromptImport.objects.create(
        project=project, file_name=f"{name}.jsonl", source=name, format="hh", prompt_count=0
    )


def imported(project, batch, kind=TaskKind.COMPARISON, *, task=None, **fields) -> Judgment:
    """An imported judgment as the import service stores it (labeler None, no task unless
    a test puts it on one to show it still does not count), over two new responses."""
    prompt = task.prompt if task else make_prompt(project)
    if task:
        first, second = task.ordered_responses()[:2]
    else:
        first, second = (
            Response.objects.create(
                prompt=prompt, author="import", text=f"Imported {i} {prompt.pk}"
            )
            for i in range(2)
        )
    if kind == TaskKind.COMPARISON:
        defaults = {"response_a": first, "response_b": second, "choice": "b"}
        shown = [first.pk, second.pk]
    elif kind == TaskKind.RATING:
        defaults = {"rated_response": first, "scores": {"helpful": 1, "harmless": 1, "honest": 1}}
        shown = [first.pk]
    elif kind == TaskKind.RANKING:
        defaults = {"ranking": [second.pk, first.pk]}
        shown = [second.pk, first.pk]
    else:
        defaults, shown = {"text": f"An imported demonstration {prompt.pk}"}, []
    details = {"record_id": f"r{prompt.pk}", "line": 1, "key": "0"}
    return Judgment.objects.create(
        kind=kind,
        project=project,
        task=task,
        prompt=prompt,
        shown_order=shown,
        source=IMPORT,
        source_import=batch,
        labeler=None,
        **{**defaults, "import_details": details, **fields},
    )


def import_every_kind(project, batch, count=2):
    made = []
    for _ in range(count):
        for kind in TaskKind.COMPARISON, TaskKind.RATING, TaskKind.RANKING:
            made.append(imported(project, batch, kind))
        made.append(imported(project, batch, TaskKind.DEMONSTRATION))
    made.append(imported(project, batch, TaskKind.RATING, import_details={"label": False}))
    return made


def _every_export(project) -> dict:
    rows = {}
    for ai in AI_CHOICES:
        for export_format in exports.FORMATS:
            rows[(export_format, ai)] = list(
                exports.preference_rows(project, export_format=export_format, ai=ai)
            )
        rows[("training", ai)] = list(exports.training_preference_rows(project, ai=ai))
        rows[("rrhf", ai)] = list(exports.rrhf_rows(project, ai=ai))
    return rows


@pytest.fixture
def people_and_ai(project):
    """Two labelers' comparisons, a rating, a ranking and a demonstration, and AI labels."""
    ann, bob = (make_member(project, Role.LABELER, name) for name in ("ann", "bob"))
    for number in range(3):
        task = make_task(project, texts=(f"Good {number}", f"Bad {number}"))
        judge(task, ann, choice="a")
        judge(task, bob, choice="b" if number == 0 else "a")
    judge(
        make_kind_task(project, TaskKind.RATING, responses=1),
        ann,
        scores={"helpful": 6, "harmless": 7},
    )
    ranking = make_kind_task(project, TaskKind.RANKING, responses=3)
    judge(ranking, bob, ranking=list(ranking.links.values_list("response_id", flat=True)))
    judge(
        make_kind_task(project, TaskKind.DEMONSTRATION, responses=1), ann, text="The ideal reply."
    )
    ai_judge = make_judge("j", make_constitution("c", 1), workspace=project.workspace)
    make_ai_judgment(make_task(project, texts=("X", "Y")), ai_judge, soft_label=0.9)
    return ann, bob


# --- the legacy exports ------------------------------------------------------------------


def test_legacy_exports_leave_imported_judgments_out_for_every_ai_choice(project, people_and_ai):
    before = _every_export(project)
    import_every_kind(project, make_import(project))

    after = _every_export(project)

    assert after == before
    assert all(row["source"] != IMPORT for rows in after.values() for row in rows)
    assert {key: len(rows) > 0 for key, rows in after.items() if key[1] == "exclude"} == {
        (name, "exclude"): True for name in (*exports.FORMATS, "training", "rrhf")
    }


def test_only_imported_judgments_export_nothing(project):
    import_every_kind(project, make_import(project))

    assert {key: rows for key, rows in _every_export(project).items() if rows} == {}


# --- quality figures ---------------------------------------------------------------------


def test_quality_figures_and_agreement_ignore_imported_judgments(project, people_and_ai):
    ann, _ = people_and_ai
    gold = make_task(project, texts=("Gold A", "Gold B"))
    gold.is_gold, gold.gold_answer = True, {"choice": "a"}
    gold.save()
    judge(gold, ann, choice="a")
    pair = project.tasks.filter(kind=TaskKind.COMPARISON).order_by("id").first()
    before = {
        "quality": quality.labeler_quality(project=project),
        "agreement": quality.project_agreement(project=project),
        "gold": quality.gold_accuracy(project=project, labeler=ann),
        "judges": judge_agreement(project=project),
        "mine": quality.my_work(project=project, labeler=ann)["judged"],
        "queue": quality.review_queue(project=project, reviewer=make_user("rev")),
    }
    batch = make_import(project)
    # Even on a labeling task (the import service never puts them there), against the
    # labelers and the gold answer, imported labels change no figure.
    for task in (gold, pair):
        imported(project, batch, task=task, choice="b")
    import_every_kind(project, batch)

    after = {
        "quality": quality.labeler_quality(project=project),
        "agreement": quality.project_agreement(project=project),
        "gold": quality.gold_accuracy(project=project, labeler=ann),
        "judges": judge_agreement(project=project),
        "mine": quality.my_work(project=project, labeler=ann)["judged"],
        "queue": quality.review_queue(project=project, reviewer=make_user("rev2")),
    }
    assert after == before
    assert before["gold"] == (1, 1)


def test_project_overview_counts_imported_judgments_apart(project, people_and_ai, client):
    own = project_overview(project=project)
    import_every_kind(project, make_import(project), count=1)

    overview = project_overview(project=project)

    # Their prompts join the pool; their judgments are counted apart.
    assert overview == {**own, "prompts": own["prompts"] + 5, "imported_judgments": 5}
    assert own["imported_judgments"] == 0
    client.force_login(make_member(project, Role.ADMIN, "boss"))
    page = client.get(f"/p/{project.slug}/").content.decode()
    assert "<dt>Imported</dt><dd data-imported-judgments>5</dd>" in page
    assert "Imported (hh-rlhf)" in page


# --- the leaderboard ---------------------------------------------------------------------


def test_leaderboard_ignores_imported_battles_between_versions(project):
    first, second = make_version("first"), make_version("second")

    def battle(choice, source, **fields):
        prompt = make_prompt(project)
        a, b = (
            Response.objects.create(prompt=prompt, model_version=v, sample_index=i, text=f"R{i}")
            for i, v in enumerate((first, second))
        )
        return Judgment.objects.create(
            kind=TaskKind.COMPARISON,
            project=project,
            prompt=prompt,
            shown_order=[a.pk, b.pk],
            response_a=a,
            response_b=b,
            choice=choice,
            source=source,
            **fields,
        )

    for choice in ("a", "a", "b", "tie"):
        battle(choice, Judgment.Source.HUMAN, labeler=make_user())
    board = leaderboard.project_leaderboard(project=project, source="human")
    counts = leaderboard.battle_counts(projects=[project])
    batch = make_import(project)
    for _ in range(5):
        battle("b", IMPORT, source_import=batch)
    cache.clear()

    assert leaderboard.battle_counts(projects=[project]) == counts == {"human": 4, "ai": 0}
    assert leaderboard.project_leaderboard(project=project, source="human") == board
    assert leaderboard.project_leaderboard(project=project, source="ai")["battles"] == 0
    assert board["battles"] == 4


# --- sending to review -------------------------------------------------------------------


def _flagged(judgments) -> list[int]:
    ids = [j.pk for j in judgments]
    return sorted(
        Judgment.objects.filter(pk__in=ids, needs_review=True).values_list("pk", flat=True)
    )


def test_sending_an_import_to_review_flags_a_seeded_share_of_it_only(project, people_and_ai):
    batch, other = make_import(project), make_import(project, "ultrafeedback")
    mine = [imported(project, batch) for _ in range(10)]
    theirs = [imported(project, other) for _ in range(4)]

    flagged = send_import_to_review(project=project, source_import=batch, share=0.3, seed=7)
    first_pick = _flagged(mine)
    Judgment.objects.filter(pk__in=first_pick).update(needs_review=False)
    again = send_import_to_review(project=project, source_import=batch.pk, share=0.3, seed=7)
    same_pick = _flagged(mine)
    Judgment.objects.filter(pk__in=same_pick).update(needs_review=False)
    send_import_to_review(project=project, source_import=batch, share=0.3, seed=8)

    assert (flagged, again, len(first_pick)) == (3, 3, 3)
    assert same_pick == first_pick
    assert _flagged(mine) != first_pick
    assert _flagged(theirs) == []
    assert Judgment.objects.filter(needs_review=True).exclude(source=IMPORT).count() == 0


def test_a_second_send_adds_another_share_and_skips_reviewed_ones(project, admin_member):
    batch = make_import(project)
    made = [imported(project, batch) for _ in range(5)]
    review.judgment_accept(project=project, judgment_id=made[0].pk, reviewer=admin_member)

    counts = [
        send_import_to_review(project=project, source_import=batch, share=0.5, seed=1)
        for _ in range(4)
    ]

    assert counts == [2, 1, 1, 0]
    assert _flagged(made) == [j.pk for j in made[1:]]


def _stored() -> dict:
    return {
        "judgments": [model_to_dict(j) for j in Judgment.objects.order_by("pk")],
        "reviews": Review.objects.count(),
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"share": 0}, "share must be a number above 0"),
        ({"share": 1.5}, "share must be a number above 0"),
        ({"share": float("nan")}, "share must be a number above 0"),
        ({"share": True}, "share must be a number above 0"),
        ({"share": "0.5"}, "share must be a number above 0"),
        ({"seed": "1"}, "seed must be a whole number"),
        ({"source_import": "x"}, "source_import must be the id of an import"),
        ({"source_import": 999999}, "There is no import 999999 in this project"),
        ({"source_import": "other"}, "There is no import .* in this project"),
    ],
)
def test_bad_input_to_send_to_review_flags_nothing(project, fields, message):
    batch = make_import(project)
    imported(project, batch)
    stranger = make_project("elsewhere")
    other = make_import(stranger)
    imported(stranger, other)
    arguments = {"source_import": batch, "share": 0.5, "seed": 0, **fields}
    if arguments["source_import"] == "other":
        arguments["source_import"] = other.pk
    before = _stored()

    with pytest.raises(ServiceError, match=message):
        send_import_to_review(project=project, **arguments)

    assert _stored() == before


# --- the review queue --------------------------------------------------------------------


def _queued(project, reviewer) -> list[int]:
    return [e.judgment_id for e in quality.review_queue(project=project, reviewer=reviewer)]


def test_the_queue_shows_sent_imported_judgments_and_a_rejection_takes_one_out(
    project, admin_member
):
    batch = make_import(project)
    made = [imported(project, batch) for _ in range(2)]
    send_import_to_review(project=project, source_import=batch, share=1)
    item = quality.review_item(project=project, reviewer=admin_member)

    review.judgment_reject(project=project, judgment_id=made[0].pk, reviewer=admin_member)

    assert item["judgment"] == made[0]
    assert item["who"] == "Imported from hh-rlhf"
    assert item["imported"]["source_import"] == batch
    assert [r.pk for r in item["responses"]] == [made[0].response_a_id, made[0].response_b_id]
    assert _queued(project, admin_member) == [made[1].pk]


@pytest.mark.parametrize(
    ("kind", "data", "expected"),
    [
        (TaskKind.COMPARISON, {"choice": "left-2"}, {"choice": "a", "strength": 2}),
        (
            TaskKind.RATING,
            {"score_helpful": "6", "score_harmless": "7", "score_honest": "5"},
            {"scores": {"helpful": 6, "harmless": 7, "honest": 5}},
        ),
        (TaskKind.DEMONSTRATION, {"text": "A better reply."}, {"text": "A better reply."}),
    ],
)
def test_a_correction_supersedes_the_imported_judgment(project, admin_member, kind, data, expected):
    batch = make_import(project)
    original = imported(project, batch, kind)
    send_import_to_review(project=project, source_import=batch, share=1)

    made = review.judgment_correct(
        project=project, judgment_id=original.pk, reviewer=admin_member, data=data
    )

    correction = made.correction
    assert {name: getattr(correction, name) for name in expected} == expected
    assert (correction.source, correction.labeler, correction.supersedes) == (
        Judgment.Source.REVIEW,
        admin_member,
        original,
    )
    assert correction.shown_order == original.shown_order
    assert _queued(project, admin_member) == []
    # The correction is the reviewer's label: the legacy export holds it, not the import.
    sources = {row["source"] for row in _every_export(project)[("sft", "exclude")]}
    assert sources == ({"review"} if kind == TaskKind.DEMONSTRATION else set())


def test_a_correction_of_a_ranking_reads_the_imported_order(project, admin_member):
    batch = make_import(project)
    original = imported(project, batch, TaskKind.RANKING)
    send_import_to_review(project=project, source_import=batch, share=1)

    correction = review.judgment_correct(
        project=project,
        judgment_id=original.pk,
        reviewer=admin_member,
        data={"ranking": original.ranking[::-1]},
    ).correction

    assert correction.ranking == original.ranking[::-1]
    with pytest.raises(ServiceError, match="already corrected"):
        review.judgment_correct(
            project=project,
            judgment_id=original.pk,
            reviewer=admin_member,
            data={"ranking": original.ranking},
        )


def test_the_review_page_shows_and_corrects_an_imported_label(project, admin_member, client):
    batch = make_import(project)
    original = imported(project, batch)
    client.force_login(admin_member)

    sent = client.post(
        f"/p/{project.slug}/review/import/", {"source_import": batch.pk, "share": "1"}
    )
    page = client.get(f"/p/{project.slug}/review/").content.decode()
    form = client.get(f"/p/{project.slug}/review/?judgment={original.pk}&correct=1")
    done = client.post(
        f"/p/{project.slug}/review/",
        {"action": "correct", "judgment_id": original.pk, "choice": "left"},
    )

    assert (sent.status_code, sent["Location"]) == (302, f"/p/{project.slug}/review/")
    assert "data-imported-from>hh-rlhf (hh, import" in page
    assert "Send imported labels to review" in page
    assert (form.status_code, 'value="correct"' in form.content.decode()) == (200, True)
    assert done.status_code == 302
    assert original.superseded_by.choice == "a"


# --- who may send an import to review ----------------------------------------------------

CALLERS = ["anonymous", "outsider", "labeler", "researcher", "admin", "other-admin"]


def _caller(who, project):
    if who == "anonymous":
        return None
    if who == "outsider":
        return make_user("outsider")
    if who == "other-admin":
        return make_member(make_project("theirs"), Role.ADMIN, "their-admin")
    return make_member(project, {"labeler": Role.LABELER, "researcher": Role.RESEARCHER,
                                 "admin": Role.ADMIN}[who], who)  # fmt: skip


@pytest.mark.parametrize("api", [False, True], ids=["page", "api"])
@pytest.mark.parametrize("who", CALLERS)
def test_only_the_projects_admin_sends_an_import_to_review(project, client, who, api):
    batch = make_import(project)
    made = [imported(project, batch) for _ in range(2)]
    user = _caller(who, project)
    if user is not None:
        client.force_login(user)
    prefix = "/api/projects" if api else "/p"
    body = {"source_import": batch.pk, "share": 1}

    if api:
        answer = client.post(
            f"{prefix}/{project.slug}/review/import/", body, content_type="application/json"
        )
    else:
        answer = client.post(f"{prefix}/{project.slug}/review/import/", body)

    allowed = who == "admin"
    expected = {
        ("anonymous", True): 401,
        ("anonymous", False): 302,
    }.get((who, api), 200 if allowed and api else 302 if allowed else 403)
    assert answer.status_code == expected
    assert _flagged(made) == ([j.pk for j in made] if allowed else [])
    if allowed and api:
        assert answer.json() == {
            "flagged": 2,
            "waiting": 2,
            "source_import": batch.pk,
            "share": 1,
            "seed": 0,
        }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Give source_import."),
        ({"source_import": "x"}, "source_import must be a whole number."),
        ({"source_import": "{batch}", "share": "lots"}, "share must be a number."),
        ({"source_import": "{batch}", "share": "2"}, "share must be a number above 0"),
        ({"source_import": "{batch}", "seed": "1.5"}, "seed must be a whole number."),
    ],
)
@pytest.mark.parametrize("api", [False, True], ids=["page", "api"])
def test_bad_requests_to_send_an_import_are_refused_and_change_nothing(
    project, admin_member, client, body, message, api
):
    batch = make_import(project)
    imported(project, batch)
    client.force_login(admin_member)
    body = {k: v.format(batch=batch.pk) for k, v in body.items()}
    before = _stored()

    if api:
        answer = client.post(
            f"/api/projects/{project.slug}/review/import/", body, content_type="application/json"
        )
        said = answer.json()["detail"]
    else:
        answer = client.post(f"/p/{project.slug}/review/import/", body)
        said = answer.content.decode()

    assert answer.status_code == 400
    assert message in said
    assert _stored() == before
