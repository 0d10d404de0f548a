"""Candidate policies: which replies a new model version is compared with."""

from collections import Counter

import pytest

from annotation.candidates.services import ensure_comparison_tasks
from annotation.models import Response, Task
from models_registry.models import ModelVersion
from tests.factories import make_prompt, make_version


def _answer(prompt, version=None, text="reply", *, author="", sample_index=0):
    return Response.objects.create(
        prompt=prompt,
        model_version=version,
        author=author if version is None else "",
        text=text,
        sample_index=sample_index,
    )


def _partners(project, version) -> Counter:
    """Who each of the version's comparison tasks pairs it with."""
    partners = Counter()
    for task in Task.objects.filter(project=project, kind="comparison"):
        others = [r for r in task.responses.all() if r.model_version_id != version.pk]
        assert len(others) == 1
        other = others[0]
        partners[other.model_version.name if other.model_version else other.author] += 1
    return partners


def _set_policy(project, policy):
    project.candidate_policy = policy
    project.save(update_fields=["candidate_policy"])


@pytest.fixture
def field(project):
    """Six prompts answered by two serving versions and a person; a new candidate answers
    them all."""
    old, older = make_version("old"), make_version("older")
    new = make_version("new", state=ModelVersion.State.CANDIDATE, method="dpo")
    prompts = [make_prompt(project, f"Question {i}?") for i in range(6)]
    for prompt in prompts:
        _answer(prompt, older, "older reply")
        _answer(prompt, old, "old reply")
        _answer(prompt, author="demo", text="a person's reply")
        _answer(prompt, new, "new reply")
    return {"new": new, "old": old, "older": older, "prompts": prompts}


def test_round_robin_spreads_a_new_version_evenly_over_the_others(project, field):
    _set_policy(project, "round_robin")

    created = ensure_comparison_tasks(project=project, model_version=field["new"])

    assert created == 6
    assert _partners(project, field["new"]) == {"old": 2, "older": 2, "demo": 2}


def test_round_robin_counts_the_pairs_made_before(project):
    _set_policy(project, "round_robin")
    old, older, new = make_version("old"), make_version("older"), make_version("new")
    for prompt in [make_prompt(project) for _ in range(2)]:
        _answer(prompt, old)
        _answer(prompt, new)
    ensure_comparison_tasks(project=project, model_version=new)
    for prompt in [make_prompt(project) for _ in range(2)]:
        _answer(prompt, old)
        _answer(prompt, older)
        _answer(prompt, new)

    ensure_comparison_tasks(project=project, model_version=new)

    # "old" already met the new version twice, so both new prompts go to "older".
    assert _partners(project, new) == {"old": 2, "older": 2}


def test_newest_vs_incumbent_pairs_with_the_version_promoted_last(project, field):
    _set_policy(project, "newest_vs_incumbent")
    # "older" was promoted after "old", so it is the incumbent.
    ModelVersion.objects.filter(pk=field["older"].pk).update(
        promoted_at=field["old"].promoted_at.replace(year=2100)
    )
    Response.objects.filter(model_version=field["older"], prompt=field["prompts"][0]).delete()

    ensure_comparison_tasks(project=project, model_version=field["new"])

    # Where the incumbent did not answer, the newest other author stands in.
    assert _partners(project, field["new"]) == {"older": 5, "demo": 1}


def test_the_incumbent_itself_meets_the_newest_other_version(project, field):
    _set_policy(project, "newest_vs_incumbent")
    incumbent = field["old"]
    ModelVersion.objects.filter(pk=incumbent.pk).update(
        promoted_at=incumbent.promoted_at.replace(year=2100)
    )
    Task.objects.all().delete()

    ensure_comparison_tasks(project=project, model_version=incumbent)

    assert _partners(project, incumbent) == {"new": 6}


def test_active_learning_picks_the_reply_the_reward_model_is_least_sure_about(project, field):
    _set_policy(project, "active")
    rewards = {"new reply": 1.0, "old reply": 0.9, "older reply": -2.0, "a person's reply": 3.0}

    def score(conversations, replies):
        assert all(c[-1]["role"] == "user" for c in conversations)
        return [rewards[reply] for reply in replies]

    ensure_comparison_tasks(project=project, model_version=field["new"], score=score)

    assert _partners(project, field["new"]) == {"old": 6}
    # A gap of 0.1 means a 0.525 win probability: close to a coin flip, so near the top.
    assert set(Task.objects.values_list("priority", flat=True)) == {95}


def test_active_learning_without_a_reward_model_falls_back_to_round_robin(project, field):
    _set_policy(project, "active")

    ensure_comparison_tasks(project=project, model_version=field["new"], score=None)

    assert _partners(project, field["new"]) == {"old": 2, "older": 2, "demo": 2}


def test_retired_versions_are_never_partners_and_repeats_add_nothing(project, field):
    _set_policy(project, "round_robin")
    ModelVersion.objects.filter(pk=field["older"].pk).update(state=ModelVersion.State.RETIRED)

    first = ensure_comparison_tasks(project=project, model_version=field["new"])
    second = ensure_comparison_tasks(project=project, model_version=field["new"])

    assert (first, second) == (6, 0)
    assert _partners(project, field["new"]) == {"old": 3, "demo": 3}


def test_a_version_retired_in_another_project_is_still_a_partner_here(
    project, other_project, field
):
    from models_registry.services import model_version_retire

    _set_policy(project, "round_robin")
    model_version_retire(version=field["older"], project=other_project)
    model_version_retire(version=field["old"], project=project)

    assert ensure_comparison_tasks(project=project, model_version=field["new"]) == 6
    assert _partners(project, field["new"]) == {"older": 3, "demo": 3}


def test_a_lone_author_is_paired_with_its_own_second_sample(project):
    version = make_version("alone")
    prompt = make_prompt(project)
    first = _answer(prompt, version, "one", sample_index=0)
    second = _answer(prompt, version, "two", sample_index=1)

    assert ensure_comparison_tasks(project=project, model_version=version) == 1
    task = Task.objects.get()
    assert set(task.responses.values_list("pk", flat=True)) == {first.pk, second.pk}


def test_a_generation_job_pairs_by_the_latest_reward_models_doubt(
    project, tiny_model_dir, tiny_reward_dir
):
    from annotation.candidates.services import generation_job_execute, generation_job_start
    from models_registry.services import (
        ensure_base_model_from_folder,
        model_version_register,
        reward_scorer,
    )

    _set_policy(project, "active")
    prompts = [make_prompt(project, f"Question {i}?") for i in range(2)]
    for prompt in prompts:
        _answer(prompt, author="demo", text="yes")
        _answer(prompt, make_version(), text="no")
    reward = model_version_register(
        name="tiny-reward",
        kind="reward",
        method="reward",
        base_path=str(tiny_model_dir),
        adapter_path=str(tiny_reward_dir),
    )
    base = ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)
    job = generation_job_start(
        project=project, model_version=base, params={"max_new_tokens": 4, "seed": 1}
    )

    generation_job_execute(job_id=job.pk)

    score = reward_scorer(reward)
    for prompt in prompts:
        own = Response.objects.get(prompt=prompt, model_version=base)
        others = list(Response.objects.filter(prompt=prompt).exclude(pk=own.pk))
        rewards = score([prompt.as_conversation()] * 3, [own.text, *(o.text for o in others)])
        closest = others[min((0, 1), key=lambda i: abs(rewards[0] - rewards[i + 1]))]
        task = Task.objects.get(prompt=prompt)
        assert set(task.responses.values_list("pk", flat=True)) == {own.pk, closest.pk}
        assert task.priority > 0


def test_active_pairing_asks_the_newest_reward_model_that_is_not_retired(
    project, tiny_model_dir, tiny_reward_dir, monkeypatch
):
    from annotation.candidates import services as candidates_services
    from models_registry import services as registry_services

    _set_policy(project, "active")
    prompt = make_prompt(project, "Question 0?")
    _answer(prompt, author="demo", text="yes")
    _answer(prompt, make_version(), text="no")
    kept = registry_services.model_version_register(
        name="tiny-reward",
        kind="reward",
        method="reward",
        base_path=str(tiny_model_dir),
        adapter_path=str(tiny_reward_dir),
    )
    newer = make_version(
        "retired-reward", kind="reward", method="reward", state=ModelVersion.State.CANDIDATE
    )
    registry_services.model_version_retire(version=newer, project=project)
    asked = []
    real_scorer = registry_services.reward_scorer
    monkeypatch.setattr(
        registry_services,
        "reward_scorer",
        lambda version: asked.append(version.name) or real_scorer(version),
    )
    base = registry_services.ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)
    job = candidates_services.generation_job_start(
        project=project, model_version=base, params={"max_new_tokens": 4, "seed": 1}
    )

    candidates_services.generation_job_execute(job_id=job.pk)

    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert asked == [kept.name]
    assert Task.objects.get(prompt=prompt).priority > 0


def test_an_ai_judges_revisions_never_enter_comparison_tasks(project, field):
    _set_policy(project, "round_robin")
    for prompt in field["prompts"]:
        original = Response.objects.get(prompt=prompt, model_version=field["old"])
        Response.objects.create(
            prompt=prompt,
            model_version=field["new"],
            sample_index=1,
            text="revised",
            generation_params={"revision_of": original.pk},
        )

    ensure_comparison_tasks(project=project, model_version=field["new"])

    assert not Task.objects.filter(responses__generation_params__has_key="revision_of").exists()
    assert Task.objects.count() == 6
