"""A model version against the incumbent: its head-to-head record from battles, shown on
its page before a promotion and stored with the promotion or retirement (pages and API).
The routes' permission table is tests/models_registry/test_registry_pages.py's, with the
registry's other version routes."""

import re

import pytest

from annotation.leaderboard import ratings_math
from annotation.leaderboard.selectors import evidence_against_incumbent, head_to_head_evidence
from annotation.leaderboard.services import promote_with_evidence, retire_with_evidence
from annotation.models import Judgment, Response
from annotation.projects.services import ensure_project
from models_registry import selectors
from models_registry.models import ModelVersion, StateChange
from tests.factories import make_prompt, make_version


def _in(project, version) -> ModelVersion:
    """The version read afresh, with its state and promotion time in ``project``."""
    fresh = ModelVersion.objects.get(pk=version.pk)
    return selectors.overlay_project_state([fresh], project=project)[0]


def battle(project, labeler, first, second, choice, *, source="human", kind="comparison"):
    """A judgment between replies of ``first`` (shown as A) and ``second`` (B)."""
    prompt = make_prompt(project)
    a = Response.objects.create(prompt=prompt, model_version=first, text="reply a")
    b = Response.objects.create(prompt=prompt, model_version=second, text="reply b")
    return Judgment.objects.create(
        kind=kind,
        project=project,
        prompt=prompt,
        shown_order=[a.pk, b.pk],
        response_a=a,
        response_b=b,
        choice=choice,
        labeler=labeler,
        source=source,
    )


@pytest.fixture
def pair(db):
    """The incumbent (serving) and a candidate trained from it."""
    incumbent = make_version("incumbent")
    candidate = make_version(
        "candidate", state=ModelVersion.State.CANDIDATE, method="dpo", parent=incumbent
    )
    return incumbent, candidate


@pytest.fixture
def known_battles(project, other_project, labeler, pair):
    """Candidate vs incumbent, counted: 6 wins, 2 losses, 2 draws (win rate 0.7 over 10),
    from either side of the screen and in two projects of the workspace; plus judgments
    that must not count (among them one in another workspace's project)."""
    incumbent, candidate = pair
    sibling = ensure_project(slug="sibling", name="Sibling", workspace=project.workspace)
    for _ in range(3):
        battle(project, labeler, candidate, incumbent, "a")
    battle(sibling, labeler, candidate, incumbent, "a", kind="arena")
    battle(other_project, labeler, candidate, incumbent, "b", kind="arena")
    battle(project, labeler, incumbent, candidate, "b")
    battle(project, labeler, incumbent, candidate, "b", kind="arena")
    battle(project, labeler, candidate, incumbent, "b")
    battle(project, labeler, incumbent, candidate, "a")
    battle(project, labeler, incumbent, candidate, "both_bad")
    wrong = battle(project, labeler, candidate, incumbent, "b")
    correction = battle(project, labeler, candidate, incumbent, "tie", source="review")
    correction.supersedes = wrong
    correction.save(update_fields=["supersedes"])
    # Not battles between the two: an AI judge, a third model, one model against itself,
    # a person's reply, and a vote without a choice.
    battle(project, labeler, candidate, incumbent, "a", source="ai")
    battle(project, labeler, candidate, make_version("third", state="candidate"), "a")
    prompt = make_prompt(project)
    Judgment.objects.create(
        kind="comparison",
        project=project,
        prompt=prompt,
        response_a=Response.objects.create(prompt=prompt, model_version=candidate, text="x"),
        response_b=Response.objects.create(prompt=prompt, author="person", text="y"),
        choice="a",
        labeler=labeler,
    )
    battle(project, labeler, candidate, incumbent, "")
    return incumbent, candidate


def _expected_interval() -> tuple[int, int]:
    records = [("c", "i", "a")] * 6 + [("c", "i", "b")] * 2 + [("c", "i", "tie")] * 2
    _, low, high, _ = ratings_math.head_to_head(
        ratings_math.Battles.from_records(records), "c", "i", rounds=2000, seed=0
    )
    return round(round(low, 4) * 100), round(round(high, 4) * 100)


# --- selectors and services -------------------------------------------------------------


def test_the_head_to_head_counts_only_current_human_battles_between_the_two(project, known_battles):
    incumbent, candidate = known_battles
    low, high = _expected_interval()

    evidence = head_to_head_evidence(candidate, incumbent, workspace=project.workspace)

    assert evidence["battles"] == 10
    assert evidence["win_rate"] == 0.7
    assert (round(evidence["low"] * 100), round(evidence["high"] * 100)) == (low, high)
    assert 0.40 < evidence["low"] < 0.5 < 0.85 < evidence["high"] < 0.95
    assert (evidence["incumbent"], evidence["incumbent_name"]) == (incumbent.pk, "incumbent")
    reverse = head_to_head_evidence(incumbent, candidate, workspace=project.workspace)
    assert (reverse["win_rate"], reverse["battles"]) == (0.3, 10)


def test_the_head_to_head_of_another_workspace_counts_only_its_own_battles(
    project, other_project, known_battles
):
    incumbent, candidate = known_battles

    elsewhere = head_to_head_evidence(candidate, incumbent, workspace=other_project.workspace)

    assert (elsewhere["win_rate"], elsewhere["battles"]) == (0.0, 1)


def test_only_a_policy_other_than_the_incumbent_has_a_record_against_it(project, known_battles):
    incumbent, candidate = known_battles
    reward = make_version("rm", kind="reward", state=ModelVersion.State.CANDIDATE)

    assert evidence_against_incumbent(candidate, project=project) == head_to_head_evidence(
        candidate, incumbent, workspace=project.workspace
    )
    assert evidence_against_incumbent(candidate, project=project)["battles"] == 10
    assert evidence_against_incumbent(incumbent, project=project) == {}
    assert evidence_against_incumbent(reward, project=project) == {}


def test_promotion_records_the_evidence_and_changes_the_incumbent(
    project, other_project, known_battles, admin_member
):
    incumbent, candidate = known_battles

    change = promote_with_evidence(
        project=project, version=candidate, user=admin_member, note=" beats it "
    )

    here = _in(project, candidate)
    assert here.state == "serving"
    assert here.promoted_at is not None
    assert selectors.incumbent(project=project) == candidate
    assert _in(project, incumbent).state == "serving"
    # Only the project's state changed: another project keeps its incumbent.
    assert selectors.incumbent(project=other_project) == incumbent
    assert _in(other_project, candidate).state == "candidate"
    assert change.project == project
    assert (change.from_state, change.to_state, change.incumbent) == (
        "candidate",
        "serving",
        incumbent,
    )
    assert (change.user, change.note) == (admin_member, "beats it")
    assert change.evidence == {
        "incumbent": incumbent.pk,
        "incumbent_name": "incumbent",
        "win_rate": 0.7,
        "low": change.evidence["low"],
        "high": change.evidence["high"],
        "battles": 10,
        "source": "human",
    }
    assert (
        round(change.evidence["low"] * 100),
        round(change.evidence["high"] * 100),
    ) == _expected_interval()


def test_promotion_without_battles_records_none_and_with_no_incumbent_records_nothing(project):
    first = make_version("first", state=ModelVersion.State.CANDIDATE)

    no_incumbent = promote_with_evidence(project=project, version=first)
    second = make_version("second", state=ModelVersion.State.CANDIDATE)
    no_battles = promote_with_evidence(project=project, version=second)

    assert (no_incumbent.incumbent, no_incumbent.evidence) == (None, {})
    assert no_battles.incumbent == first
    assert no_battles.evidence["battles"] == 0
    assert no_battles.evidence["win_rate"] is None


def test_retiring_the_incumbent_hands_over_to_the_previous_serving_policy(project, known_battles):
    incumbent, candidate = known_battles
    promote_with_evidence(project=project, version=candidate)

    handed_over = retire_with_evidence(project=project, version=candidate)
    promote_with_evidence(project=project, version=candidate)
    with_evidence = retire_with_evidence(project=project, version=incumbent)

    assert (handed_over.incumbent, handed_over.evidence) == (candidate, {})
    assert with_evidence.incumbent == candidate
    assert (with_evidence.evidence["win_rate"], with_evidence.evidence["battles"]) == (0.3, 10)
    assert selectors.incumbent(project=project) == candidate


# --- pages ---------------------------------------------------------------------------


def test_the_promote_panel_shows_the_win_rate_before_the_click(login, admin_member, known_battles):
    incumbent, candidate = known_battles
    low, high = _expected_interval()

    page = login(admin_member).get(f"/p/alpha/models/{candidate.pk}/").content.decode()

    assert "<strong data-win-rate>70%</strong>" in page
    assert "<strong data-battles>10</strong> battles" in page
    assert f"<span data-interval>{low}% – {high}%</span>" in page
    assert "The interval includes 50%" in page
    assert f'action="/p/alpha/models/{candidate.pk}/promote/confirm/"' in page


def test_the_promote_panel_says_when_there_are_no_battles(login, admin_member, pair):
    incumbent, candidate = pair
    client = login(admin_member)

    page = client.get(f"/p/alpha/models/{candidate.pk}/").content.decode()
    incumbent_page = client.get(f"/p/alpha/models/{incumbent.pk}/").content.decode()

    assert "No battles yet against incumbent: send it to the arena first." in page
    assert 'id="promote"' not in incumbent_page
    assert 'id="incumbent-mark"' in incumbent_page


def test_promoting_from_the_page_records_and_shows_the_change(
    login, project, admin_member, known_battles
):
    incumbent, candidate = known_battles
    client = login(admin_member)

    confirmed = {"note": "wins", "confirm": "1", "incumbent": incumbent.pk}
    answer = client.post(f"/p/alpha/models/{candidate.pk}/promote/", confirmed)

    assert answer.status_code == 302
    assert answer["Location"] == f"/p/alpha/models/{candidate.pk}/"
    assert selectors.incumbent(project=project) == candidate
    page = client.get(answer["Location"]).content.decode()
    assert "candidate is now serving." in page
    row = re.search(r'<tr data-to-state="serving">(.*?)</tr>', page, re.S).group(1)
    assert "Candidate → Serving" in row
    assert "adm" in row
    assert "70% of 10" in row
    assert "wins" in row


def test_the_confirmation_shows_the_record_and_warns_when_the_interval_includes_half(
    login, admin_member, known_battles
):
    incumbent, candidate = known_battles
    low, high = _expected_interval()

    answer = login(admin_member).get(f"/p/alpha/models/{candidate.pk}/promote/confirm/")

    page = answer.content.decode()
    assert answer.status_code == 200
    assert "<td data-win-rate>70.0%</td>" in page
    assert re.search(rf"<td data-interval>{low}\.\d% – {high}\.\d%</td>", page)
    assert "<td data-battles>10</td>" in page
    assert "Not distinguishable from the incumbent:" in page
    assert '<input type="hidden" name="confirm" value="1">' in page
    assert f'<input type="hidden" name="incumbent" value="{incumbent.pk}">' in page
    assert ModelVersion.objects.get(pk=candidate.pk).state == "candidate"  # a look changes nothing


def test_the_confirmation_has_no_warning_when_the_candidate_wins_beyond_doubt(
    login, project, admin_member, labeler, pair
):
    incumbent, candidate = pair
    for _ in range(20):
        battle(project, labeler, candidate, incumbent, "a")

    page = login(admin_member).get(f"/p/alpha/models/{candidate.pk}/promote/confirm/")

    html = page.content.decode()
    assert "<td data-win-rate>100.0%</td>" in html and "<td data-battles>20</td>" in html
    assert "Better than the incumbent: the whole interval lies above 50%." in html
    assert 'id="warning"' not in html and "Not distinguishable" not in html


def test_the_confirmation_warns_when_there_are_no_battles_and_refuses_the_incumbent(
    login, admin_member, pair
):
    incumbent, candidate = pair
    client = login(admin_member)

    page = client.get(f"/p/alpha/models/{candidate.pk}/promote/confirm/").content.decode()
    itself = client.get(f"/p/alpha/models/{incumbent.pk}/promote/confirm/").content.decode()

    assert "Nothing shows that candidate is better than incumbent" in page
    assert "incumbent is already the incumbent." in itself
    assert 'name="confirm"' not in itself


@pytest.mark.parametrize(
    ("fields", "status", "says"),
    [
        ({"note": "wins"}, 400, "Nothing changed: a promotion from this page needs confirming."),
        ({"confirm": "yes"}, 400, "Nothing changed: a promotion from this page needs confirming."),
        ({"confirm": "1", "incumbent": "0"}, 409, "the incumbent changed since this page"),
    ],
)
def test_a_promotion_without_confirmation_changes_nothing(
    login, project, admin_member, known_battles, fields, status, says
):
    incumbent, candidate = known_battles

    answer = login(admin_member).post(f"/p/alpha/models/{candidate.pk}/promote/", fields)

    assert answer.status_code == status
    page = answer.content.decode()
    assert says in page
    assert "<td data-battles>10</td>" in page  # the confirmation step again
    assert selectors.incumbent(project=project) == incumbent
    assert ModelVersion.objects.get(pk=candidate.pk).state == "candidate"
    assert StateChange.objects.count() == 0


def test_a_refused_retirement_on_the_page_says_why_and_changes_nothing(login, admin_member, pair):
    incumbent, _ = pair

    answer = login(admin_member).post(f"/p/alpha/models/{incumbent.pk}/retire/", {"note": ""})

    assert answer.status_code == 400
    assert "incumbent is the last serving policy" in answer.content.decode()
    assert ModelVersion.objects.get(pk=incumbent.pk).state == "serving"
    assert StateChange.objects.count() == 0


def test_a_too_long_note_is_refused(login, admin_member, pair):
    _, candidate = pair

    answer = login(admin_member).post(
        f"/p/alpha/models/{candidate.pk}/promote/", {"note": "x" * 2001, "confirm": "1"}
    )

    assert answer.status_code == 400
    assert "at most 2000 characters" in answer.content.decode()
    assert ModelVersion.objects.get(pk=candidate.pk).state == "candidate"


def test_a_researcher_sees_the_page_without_actions(login, researcher, known_battles):
    _, candidate = known_battles

    answer = login(researcher).get(f"/p/alpha/models/{candidate.pk}/")

    page = answer.content.decode()
    assert answer.status_code == 200
    assert 'id="promote"' not in page
    assert 'id="retire"' not in page
    assert "candidate" in page


# --- API -------------------------------------------------------------------------------


def test_promote_and_retire_through_the_api(login, admin_member, known_battles):
    incumbent, candidate = known_battles
    client = login(admin_member)
    base = "/api/projects/alpha/model-versions"

    promoted = client.post(f"{base}/{candidate.pk}/promote/", {"note": "api"})
    again = client.post(f"{base}/{candidate.pk}/promote/")
    retired = client.post(f"{base}/{incumbent.pk}/retire/")
    last = client.post(f"{base}/{candidate.pk}/retire/")
    missing = client.post(f"{base}/999999/retire/")

    assert promoted.status_code == 200
    assert promoted.json()["state"] == "serving"
    assert promoted.json()["change"]["evidence"]["win_rate"] == 0.7
    assert promoted.json()["change"]["user"] == "adm"
    assert (again.status_code, again.json()) == (
        400,
        {"detail": "candidate is already the incumbent."},
    )
    assert (retired.status_code, retired.json()["state"]) == (200, "retired")
    assert last.status_code == 400
    assert last.json()["detail"].startswith("candidate is the last serving policy")
    assert missing.status_code == 404
    assert StateChange.objects.count() == 2
