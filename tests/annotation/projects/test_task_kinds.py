"""A project uses the kinds of task its admin chose (the wizard's step 2, or Tasks):
only those are created, Chat and Arena need theirs, and the menu offers only what is used."""

import pytest

from annotation.arena.services import arena_battle_start
from annotation.chat.services import chat_start
from annotation.labeling.services import tasks_create
from annotation.models import ArenaBattle, ChatSession, Response, Task
from annotation.projects.services import project_settings_update
from config.errors import ServiceError
from tests.factories import make_prompt


def _uses(project, *kinds):
    project.task_kinds = list(kinds)
    project.save(update_fields=["task_kinds"])


def test_a_new_project_uses_every_kind(project):
    assert project.task_kinds == [
        "demonstration",
        "comparison",
        "ranking",
        "rating",
        "chat",
        "arena",
    ]


def test_a_kind_the_project_does_not_use_is_not_created(project):
    prompt = make_prompt(project)
    Response.objects.create(prompt=prompt, author="writer", text="an answer")
    _uses(project, "comparison")

    with pytest.raises(ServiceError, match="This project does not use rating tasks"):
        tasks_create(project=project, kind="rating", options={})

    assert not Task.objects.exists()
    _uses(project, "comparison", "rating")
    assert tasks_create(project=project, kind="rating", options={}).created == 1


def test_the_tasks_page_refuses_an_unused_kind_with_its_reason(login, admin_member, project):
    make_prompt(project)
    _uses(project, "comparison")

    answer = login(admin_member).post(
        f"/p/{project.slug}/tasks/", {"action": "create", "kind": "demonstration"}
    )

    assert answer.status_code == 400
    assert "This project does not use demonstration tasks" in answer.content.decode()
    assert not Task.objects.exists()


def test_chat_and_arena_need_their_kind(project, labeler):
    _uses(project, "comparison")

    with pytest.raises(ServiceError, match="This project does not use chats."):
        chat_start(project=project, labeler=labeler, model_version_id=1)
    with pytest.raises(ServiceError, match="This project does not use arena battles."):
        arena_battle_start(project=project, labeler=labeler)

    assert not ChatSession.objects.exists() and not ArenaBattle.objects.exists()


def test_the_menu_offers_chat_and_arena_only_where_used(login, labeler, project):
    client = login(labeler)
    page = client.get(f"/p/{project.slug}/label/").content.decode()
    assert f'href="/p/{project.slug}/chat/"' in page
    assert f'href="/p/{project.slug}/arena/"' in page

    _uses(project, "comparison", "rating")
    page = client.get(f"/p/{project.slug}/label/").content.decode()

    assert f'href="/p/{project.slug}/chat/"' not in page
    assert f'href="/p/{project.slug}/arena/"' not in page


SETTINGS = {
    "action": "settings",
    "overlap_target": 1,
    "pending_limit": 4,
    "gold_rate": 0,
    "skip_flag_threshold": 3,
    "criteria": "helpful",
    "candidate_policy": "round_robin",
}


def test_the_tasks_page_changes_the_kinds_and_a_post_without_them_keeps_them(
    login, admin_member, project
):
    client = login(admin_member)

    changed = client.post(f"/p/{project.slug}/tasks/", {**SETTINGS, "task_kinds": ["rating"]})
    project.refresh_from_db()
    assert changed.status_code == 302 and project.task_kinds == ["rating"]

    kept = client.post(f"/p/{project.slug}/tasks/", SETTINGS)
    project.refresh_from_db()
    assert kept.status_code == 302 and project.task_kinds == ["rating"]


def test_the_tasks_page_refuses_an_unknown_kind(login, admin_member, project):
    answer = login(admin_member).post(
        f"/p/{project.slug}/tasks/", {**SETTINGS, "task_kinds": ["poem"]}
    )

    assert answer.status_code == 400
    assert "Select a valid choice" in answer.content.decode()
    project.refresh_from_db()
    assert len(project.task_kinds) == 6


@pytest.mark.parametrize(
    ("kinds", "message"),
    [
        ([], "Choose at least one kind of task."),
        ("rating", "Choose at least one kind of task."),
        (["rating", "poem"], "Unknown kind of task 'poem'"),
    ],
)
def test_the_settings_service_refuses_bad_kinds(project, kinds, message):
    with pytest.raises(ServiceError, match=message):
        project_settings_update(project=project, task_kinds=kinds)

    project.refresh_from_db()
    assert len(project.task_kinds) == 6


def test_kinds_are_kept_in_the_order_of_the_kinds(project):
    project_settings_update(project=project, task_kinds=["rating", "comparison"])

    assert project.task_kinds == ["comparison", "rating"]
