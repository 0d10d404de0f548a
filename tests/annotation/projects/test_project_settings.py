"""A project's settings: how its labeling queue works (overlap, pending limit, gold rate,
criteria, candidate and AI-label policies)."""

import pytest

from annotation.projects.services import project_settings_update
from config.errors import ServiceError
from tests.factories import make_task


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
