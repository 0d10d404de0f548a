"""A soft-deleted prompt or response leaves everything that feeds labeling and training;
restoring it (clearing ``deleted_at``) brings it back. The delete and restore services are
elsewhere: these tests set ``deleted_at`` directly."""

import random

import pytest
from django.utils import timezone

from annotation.arena.services import _pool_prompt
from annotation.candidates.selectors import samples_wanted
from annotation.datasets import selectors
from annotation.datasets.version_rows import candidate_rows
from annotation.judges.jobs import _comparison_tasks
from annotation.judges.revision import responses_to_revise
from annotation.labeling.kinds import ranking, rating
from annotation.labeling.services import assignment_next
from annotation.models import Prompt, Response, Role, Task, TaskKind
from tests.annotation.judges.factories import make_judge
from tests.factories import judge, make_member, make_project, make_task, make_version
from training.services import snapshot_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def project():
    return make_project("soft-delete")


@pytest.fixture
def labeler(project):
    return make_member(project, Role.LABELER, "soft-labeler")


def _delete(row):
    type(row).objects.filter(pk=row.pk).update(deleted_at=timezone.now())


def _restore(row):
    type(row).objects.filter(pk=row.pk).update(deleted_at=None)


def _first_response(task):
    return Response.objects.get(pk=task.links.order_by("position").first().response_id)


# Each case: (what is deleted, given the task) for the prompt and for one of its responses.
TARGETS = {
    "prompt": lambda task: task.prompt,
    "response": _first_response,
}


@pytest.mark.parametrize("target", TARGETS)
def test_the_labeling_queue(project, labeler, target):
    task = make_task(project)
    row = TARGETS[target](task)
    _delete(row)
    assert assignment_next(project=project, labeler=labeler) is None
    _restore(row)
    assert assignment_next(project=project, labeler=labeler).task_id == task.pk


def test_a_held_task_is_not_shown_once_deleted(project, labeler):
    task = make_task(project)
    assert assignment_next(project=project, labeler=labeler).task_id == task.pk
    _delete(task.prompt)
    assert assignment_next(project=project, labeler=labeler) is None


@pytest.mark.parametrize("target", TARGETS)
def test_rating_task_creation(project, target):
    task = make_task(project)
    row = TARGETS[target](task)
    _delete(row)
    batch = rating.create_tasks(project=project, options={})
    rated = Task.objects.filter(project=project, kind=TaskKind.RATING)
    assert row.pk not in {t.prompt_id if target == "prompt" else t.links.get().response_id
                          for t in rated}  # fmt: skip
    assert batch.created == (0 if target == "prompt" else 1)
    _restore(row)
    rating.create_tasks(project=project, options={})
    assert Task.objects.filter(project=project, kind=TaskKind.RATING).count() == 2


def test_ranking_task_creation_counts_alive_responses(project):
    task = make_task(project)
    Response.objects.create(prompt=task.prompt, author="test: third", text="Answer three")
    _delete(_first_response(task))
    ranking.create_tasks(project=project, options={"k": 3})
    assert not Task.objects.filter(kind=TaskKind.RANKING).exists()
    _restore(_first_response(task))
    ranking.create_tasks(project=project, options={"k": 3})
    assert Task.objects.filter(kind=TaskKind.RANKING).count() == 1


def test_candidate_generation(project):
    task = make_task(project)
    version = make_version()
    _delete(task.prompt)
    assert task.prompt_id not in samples_wanted(project=project, model_version=version)
    _restore(task.prompt)
    assert task.prompt_id in samples_wanted(project=project, model_version=version)


def _judged(project, labeler):
    task = make_task(project)
    judge(task, labeler)
    return task


@pytest.mark.parametrize("target", TARGETS)
def test_the_legacy_export(project, labeler, target):
    row = TARGETS[target](_judged(project, labeler))
    _delete(row)
    assert list(selectors.preference_rows(project, export_format="dpo", ai="exclude")) == []
    assert list(selectors.preference_rows(project, export_format="kto", ai="exclude")) == []
    _restore(row)
    assert len(list(selectors.preference_rows(project, export_format="dpo", ai="exclude"))) == 1


@pytest.mark.parametrize("target", TARGETS)
def test_dataset_version_rows(project, labeler, target):
    row = TARGETS[target](_judged(project, labeler))
    _delete(row)
    assert list(candidate_rows(project, "preference", None, "exclude")) == []
    assert list(candidate_rows(project, "kto", None, "exclude")) == []
    _restore(row)
    assert len(list(candidate_rows(project, "preference", None, "exclude"))) == 1


def test_dataset_version_prompts(project):
    prompt = make_task(project).prompt
    _delete(prompt)
    assert list(candidate_rows(project, "prompts", None, None)) == []
    _restore(prompt)
    assert len(list(candidate_rows(project, "prompts", None, None))) == 1


def test_an_imported_ranking_with_a_deleted_response_is_out(project, labeler):
    task = make_task(project)
    ids = list(task.links.order_by("position").values_list("response_id", flat=True))
    from annotation.models import Judgment

    Judgment.objects.create(kind=TaskKind.RANKING, project=project, prompt=task.prompt,
                            ranking=ids, shown_order=ids, source=Judgment.Source.HUMAN,
                            labeler=labeler)  # fmt: skip
    _delete(Response.objects.get(pk=ids[1]))
    assert list(selectors.preference_rows(project, export_format="ranking", ai="exclude")) == []
    assert list(candidate_rows(project, "preference", None, "exclude")) == []
    _restore(Response.objects.get(pk=ids[1]))
    assert len(list(selectors.preference_rows(project, export_format="ranking", ai="exclude")))


@pytest.mark.parametrize("target", TARGETS)
def test_training_snapshots(project, labeler, target):
    row = TARGETS[target](_judged(project, labeler))
    _delete(row)
    filters = {"ai": "exclude"}
    assert snapshot_create(project=project, dataset="preferences", filters=filters).row_count == 0
    if target == "prompt":
        assert snapshot_create(project=project, dataset="prompts").row_count == 0
    _restore(row)
    assert snapshot_create(project=project, dataset="preferences", filters=filters).row_count == 1
    assert snapshot_create(project=project, dataset="prompts").row_count == 1


def test_the_arena_pool(project):
    prompt = make_task(project).prompt
    _delete(prompt)
    with pytest.raises(Exception, match="no prompts in its pool"):
        _pool_prompt(project=project, rng=random.Random(0))
    _restore(prompt)
    assert _pool_prompt(project=project, rng=random.Random(0)) == prompt


@pytest.mark.parametrize("target", TARGETS)
def test_the_pairwise_judges_inputs(project, target):
    task = make_task(project)
    row = TARGETS[target](task)
    _delete(row)
    assert not _comparison_tasks(project=project).exists()
    _restore(row)
    assert list(_comparison_tasks(project=project)) == [task]


@pytest.mark.parametrize("target", TARGETS)
def test_the_revision_judges_inputs(project, target):
    task = make_task(project)
    row = TARGETS[target](task)
    _delete(row)
    options = {"response_ids": None, "limit": 10, "only_model_responses": False}
    judge_row = make_judge(workspace=project.workspace)
    picked = {"project": project, "judge": judge_row, "constitution": judge_row.constitution}
    assert _first_response(task) not in responses_to_revise(**picked, options=options)
    _restore(row)
    back = responses_to_revise(**picked, options=options)
    assert _first_response(task) in back


def test_alive_prompts_stay(project):
    make_task(project)
    assert Prompt.objects.alive().count() == 1
