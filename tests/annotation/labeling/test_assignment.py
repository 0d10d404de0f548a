from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.labeling.services import assignment_next
from annotation.models import Assignment, Role, Task
from tests.factories import make_member, make_project, make_task


def test_a_labeler_keeps_the_same_task_until_judging_it(project, labeler):
    make_task(project)
    make_task(project)

    first = assignment_next(project=project, labeler=labeler)
    again = assignment_next(project=project, labeler=labeler)

    assert first.pk == again.pk
    assert Assignment.objects.filter(labeler=labeler).count() == 1


def test_overlap_target_caps_how_many_labelers_get_a_task(db):
    project = make_project("overlap", overlap_target=2)
    task = make_task(project)
    labelers = [make_member(project, Role.LABELER) for _ in range(3)]

    given = [assignment_next(project=project, labeler=labeler) for labeler in labelers]

    assert [a is not None for a in given] == [True, True, False]
    task.refresh_from_db()
    assert task.assigned_count == 2


def test_the_database_refuses_assignments_beyond_overlap(project, labeler):
    task = make_task(project)
    assignment_next(project=project, labeler=labeler)

    with pytest.raises(IntegrityError), transaction.atomic():
        Task.objects.filter(pk=task.pk).update(assigned_count=2)


def test_an_expired_assignment_returns_to_the_pool(project, labeler):
    task = make_task(project)
    other = make_member(project, Role.LABELER)
    stale = assignment_next(project=project, labeler=labeler)
    Assignment.objects.filter(pk=stale.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    taken = assignment_next(project=project, labeler=other)

    assert taken.task == task
    stale.refresh_from_db()
    assert stale.status == Assignment.Status.EXPIRED
    task.refresh_from_db()
    assert task.assigned_count == 1


def test_labelers_only_get_tasks_of_their_project(project, other_project, labeler):
    make_task(other_project)

    assert assignment_next(project=project, labeler=labeler) is None
