"""Chat turns belong to their conversation: they never feed generation or task batches."""

import pytest

from annotation.candidates.selectors import missing_samples
from annotation.candidates.services import ensure_comparison_tasks, generation_job_start
from annotation.labeling.services import tasks_create
from annotation.models import CHAT_TURN_KEY, Prompt, Response, Task
from config.errors import ServiceError
from tests.factories import make_prompt, make_version


def _chat_turn(project, version):
    prompt = Prompt.objects.create(project=project, text="hi", metadata={CHAT_TURN_KEY: 1})
    for index in range(2):
        Response.objects.create(prompt=prompt, model_version=version, sample_index=index, text="x")
    return prompt


def test_chat_turns_are_not_generated_for_nor_paired_into_tasks(project):
    version = make_version()
    _chat_turn(project, version)
    pool_prompt = make_prompt(project)

    generation_job_start(project=project, model_version=version)
    ensure_comparison_tasks(project=project, model_version=version)
    tasks_create(project=project, kind="rating", options={})

    assert missing_samples(project=project, model_version=version) == {pool_prompt.pk: [0, 1]}
    assert Task.objects.count() == 0


def test_a_project_with_only_chat_turns_has_no_prompts_to_generate_for(project):
    version = make_version()
    _chat_turn(project, version)

    with pytest.raises(ServiceError, match="no prompts"):
        generation_job_start(project=project, model_version=version)
