import pytest

from annotation.errors import ServiceError
from annotation.models import Response, Task
from annotation.services import project_settings_update, tasks_create
from tests.factories import make_prompt, make_task


def _prompt_with_answers(project, count):
    prompt = make_prompt(project)
    for number in range(count):
        Response.objects.create(prompt=prompt, author=f"writer {number}", text=f"answer {number}")
    return prompt


def test_admin_creates_ranking_tasks_with_a_priority(login, admin_member, project):
    _prompt_with_answers(project, 4)
    _prompt_with_answers(project, 2)  # too few answers for k=3
    client = login(admin_member)

    answer = client.post(
        f"/p/{project.slug}/tasks/", {"action": "create", "kind": "ranking", "k": 3, "priority": 5}
    )

    assert answer.status_code == 302
    task = Task.objects.get(kind="ranking")
    assert (task.priority, task.links.count()) == (5, 3)
    page = client.get(f"/p/{project.slug}/tasks/").content.decode()
    assert "<td>ranking</td><td>1</td><td>1</td>" in page


def test_bad_task_options_are_refused_and_create_nothing(login, admin_member, project):
    _prompt_with_answers(project, 4)
    client = login(admin_member)

    too_many = client.post(
        f"/p/{project.slug}/tasks/", {"action": "create", "kind": "ranking", "k": 12}
    )
    unknown = client.post(f"/p/{project.slug}/tasks/", {"action": "create", "kind": "poetry"})

    assert (too_many.status_code, unknown.status_code) == (400, 400)
    assert Task.objects.count() == 0
    with pytest.raises(ServiceError, match="kind must be one of"):
        tasks_create(project=project, kind="comparison", options={})


def test_settings_change_the_queue_and_open_tasks(login, admin_member, project):
    task = make_task(project)
    client = login(admin_member)

    answer = client.post(
        f"/p/{project.slug}/tasks/",
        {"action": "settings", "overlap_target": 3, "pending_limit": 4, "gold_rate": 0.2,
         "skip_flag_threshold": 2, "criteria": "Helpful, concise", "candidate_policy": "active"},
    )  # fmt: skip

    assert answer.status_code == 302
    project.refresh_from_db()
    assert project.candidate_policy == "active"
    assert (project.overlap_target, project.pending_limit, project.gold_rate) == (3, 4, 0.2)
    assert project.criteria == ["helpful", "concise"]
    task.refresh_from_db()
    assert task.overlap_target == 3


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"criteria": []}, "Give 1 to 8 criteria"),
        ({"criteria": ["helpful", "helpful"]}, "must differ"),
        ({"criteria": ["<script>"]}, "short words"),
        ({"gold_rate": 1.5}, "gold_rate must be between 0 and 1"),
        ({"colour": "red"}, "Unknown settings: colour"),
        ({"candidate_policy": "lottery"}, "candidate_policy must be one of"),
    ],
)
def test_bad_settings_are_refused_and_change_nothing(project, fields, message):
    with pytest.raises(ServiceError, match=message):
        project_settings_update(project=project, **fields)
    project.refresh_from_db()
    assert project.criteria == ["helpful", "harmless", "honest"]
    assert project.gold_rate == 0.1
