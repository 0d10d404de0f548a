"""The leaderboard: battles from judgments, human and AI judges apart, the pages, the API
and who may see them."""

import uuid

import numpy as np
import pytest
from django.core.cache import cache

from annotation.labeling.services import assignment_next, comparison_submit, ensure_comparison_task
from annotation.leaderboard import ratings_math, selectors
from annotation.models import Judgment, Response, Role, TaskKind
from annotation.projects.services import ensure_membership
from annotation.review.services import judgment_correct, judgment_reject
from config.errors import ServiceError
from tests.factories import make_member, make_project, make_prompt, make_user, make_version

HUMAN, AI, REVIEW = Judgment.Source.HUMAN, Judgment.Source.AI, Judgment.Source.REVIEW


@pytest.fixture(autouse=True)
def _fresh_cache():
    # Test databases reuse primary keys, so a cached board could outlive its rows.
    cache.clear()
    yield
    cache.clear()


def replies(project, first, second):
    """Two replies to a new prompt, by the given versions (None: written by a person)."""
    prompt = make_prompt(project)
    return prompt, *(
        Response.objects.create(
            prompt=prompt,
            model_version=version,
            author="" if version else "person",
            sample_index=index,
            text=f"Reply {index}",
        )
        for index, version in enumerate((first, second))
    )


def vote(project, first, second, choice, *, kind=TaskKind.COMPARISON, source=HUMAN, **fields):
    """A stored judgment of `first` (A) against `second` (B)."""
    prompt, response_a, response_b = replies(project, first, second)
    return Judgment.objects.create(
        kind=kind,
        project=project,
        prompt=prompt,
        shown_order=[response_a.pk, response_b.pk],
        response_a=response_a,
        response_b=response_b,
        choice=choice,
        source=source,
        **fields,
    )


def battle_records(project, source="human"):
    battles, _ = selectors.battles_for(projects=[project], source=source)
    return [
        (battles.models[a], battles.models[b], outcome)
        for a, b, outcome in zip(
            battles.model_a.tolist(),
            battles.model_b.tolist(),
            battles.outcome.tolist(),
            strict=True,
        )
    ]


def judged_task(project, labeler, first, second, *, winner) -> Judgment:
    """A comparison task between two versions' replies, judged through the service: the
    labeler clicks whichever side shows the winner's reply."""
    _, response_a, response_b = replies(project, first, second)
    ensure_comparison_task(project=project, first=response_a, second=response_b)
    assignment = assignment_next(project=project, labeler=labeler)
    left = Response.objects.get(pk=assignment.shown_order[0])
    comparison_submit(
        project=project,
        labeler=labeler,
        assignment_id=assignment.pk,
        side="left" if left.model_version == winner else "right",
        client_id=uuid.uuid4(),
    )
    return Judgment.objects.get(labeler=labeler, task=assignment.task)


# --- which judgments are battles ----------------------------------------------------------


def test_battles_are_current_votes_between_two_different_versions(project, labeler):
    alpha, beta, gamma = make_version("alpha-1"), make_version("beta-1"), make_version("gamma-1")
    vote(project, alpha, beta, "a")
    vote(project, beta, gamma, "b", kind=TaskKind.ARENA)
    vote(project, gamma, alpha, "tie")
    vote(project, alpha, gamma, "both_bad", kind=TaskKind.ARENA)
    # Not battles: one version on both sides, a person's reply, no choice, another kind.
    vote(project, alpha, alpha, "a")
    vote(project, alpha, None, "a")
    vote(project, alpha, beta, "")
    vote(project, alpha, beta, "a", kind=TaskKind.RANKING)
    # A superseded vote gives way to its correction.
    old = vote(project, beta, gamma, "a")
    vote(project, beta, gamma, "b", source=REVIEW, supersedes=old)

    records = battle_records(project)

    assert records == [
        ("alpha-1", "beta-1", ratings_math.A_WINS),
        ("beta-1", "gamma-1", ratings_math.B_WINS),
        ("gamma-1", "alpha-1", ratings_math.TIE),
        ("alpha-1", "gamma-1", ratings_math.BOTH_BAD),
        ("beta-1", "gamma-1", ratings_math.B_WINS),
    ]


def test_reviewers_rejections_and_corrections_change_the_battles(project, labeler, admin_member):
    alpha, beta = make_version("alpha-1"), make_version("beta-1")
    kept = judged_task(project, labeler, alpha, beta, winner=alpha)
    rejected = judged_task(project, labeler, alpha, beta, winner=alpha)
    corrected = judged_task(project, labeler, alpha, beta, winner=alpha)
    assert battle_records(project) == [("alpha-1", "beta-1", ratings_math.A_WINS)] * 3

    judgment_reject(project=project, judgment_id=rejected.pk, reviewer=admin_member)
    review = judgment_correct(
        project=project, judgment_id=corrected.pk, reviewer=admin_member, data={"choice": "right"}
    )

    assert kept.choice == "a" and review.correction.source == REVIEW
    assert battle_records(project) == [
        ("alpha-1", "beta-1", ratings_math.A_WINS),
        ("alpha-1", "beta-1", ratings_math.B_WINS),
    ]


def test_human_and_ai_judges_are_counted_apart(project):
    alpha, beta = make_version("alpha-1"), make_version("beta-1")
    vote(project, alpha, beta, "a", source=HUMAN)
    vote(project, beta, alpha, "a", source=REVIEW)
    vote(project, alpha, beta, "b", source=AI)

    human = battle_records(project, "human")
    ai = battle_records(project, "ai")

    assert human == [
        ("alpha-1", "beta-1", ratings_math.A_WINS),
        ("beta-1", "alpha-1", ratings_math.A_WINS),
    ]
    assert ai == [("alpha-1", "beta-1", ratings_math.B_WINS)]
    assert selectors.battle_counts(projects=[project]) == {"human": 2, "ai": 1}


def test_a_presumed_revision_pair_is_no_battle(project):
    alpha, beta = make_version("alpha-1"), make_version("beta-1")
    vote(project, alpha, beta, "b", source=AI)
    vote(project, alpha, beta, "b", source=AI, ai_details={"presumed": True})

    assert battle_records(project, "ai") == [("alpha-1", "beta-1", ratings_math.B_WINS)]


def test_parse_source_refuses_anything_else():
    assert selectors.parse_source(None) == "human"
    assert selectors.parse_source("ai") == "ai"
    with pytest.raises(ServiceError, match="use source=human or source=ai"):
        selectors.parse_source("robots")


# --- the numbers ---------------------------------------------------------------------------


def test_board_holds_ratings_elo_and_win_rates(project):
    strong, middle, weak = make_version("strong"), make_version("middle"), make_version("weak")
    for _ in range(12):
        vote(project, strong, middle, "a")
        vote(project, middle, weak, "a")
        vote(project, weak, strong, "b")
    vote(project, middle, strong, "a")
    vote(project, weak, middle, "tie")

    board = selectors.leaderboard(projects=[project], source="human")

    assert board["battles"] == 38 and board["rounds"] == 200
    names = [row["model"] for row in board["models"]]
    assert names == ["strong", "middle", "weak"]
    top, second, third = board["models"]
    assert top["rating"] > second["rating"] > third["rating"]
    assert np.mean([row["rating"] for row in board["models"]]) == pytest.approx(1000, abs=0.01)
    for row in board["models"]:
        assert row["lower"] <= row["rating"] <= row["upper"]
    assert (top["battles"], second["battles"], third["battles"]) == (25, 26, 25)
    assert second["win_rate"] == pytest.approx(13.5 / 26, abs=1e-4)
    assert top["elo"] > 1000 > third["elo"]
    assert board["win_rates"]["models"] == names
    assert board["win_rates"]["rates"][0][1] == pytest.approx(12 / 13, abs=1e-4)
    assert board["win_rates"]["rates"][0][0] is None
    assert board["win_rates"]["counts"][1][2] == 13
    assert [line["model"] for line in board["elo_history"]] == names
    assert board["elo_history"][0]["points"][-1][1] == top["elo"]


def test_board_is_recomputed_after_a_new_vote_or_a_rejection(project, admin_member):
    alpha, beta = make_version("alpha-1"), make_version("beta-1")
    first = vote(project, alpha, beta, "a")
    assert selectors.leaderboard(projects=[project], source="human")["battles"] == 1

    vote(project, alpha, beta, "b")
    assert selectors.leaderboard(projects=[project], source="human")["battles"] == 2

    judgment_reject(project=project, judgment_id=first.pk, reviewer=admin_member)
    board = selectors.leaderboard(projects=[project], source="human")
    assert board["battles"] == 1
    assert board["models"][0]["model"] == "beta-1"


# --- pages ---------------------------------------------------------------------------------


def _some_battles(project):
    alpha, beta = make_version("alpha-1"), make_version("beta-1")
    vote(project, alpha, beta, "a")
    vote(project, alpha, beta, "a")
    vote(project, beta, alpha, "tie")
    vote(project, alpha, beta, "b", source=AI)


def test_project_page_shows_table_plots_and_matrix(project, researcher, login):
    _some_battles(project)

    page = login(researcher).get(f"/p/{project.slug}/leaderboard/")

    html = page.content.decode()
    assert page.status_code == 200
    assert '<tr data-model="alpha-1">' in html
    assert 'id="ratings-plot"' in html and "<circle" in html and "<polyline" in html
    assert 'class="win-matrix"' in html and "hsl(" in html
    assert 'data-source="human" aria-current="page"' in html
    assert 'Human judges <span class="hint">(3)</span>' in html
    board = page.context["board"]
    assert board["battles"] == 3
    assert [row["model"] for row in board["models"]] == ["alpha-1", "beta-1"]


def test_project_page_ai_tab_and_htmx_fragment(project, researcher, login):
    _some_battles(project)
    client = login(researcher)

    page = client.get(f"/p/{project.slug}/leaderboard/?source=ai")
    fragment = client.get(
        f"/p/{project.slug}/leaderboard/?source=ai", headers={"HX-Request": "true"}
    )

    assert page.context["board"]["battles"] == 1
    assert page.context["board"]["models"][0]["model"] == "beta-1"
    assert fragment.status_code == 200
    assert fragment.content.decode().lstrip().startswith('<div id="board">')
    assert "<html" not in fragment.content.decode()


def test_project_page_empty_state(project, researcher, login):
    page = login(researcher).get(f"/p/{project.slug}/leaderboard/")

    assert page.status_code == 200
    assert 'id="empty"' in page.content.decode()
    assert "<svg" not in page.content.decode()


def test_overall_page_holds_only_projects_where_the_user_views_data(project, researcher, login):
    other = make_project("beta")
    ensure_membership(project=other, user=researcher, role=Role.LABELER)
    _some_battles(project)
    gamma, delta = make_version("gamma-1"), make_version("delta-1")
    vote(other, gamma, delta, "a")

    page = login(researcher).get("/leaderboard/")

    assert page.status_code == 200
    assert [row["model"] for row in page.context["board"]["models"]] == ["alpha-1", "beta-1"]


def test_overall_page_for_a_superuser_holds_every_project(project, login):
    other = make_project("beta")
    _some_battles(project)
    gamma = make_version("gamma-1")
    vote(other, gamma, make_version("delta-1"), "a")
    boss = make_user("boss", is_superuser=True)

    page = login(boss).get("/leaderboard/")

    assert page.context["board"]["battles"] == 4
    assert page.context["scope_label"] == "all projects"


def test_project_nav_links_to_the_leaderboard_for_researchers_only(
    project, researcher, labeler, login, client
):
    link = f'href="/p/{project.slug}/leaderboard/"'

    assert link in login(researcher).get(f"/p/{project.slug}/").content.decode()
    client.logout()
    assert link not in login(labeler).get(f"/p/{project.slug}/").content.decode()


# --- API -------------------------------------------------------------------------------------


def test_api_returns_the_same_numbers_as_the_page(project, researcher, login):
    _some_battles(project)
    client = login(researcher)

    api = client.get(f"/api/projects/{project.slug}/leaderboard/")
    ai = client.get(f"/api/projects/{project.slug}/leaderboard/?source=ai")
    page = client.get(f"/p/{project.slug}/leaderboard/")

    assert api.status_code == 200
    data = api.json()
    assert data["project"] == project.slug and data["source"] == "human"
    assert data["models"] == page.context["board"]["models"]
    assert data["win_rates"] == page.context["board"]["win_rates"]
    assert ai.json()["battles"] == 1


# --- permissions and bad input ------------------------------------------------------------------

CALLERS = ("anonymous", "outsider", "labeler", "researcher", "admin")
ROUTES = {
    # name: (path, status per caller)
    "project_leaderboard": (
        "/p/{slug}/leaderboard/",
        {"anonymous": 302, "outsider": 403, "labeler": 403, "researcher": 200, "admin": 200},
    ),
    "leaderboard": (
        "/leaderboard/",
        {"anonymous": 302, "outsider": 403, "labeler": 403, "researcher": 200, "admin": 200},
    ),
    "api_project_leaderboard": (
        "/api/projects/{slug}/leaderboard/",
        {"anonymous": 401, "outsider": 403, "labeler": 403, "researcher": 200, "admin": 200},
    ),
}
ROLE_OF = {"labeler": Role.LABELER, "researcher": Role.RESEARCHER, "admin": Role.ADMIN}


def _caller(who, project):
    if who == "anonymous":
        return None
    if who == "outsider":
        return make_user("someone-else")
    return make_member(project, ROLE_OF[who], f"caller-{who}")


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("who", CALLERS)
def test_who_may_see_each_route(route, who, project, login):
    _some_battles(project)
    path, expected = ROUTES[route]
    before = Judgment.objects.count()

    answer = login(_caller(who, project)).get(path.format(slug=project.slug))

    assert answer.status_code == expected[who]
    if expected[who] == 302:
        assert answer.url.startswith("/login/")
    assert Judgment.objects.count() == before


@pytest.mark.parametrize("route", ROUTES)
def test_only_get_is_allowed(route, project, researcher, login):
    path, _ = ROUTES[route]

    answer = login(researcher).post(path.format(slug=project.slug))

    assert answer.status_code == 405


def test_unknown_project_is_404(researcher, login):
    client = login(researcher)

    assert client.get("/p/nowhere/leaderboard/").status_code == 404
    assert client.get("/api/projects/nowhere/leaderboard/").status_code == 404


@pytest.mark.parametrize("path", ["/p/{slug}/leaderboard/", "/leaderboard/"])
def test_page_with_a_bad_source_is_400_with_a_clear_message(path, project, researcher, login):
    answer = login(researcher).get(path.format(slug=project.slug) + "?source=robots")

    assert answer.status_code == 400
    assert "Unknown source &#x27;robots&#x27;: use source=human or source=ai." in (
        answer.content.decode()
    )


def test_api_with_a_bad_source_is_400_with_a_clear_message(project, researcher, login):
    answer = login(researcher).get(f"/api/projects/{project.slug}/leaderboard/?source=robots")

    assert answer.status_code == 400
    assert answer.json() == {"detail": "Unknown source 'robots': use source=human or source=ai."}
