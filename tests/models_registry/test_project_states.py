"""Serving state is per project (issue 14): a promotion or retirement in one project changes
that project's state of the version only. Another project that uses the same version keeps
its own state, incumbent, model lists, /v1 answers, version page and lineage."""

import pytest

from annotation.arena.selectors import arena_versions
from annotation.chat.selectors import chat_versions
from annotation.models import Role
from config.errors import ServiceError
from models_registry import selectors
from models_registry.models import ModelVersion, ProjectModelState, StateChange
from models_registry.services import (
    ensure_base_model_from_folder,
    model_version_promote,
    model_version_retire,
)
from tests.factories import make_api_key, make_member, make_project, make_version

HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def demo(db):
    return make_project("demo")


@pytest.fixture
def other(db):
    return make_project("other")


@pytest.fixture
def base(db, tiny_model_dir):
    """The base model both projects use (installed by the operator: every workspace sees
    it), serving by default."""
    return ensure_base_model_from_folder(name="tiny-chat", path=tiny_model_dir)


@pytest.fixture
def candidate(base, tiny_model_dir):
    """A candidate trained from the base, which both projects see."""
    return make_version(
        "tiny-chat / SFT run 1",
        method=ModelVersion.Method.SFT,
        parent=base,
        state=ModelVersion.State.CANDIDATE,
        path=str(tiny_model_dir),
    )


def _state_in(project, version) -> str:
    fresh = ModelVersion.objects.get(pk=version.pk)
    return selectors.overlay_project_state([fresh], project=project)[0].state


def _chat(client, key: str, model: str):
    return client.post(
        "/v1/chat/completions",
        {"model": model, "messages": HELLO, "max_tokens": 4, "temperature": 0},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


def _listed(client, key: str) -> set[str]:
    answer = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert answer.status_code == 200
    return {row["id"] for row in answer.json()["data"]}


def test_retiring_the_base_model_in_another_project_leaves_it_serving_here(
    client, login, demo, other, base, candidate
):
    demo_labeler = make_member(demo, Role.LABELER, "demo-labeler")
    other_labeler = make_member(other, Role.LABELER, "other-labeler")
    other_admin = make_member(other, Role.ADMIN, "other-admin")
    demo_key, other_key = make_api_key(demo_labeler), make_api_key(other_labeler)
    admin = login(other_admin)

    # other's admin promotes the candidate there, then retires the base model there.
    promoted = admin.post(f"/api/projects/other/model-versions/{candidate.pk}/promote/")
    retired = admin.post(f"/api/projects/other/model-versions/{base.pk}/retire/")

    assert (promoted.status_code, retired.status_code) == (200, 200)
    assert (promoted.json()["state"], retired.json()["state"]) == ("serving", "retired")
    assert retired.json()["change"]["project"] == "other"
    other_history = selectors.version_detail(version_id=base.pk, project=other).changes.all()
    assert [(c.project, c.to_state) for c in other_history] == [(other, "retired")]
    assert list(selectors.version_detail(version_id=base.pk, project=demo).changes.all()) == []
    # Only other's rows changed: the versions' defaults, and so demo, are as registered.
    assert _state_in(other, base) == "retired"
    assert _state_in(demo, base) == "serving"
    assert _state_in(demo, candidate) == "candidate"
    base.refresh_from_db()
    candidate.refresh_from_db()
    assert (base.state, candidate.state) == ("serving", "candidate")
    assert set(
        ProjectModelState.objects.values_list("project__slug", "version__name", "state")
    ) == {("other", "tiny-chat", "retired"), ("other", "tiny-chat / SFT run 1", "serving")}
    assert set(StateChange.objects.values_list("project__slug", "version", "to_state")) == {
        ("other", candidate.pk, "serving"),
        ("other", base.pk, "retired"),
    }

    # demo's labeler still gets the base model from /v1, its arena and its chat.
    assert base.model_id in _listed(client, demo_key)
    answer = _chat(client, demo_key, base.model_id)
    assert answer.status_code == 200
    assert answer.json()["model"] == base.model_id
    assert answer.json()["choices"][0]["message"]["role"] == "assistant"
    assert base in selectors.servable_versions(project=demo, kind="policy")
    assert base in arena_versions(project=demo)
    assert base in chat_versions(project=demo)

    # other's labeler, in no project where it serves, does not.
    assert base.model_id not in _listed(client, other_key)
    assert candidate.model_id in _listed(client, other_key)
    refused = _chat(client, other_key, base.model_id)
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "model_not_found"
    assert base not in arena_versions(project=other)
    assert base not in chat_versions(project=other)


def test_promoting_in_one_project_makes_the_incumbent_there_only(demo, other, base, candidate):
    assert selectors.incumbent(project=demo) == selectors.incumbent(project=other) == base

    change = model_version_promote(version=candidate, project=demo, note="beats it")

    assert (change.project, change.from_state, change.to_state, change.incumbent) == (
        demo,
        "candidate",
        "serving",
        base,
    )
    assert selectors.incumbent(project=demo) == candidate
    assert selectors.incumbent(project=demo).state == "serving"
    assert selectors.incumbent(project=other) == base
    assert _state_in(other, candidate) == "candidate"
    # The last serving policy is counted per project: demo may now retire the base model,
    # other may not.
    model_version_retire(version=base, project=demo)
    with pytest.raises(ServiceError, match="tiny-chat is the last serving policy"):
        model_version_retire(version=base, project=other)
    assert _state_in(other, base) == "serving"
    assert StateChange.objects.filter(project=other).count() == 0


def test_the_version_page_and_lineage_show_each_projects_state_and_history(
    login, demo, other, base, candidate
):
    demo_admin = make_member(demo, Role.ADMIN, "demo-admin")
    other_admin = make_member(other, Role.ADMIN, "other-admin")
    model_version_promote(version=candidate, project=demo, user=demo_admin, note="in demo")

    in_demo = login(demo_admin).get(f"/p/demo/models/{candidate.pk}/").content.decode()
    demo_lineage = login(demo_admin).get("/p/demo/models/lineage/").content.decode()
    in_other = login(other_admin).get(f"/p/other/models/{candidate.pk}/").content.decode()
    other_lineage = login(other_admin).get("/p/other/models/lineage/").content.decode()

    assert 'data-state="serving">Serving</span>' in in_demo
    assert 'id="incumbent-mark"' in in_demo
    assert "in demo" in in_demo
    assert 'data-to-state="serving"' in in_demo
    assert 'data-state="candidate">Candidate</span>' in in_other
    assert 'id="incumbent-mark"' not in in_other
    assert "in demo" not in in_other
    assert "No promotion, retirement or release yet." in in_other
    node = f'data-version="{candidate.pk}" data-state="%s"'
    assert node % "serving" in demo_lineage
    assert node % "candidate" in other_lineage
    demo_graph = selectors.lineage_graph(project=demo)
    other_graph = selectors.lineage_graph(project=other)
    colour = {n["version"].pk: n["colour"] for n in demo_graph["nodes"]}
    assert colour[candidate.pk] == selectors.STATE_COLOURS["serving"]
    colour = {n["version"].pk: n["colour"] for n in other_graph["nodes"]}
    assert colour[candidate.pk] == selectors.STATE_COLOURS["candidate"]


def test_the_models_page_and_its_api_show_the_projects_states(login, demo, other, base, candidate):
    demo_admin = make_member(demo, Role.ADMIN, "demo-admin")
    other_admin = make_member(other, Role.ADMIN, "other-admin")
    model_version_promote(version=candidate, project=other)
    model_version_retire(version=base, project=other)

    demo_page = login(demo_admin).get("/p/demo/models/").content.decode()
    other_page = login(other_admin).get("/p/other/models/").content.decode()

    assert 'data-state="retired"' not in demo_page
    assert 'data-state="serving">Serving</span>' in demo_page
    assert 'data-state="retired">Retired</span>' in other_page
    assert 'data-state="candidate"' not in other_page
