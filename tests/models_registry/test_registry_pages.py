"""Registry pages and API: the version page's registry parts, promotion and retirement
(storing the evidence they are given), lineage graph, import, intermediate stages. Who may
see and do what on every route is tests/models_registry/test_permissions.py (and
tests/annotation/test_permissions.py for the version page's routes). The record against
the incumbent, and the pages and API that show and store it, are
tests/annotation/leaderboard/test_versions.py."""

import pytest

from annotation.candidates.models import GenerationJob
from annotation.models import Response, Role
from config.errors import ServiceError
from models_registry import selectors
from models_registry.models import ModelVersion, StateChange
from models_registry.services import model_version_promote, model_version_retire
from tests.factories import make_api_key, make_member, make_prompt, make_version
from tests.permissions import caller as make_caller
from training.models import DatasetSnapshot, TrainingRun


@pytest.fixture
def pair(db):
    """The incumbent (serving) and a candidate trained from it."""
    incumbent = make_version("incumbent")
    candidate = make_version(
        "candidate", state=ModelVersion.State.CANDIDATE, method="dpo", parent=incumbent
    )
    return incumbent, candidate


def _state_in(project, version) -> str:
    """The version's state in ``project``, read afresh."""
    fresh = ModelVersion.objects.get(pk=version.pk)
    return selectors.overlay_project_state([fresh], project=project)[0].state


# --- selectors and services -------------------------------------------------------------


def test_the_incumbent_is_the_serving_policy_promoted_last(project):
    assert selectors.incumbent(project=project) is None
    first = make_version("first")
    second = make_version("second")
    make_version("reward", kind="reward")
    make_version("retired", state=ModelVersion.State.RETIRED)

    assert selectors.incumbent(project=project) == second
    model_version_promote(project=project, version=first, user=None)
    assert selectors.incumbent(project=project) == first


def test_refused_promotions_change_nothing(project, pair):
    incumbent, candidate = pair
    reward = make_version("rm", kind="reward", state=ModelVersion.State.CANDIDATE)

    with pytest.raises(ServiceError, match="incumbent is already the incumbent"):
        model_version_promote(project=project, version=incumbent)
    with pytest.raises(ServiceError, match="rm is a reward model: only policies are promoted"):
        model_version_promote(project=project, version=reward)

    assert StateChange.objects.count() == 0
    assert _state_in(project, reward) == "candidate"
    assert selectors.incumbent(project=project) == incumbent


def test_a_promotion_and_a_retirement_store_the_evidence_they_are_given(project, pair):
    incumbent, candidate = pair
    evidence = {"incumbent": incumbent.pk, "incumbent_name": "incumbent", "battles": 3}

    promoted = model_version_promote(project=project, version=candidate, evidence=evidence)
    retired = model_version_retire(
        project=project, version=incumbent, evidence={**evidence, "incumbent": candidate.pk}
    )

    assert (promoted.incumbent, promoted.evidence) == (incumbent, evidence)
    assert (retired.incumbent, retired.evidence["incumbent"]) == (candidate, candidate.pk)


def test_evidence_against_another_incumbent_is_refused_and_changes_nothing(project, pair):
    incumbent, candidate = pair
    newer = make_version("newer", state=ModelVersion.State.CANDIDATE)
    read_before = {"incumbent": incumbent.pk, "incumbent_name": "incumbent", "battles": 3}
    model_version_promote(project=project, version=newer)  # another admin promotes in between

    with pytest.raises(ServiceError, match="The incumbent changed to newer since its record"):
        model_version_promote(project=project, version=candidate, evidence=read_before)
    with pytest.raises(ServiceError, match="The incumbent changed to newer since its record"):
        model_version_retire(project=project, version=candidate, evidence=read_before)

    assert _state_in(project, candidate) == "candidate"
    assert StateChange.objects.count() == 1


def test_the_last_serving_policy_cannot_be_retired(project, pair):
    incumbent, candidate = pair

    with pytest.raises(ServiceError, match="incumbent is the last serving policy: promote another"):
        model_version_retire(project=project, version=incumbent)
    assert _state_in(project, incumbent) == "serving"
    assert StateChange.objects.count() == 0

    model_version_promote(project=project, version=candidate)
    change = model_version_retire(project=project, version=incumbent, note="replaced")

    assert (change.from_state, change.to_state, change.incumbent) == (
        "serving",
        "retired",
        candidate,
    )
    assert _state_in(project, incumbent) == "retired"
    with pytest.raises(ServiceError, match="incumbent is already retired"):
        model_version_retire(project=project, version=incumbent)
    with pytest.raises(ServiceError, match="candidate is the last serving policy"):
        model_version_retire(project=project, version=candidate)


def test_candidates_and_reward_models_retire_and_a_retired_policy_can_return(project, pair):
    incumbent, candidate = pair
    reward = make_version("rm", kind="reward")

    model_version_retire(project=project, version=candidate)
    model_version_retire(project=project, version=reward)
    back = model_version_promote(project=project, version=candidate)

    assert (back.from_state, back.to_state) == ("retired", "serving")
    assert _state_in(project, reward) == "retired"
    assert selectors.incumbent(project=project) == candidate


def test_the_lineage_graph_lays_out_a_forest_left_to_right(project):
    base = make_version("base")
    sft = make_version("sft", method="sft", parent=base, state="candidate")
    dpo = make_version("dpo", method="dpo", parent=sft, state="candidate")
    ppo = make_version("ppo", method="ppo", parent=sft, state="retired")
    reward = make_version("rm", method="reward", kind="reward", parent=sft, state="candidate")
    other = make_version("other-base")

    graph = selectors.lineage_graph(project=project)

    node = {n["version"].name: n for n in graph["nodes"]}
    assert set(node) == {"base", "sft", "dpo", "ppo", "rm", "other-base"}
    assert {(e["parent"], e["child"]) for e in graph["edges"]} == {
        (base.pk, sft.pk),
        (sft.pk, dpo.pk),
        (sft.pk, ppo.pk),
        (sft.pk, reward.pk),
    }
    assert node["base"]["x"] < node["sft"]["x"] < node["dpo"]["x"] == node["ppo"]["x"]
    leaves = sorted(node[name]["y"] for name in ("dpo", "ppo", "rm", "other-base"))
    assert len(set(leaves)) == 4  # each leaf on its own row
    assert node["sft"]["cy"] == (node["dpo"]["cy"] + node["rm"]["cy"]) / 2
    assert node["base"]["cy"] == node["sft"]["cy"]
    assert node["ppo"]["colour"] == selectors.STATE_COLOURS["retired"]
    assert other.pk in {n["version"].pk for n in graph["nodes"]}
    assert all(n["x"] + graph["node_width"] <= graph["width"] for n in graph["nodes"])
    assert all(n["y"] + graph["node_height"] <= graph["height"] for n in graph["nodes"])


# --- pages ---------------------------------------------------------------------------


def test_the_version_page_shows_lineage_artifacts_metrics_and_provenance(
    login, admin_member, project, other_project, tiny_model_dir
):
    base = make_version("base", path=str(tiny_model_dir))
    snapshot = DatasetSnapshot.objects.create(
        project=project, format="dpo", content_hash="ab" * 32, path="/x", row_count=3
    )
    run = TrainingRun.objects.create(
        project=project, method="dpo", base_version=base, snapshot=snapshot, status="succeeded"
    )
    sft = make_version("sft", method="sft", parent=base, state="candidate")
    version = make_version(
        "dpo-1",
        method="dpo",
        parent=sft,
        state="candidate",
        path=str(tiny_model_dir),
        adapter_path="/gone/adapter",
        training_run=run,
        snapshot_hash="ab" * 32,
        seed=7,
        config={"beta": 0.1},
        library_versions={"torch": "2.9.0"},
        metrics={"eval_loss": 0.25, "pair_accuracy": 0.9},
    )
    child = make_version("ppo-1", method="ppo", parent=version, state="candidate")

    page = login(admin_member).get(f"/p/alpha/models/{version.pk}/").content.decode()

    assert f'<a href="/p/alpha/models/{base.pk}/">base</a>' in page
    assert f'<a href="/p/alpha/models/{sft.pk}/">sft</a>' in page
    assert "<strong>dpo-1</strong>" in page
    assert f'<a href="/p/alpha/models/{child.pk}/">ppo-1</a>' in page
    assert "Artifacts: LoRA adapter" in page
    assert '/gone/adapter</code> <span class="error">(missing on this server)' in page
    size = (tiny_model_dir / "model.safetensors").stat().st_size
    assert f'data-bytes="{size}"' in page
    assert "<td>eval_loss</td><td>0.25</td>" in page
    assert f'<a href="/p/alpha/training/{run.pk}/">run #{run.pk}</a>' in page
    assert "ab" * 32 in page
    assert "torch 2.9.0" in page
    assert '<tr data-setting="beta"><td>Beta</td><td><code>0.1</code></td>' in page
    assert "&#x27;beta&#x27;: 0.1" in page.split('<details class="raw-config">')[1]
    assert "<dd>7</dd>" in page

    # The same run seen from another project is named, not linked.
    admin_elsewhere = make_member(other_project, Role.ADMIN, "adm2")
    client = login(admin_elsewhere)
    elsewhere = client.get(f"/p/beta/models/{version.pk}/").content.decode()
    assert f'run #{run.pk} <span class="hint">(in another project)' in elsewhere
    assert f"/p/beta/training/{run.pk}/" not in elsewhere


def test_the_lineage_page_draws_every_version(login, researcher, db):
    base = make_version("base")
    versions = [base, make_version("sft", method="sft", parent=base, state="candidate")]
    versions.append(make_version("rm", kind="reward", method="reward", parent=versions[1]))
    versions.append(make_version("old", state="retired"))

    page = login(researcher).get("/p/alpha/models/lineage/").content.decode()

    for version in versions:
        assert (
            f'<a href="/p/alpha/models/{version.pk}/" class="node" data-version="{version.pk}"'
            in (page)
        )
    assert page.count('class="node"') == 4
    assert page.count('class="edge"') == 2
    assert f'data-parent="{base.pk}" data-child="{versions[1].pk}"' in page
    assert 'data-state="retired"' in page


def test_the_models_page_links_versions_states_and_the_graph(login, admin_member, pair):
    incumbent, candidate = pair

    page = login(admin_member).get("/p/alpha/models/").content.decode()

    assert f'<a href="/p/alpha/models/{candidate.pk}/">candidate</a>' in page
    assert 'data-state="candidate">Candidate</span>' in page
    assert 'data-state="serving">Serving</span>' in page
    assert 'href="/p/alpha/models/lineage/"' in page
    assert 'href="/p/alpha/models/import/"' in page


# --- API -------------------------------------------------------------------------------


def test_the_version_api_has_state_promotion_import_and_children(login, labeler, project, pair):
    incumbent, candidate = pair
    model_version_promote(project=project, version=candidate)

    # No project in the URL: the default states (the promotion was alpha's).
    payload = login(labeler).get(f"/api/model-versions/{incumbent.pk}/").json()

    assert payload["state"] == "serving"
    assert payload["children"] == [candidate.pk]
    assert payload["promoted_at"] is not None
    assert payload["imported_from"] == ""
    assert payload["changes"] == []
    assert login(labeler).get("/api/model-versions/999999/").status_code == 404


# --- permissions: every route for every caller is in tests/models_registry/test_permissions.py
# (registry routes) and tests/annotation/test_permissions.py (a version's page and forms).


def test_unknown_versions_and_projects_are_404(login, admin_member, db):
    client = login(admin_member)

    assert client.get("/p/alpha/models/999999/").status_code == 404
    assert client.post("/p/alpha/models/999999/promote/").status_code == 404
    assert client.get("/p/nope/models/lineage/").status_code == 404
    assert client.get("/p/alpha/models/999999/promote/").status_code == 405


# --- intermediate stages of a run (the SFT before DPO) -----------------------------------


@pytest.fixture
def stage(project, pair):
    """The SFT stage of a two-stage run of the project, registered as intermediate, and the
    project's prompt its candidates would answer."""
    incumbent, _ = pair
    make_prompt(project)
    run = TrainingRun.objects.create(
        project=project,
        method="sft",
        base_version=incumbent,
        status=TrainingRun.Status.SUCCEEDED,
        follow_up={"method": "dpo", "config": {}, "filters": {}},
    )
    return make_version(
        "sft-stage",
        state=ModelVersion.State.CANDIDATE,
        method="sft",
        parent=incumbent,
        training_run=run,
        intermediate=True,
    )


def _release_outcome(version):
    version.refresh_from_db()
    return (
        version.intermediate,
        StateChange.objects.filter(version=version).count(),
        GenerationJob.objects.filter(model_version=version).count(),
    )


def test_an_intermediate_stage_is_in_no_model_list_and_never_a_partner(
    project, labeler, pair, stage, client
):
    from annotation.arena.selectors import arena_versions
    from annotation.candidates.services import ensure_comparison_tasks
    from annotation.chat.selectors import chat_versions
    from annotation.models import CandidatePolicy, Task

    incumbent, candidate = pair
    project.candidate_policy = CandidatePolicy.NEWEST_VS_INCUMBENT
    project.save(update_fields=["candidate_policy"])
    # An admin had the stage answer by hand, after the candidate answered.
    prompt = make_prompt(project)
    for version in (candidate, stage, incumbent):
        Response.objects.create(prompt=prompt, model_version=version, text=f"by {version.name}")
    key = make_api_key(labeler)

    listed = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {key}").json()["data"]
    ensure_comparison_tasks(project=project, model_version=incumbent)

    expected = {incumbent, candidate}
    assert set(selectors.servable_versions(project=project, kind="policy")) == expected
    assert set(arena_versions(project=project)) == set(chat_versions(project=project)) == expected
    assert {row["id"] for row in listed} == {v.model_id for v in expected}
    # The incumbent's reply is paired with the newest other version's: the candidate's.
    task = Task.objects.get(prompt=prompt)
    assert {r.model_version for r in task.responses.all()} == {incumbent, candidate}


def test_an_intermediate_stage_is_not_promoted(project, pair, stage):
    with pytest.raises(ServiceError, match=r"sft-stage is an intermediate stage of run \d+"):
        model_version_promote(project=project, version=stage, user=None)

    stage.refresh_from_db()
    assert (stage.state, StateChange.objects.count()) == ("candidate", 0)


def test_the_version_and_lineage_pages_show_the_stage_and_the_release_action(
    login, admin_member, researcher, stage
):
    run = stage.training_run
    admin_page = login(admin_member).get(f"/p/alpha/models/{stage.pk}/").content.decode()
    lineage = login(researcher).get("/p/alpha/models/lineage/").content.decode()
    researcher_page = login(researcher).get(f"/p/alpha/models/{stage.pk}/").content.decode()

    text = f"Intermediate stage of run {run.pk}</strong>: the SFT stage before the run's DPO stage"
    assert text in admin_page
    assert f'action="/p/alpha/models/{stage.pk}/release/"' in admin_page
    assert "Release this stage" in admin_page
    assert 'id="promote"' not in admin_page
    assert text in researcher_page
    assert 'id="release"' not in researcher_page
    assert f"intermediate stage of run {run.pk}</title>" in lineage
    assert 'stroke-dasharray="5 3"' in lineage


def test_releasing_a_stage_makes_it_a_candidate_that_generates(login, admin_member, project, stage):
    client = login(admin_member)

    answer = client.post(f"/p/alpha/models/{stage.pk}/release/", {"note": "try it"})

    assert answer.status_code == 302
    assert _release_outcome(stage) == (False, 1, 1)
    change = StateChange.objects.get(version=stage)
    run = stage.training_run
    assert (change.from_state, change.to_state, change.user) == (
        "candidate",
        "candidate",
        admin_member,
    )
    assert change.note == f"Released: was an intermediate stage of run {run.pk}. try it"
    job = GenerationJob.objects.get(model_version=stage)
    assert (job.project, job.status) == (project, GenerationJob.Status.QUEUED)
    assert stage in selectors.servable_versions(project=project, kind="policy")
    page = client.get(answer["Location"]).content.decode()
    assert "sft-stage is released: its candidates are queued." in page
    assert "Released (candidate)" in page
    assert 'id="intermediate"' not in page


def test_releasing_a_version_that_is_no_stage_is_refused_and_changes_nothing(
    login, admin_member, pair, stage
):
    _, candidate = pair
    client = login(admin_member)

    page = client.post(f"/p/alpha/models/{candidate.pk}/release/", {"note": ""})
    api = client.post(f"/api/projects/alpha/model-versions/{candidate.pk}/release/")

    assert page.status_code == 400
    assert "candidate is not an intermediate stage of a run: there is nothing to release." in (
        page.content.decode()
    )
    assert (api.status_code, api.json()["detail"]) == (
        400,
        "candidate is not an intermediate stage of a run: there is nothing to release.",
    )
    assert _release_outcome(candidate) == (False, 0, 0)
    assert _release_outcome(stage) == (True, 0, 0)


def test_the_api_releases_a_stage(login, admin_member, stage):
    answer = login(admin_member).post(
        f"/api/projects/alpha/model-versions/{stage.pk}/release/", {"note": "api"}
    )

    assert answer.status_code == 200
    assert (answer.json()["intermediate"], answer.json()["change"]["user"]) == (False, "adm")
    assert _release_outcome(stage) == (False, 1, 1)


@pytest.mark.parametrize(
    "caller_name",
    ["anonymous", "outsider", "labeler", "researcher", "admin", "admin elsewhere"],
)
@pytest.mark.parametrize("api", [False, True], ids=["page", "api"])
def test_only_an_admin_of_the_project_releases_a_stage(
    login, project, other_project, stage, caller_name, api
):
    if caller_name == "admin elsewhere":
        caller = make_member(other_project, Role.ADMIN, "adm2")
    else:
        caller = make_caller(caller_name, project)
    prefix = "/api/projects/alpha/model-versions" if api else "/p/alpha/models"

    answer = login(caller).post(f"{prefix}/{stage.pk}/release/", {"note": "go"})

    if caller_name == "admin":
        assert answer.status_code == (200 if api else 302)
        assert _release_outcome(stage) == (False, 1, 1)
        return
    if caller is None:
        assert answer.status_code == (401 if api else 302)
    else:
        assert answer.status_code == 403
    assert _release_outcome(stage) == (True, 0, 0)


def test_a_stage_is_released_only_from_its_own_project(login, other_project, stage):
    admin_elsewhere = make_member(other_project, Role.ADMIN, "adm2")

    answer = login(admin_elsewhere).post(f"/p/beta/models/{stage.pk}/release/", {"note": ""})

    assert answer.status_code == 400
    assert "sft-stage was trained in another project: release it from there." in (
        answer.content.decode()
    )
    assert _release_outcome(stage) == (True, 0, 0)
