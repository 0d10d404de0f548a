import pytest

from annotation.errors import ServiceError
from annotation.models import Response, Task
from config.celery import QueueUnavailable
from models_registry.ml import GenerationParams, load_policy
from models_registry.models import GenerationJob, ModelVersion
from models_registry.services import (
    ensure_base_model_from_folder,
    generation_job_execute,
    generation_job_start,
    model_version_register,
    reward_scorer,
)
from tests.factories import make_prompt, make_version
from training.methods.raft import sample_candidates


def test_a_first_round_writes_two_samples_per_prompt_and_pairs_them(project, tiny_model_dir):
    prompts = [make_prompt(project) for _ in range(3)]
    base = ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)
    job = generation_job_start(
        project=project, model_version=base, params={"max_new_tokens": 6, "seed": 3}
    )

    generation_job_execute(job_id=job.pk)
    generation_job_execute(job_id=job.pk)  # a redelivered message changes nothing

    job.refresh_from_db()
    # samples_per_prompt 0: each prompt as many as its pairs need (here two: no other answers)
    assert (job.status, job.done, job.total, job.samples_per_prompt) == ("succeeded", 6, 6, 0)
    assert Response.objects.filter(model_version=base).count() == 6
    tasks = Task.objects.filter(project=project)
    assert sorted(t.prompt_id for t in tasks) == sorted(p.pk for p in prompts)
    response = Response.objects.filter(model_version=base).first()
    assert response.generation_params["max_new_tokens"] == 6
    assert response.generation_seconds > 0


def test_a_broken_model_fails_the_job_with_its_error(project, tmp_path):
    make_prompt(project)
    job = generation_job_start(project=project, model_version=make_version(path=str(tmp_path)))

    generation_job_execute(job_id=job.pk)

    job.refresh_from_db()
    assert job.status == GenerationJob.Status.FAILED
    assert job.error
    assert Response.objects.count() == 0


def test_generation_needs_prompts_and_sane_parameters(project):
    version = make_version()
    with pytest.raises(ServiceError, match="no prompts"):
        generation_job_start(project=project, model_version=version)
    make_prompt(project)
    with pytest.raises(ServiceError, match="Bad generation parameters"):
        generation_job_start(project=project, model_version=version, params={"top_z": 1})
    with pytest.raises(ServiceError, match="between 1 and 8"):
        generation_job_start(project=project, model_version=version, samples_per_prompt=9)
    assert GenerationJob.objects.count() == 0


def test_an_unreachable_broker_is_reported_not_worked_around(
    project, unreachable_broker, django_capture_on_commit_callbacks
):
    make_prompt(project)

    with (
        pytest.raises(QueueUnavailable, match="task queue could not be reached"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        generation_job_start(project=project, model_version=make_version())

    job = GenerationJob.objects.get()
    assert job.status == GenerationJob.Status.FAILED
    assert "task queue could not be reached" in job.error
    assert Response.objects.count() == 0


def test_models_page_polls_while_a_job_runs(login, admin_member, project):
    make_prompt(project)
    generation_job_start(project=project, model_version=make_version("polled"))
    client = login(admin_member)

    page = client.get(f"/p/{project.slug}/models/")
    fragment = client.get(f"/p/{project.slug}/models/jobs/", HTTP_HX_REQUEST="true")

    assert 'hx-trigger="every 1s"' in page.content.decode()
    html = fragment.content.decode().strip()
    assert html.startswith('<section id="jobs"')
    assert "polled" in html and "Queued" in html


def _reward_version(base_dir, reward_dir):
    return model_version_register(
        name="tiny-reward",
        kind=ModelVersion.Kind.REWARD,
        method=ModelVersion.Method.REWARD,
        base_path=str(base_dir),
        adapter_path=str(reward_dir),
    )


def test_best_of_n_keeps_the_reward_models_favourite_of_n_samples(
    project, tiny_model_dir, tiny_reward_dir
):
    # given
    prompts = [make_prompt(project) for _ in range(2)]
    base = ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)
    judge = _reward_version(tiny_model_dir, tiny_reward_dir)
    params = {"max_new_tokens": 5, "seed": 11, "temperature": 1.0}
    job = generation_job_start(
        project=project,
        model_version=base,
        samples_per_prompt=1,
        params=params,
        best_of=4,
        reward_version=judge,
    )

    # when
    generation_job_execute(job_id=job.pk)

    # then: each stored reply is the best-scored of the four drawn for its prompt
    job.refresh_from_db()
    assert job.status == GenerationJob.Status.SUCCEEDED, job.error
    model, tokenizer = load_policy(tiny_model_dir)
    drawn = sample_candidates(
        model,
        tokenizer,
        [prompt.as_conversation() for prompt in prompts],
        n=4,
        score=reward_scorer(judge),
        params=GenerationParams(**params),
    )
    for prompt, candidates in zip(prompts, drawn, strict=True):
        stored = Response.objects.get(prompt=prompt, model_version=base)
        assert stored.generation_params["best_of"] == 4
        assert stored.generation_params["reward_version"] == judge.pk
        assert len(candidates.rewards) == 4
        assert stored.text == candidates.replies[candidates.best].text
        assert stored.generation_params["reward"] == pytest.approx(max(candidates.rewards))


def test_best_of_n_needs_a_reward_model(project, tiny_model_dir):
    make_prompt(project)
    base = make_version()
    with pytest.raises(ServiceError, match="needs a reward model"):
        generation_job_start(project=project, model_version=base, best_of=3)
    with pytest.raises(ServiceError, match="needs a reward model"):
        generation_job_start(project=project, model_version=base, best_of=3, reward_version=base)
    with pytest.raises(ServiceError, match="between 1 and 16"):
        generation_job_start(project=project, model_version=base, best_of=17)
    assert GenerationJob.objects.count() == 0


def _person_answers(prompt, count):
    for number in range(count):
        Response.objects.create(prompt=prompt, author=f"demo {number}", text=f"answer {number}")


def _samples(version, prompt) -> list[int]:
    return sorted(
        Response.objects.filter(model_version=version, prompt=prompt).values_list(
            "sample_index", flat=True
        )
    )


def _comparisons_of(prompt) -> int:
    return Task.objects.filter(prompt=prompt, kind="comparison").count()


def test_imported_prompts_get_two_samples_where_no_one_answered_them(project, tiny_model_dir):
    # given: demo prompts with people's answers, and newly imported prompts with none
    demo_one, demo_two = make_prompt(project), make_prompt(project)
    _person_answers(demo_one, 1)
    _person_answers(demo_two, 2)
    imported = [make_prompt(project) for _ in range(3)]
    base = ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)

    # when: the base model generates with the default samples
    job = generation_job_start(
        project=project, model_version=base, params={"max_new_tokens": 4, "seed": 5}
    )
    generation_job_execute(job_id=job.pk)

    # then: two samples where nobody answered, one where a person did; every prompt has a pair
    job.refresh_from_db()
    assert (job.status, job.total, job.done) == ("succeeded", 8, 8), job.error
    assert [_samples(base, prompt) for prompt in imported] == [[0, 1]] * 3
    assert (_samples(base, demo_one), _samples(base, demo_two)) == ([0], [0])
    assert [_comparisons_of(prompt) for prompt in imported] == [1, 1, 1]
    assert (_comparisons_of(demo_one), _comparisons_of(demo_two)) == (1, 1)


def test_an_explicit_samples_per_prompt_is_written_for_every_prompt(project, tiny_model_dir):
    answered, fresh = make_prompt(project), make_prompt(project)
    _person_answers(answered, 1)
    base = ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)

    job = generation_job_start(
        project=project, model_version=base, samples_per_prompt=3, params={"max_new_tokens": 3}
    )
    generation_job_execute(job_id=job.pk)

    job.refresh_from_db()
    assert (job.status, job.samples_per_prompt, job.total) == ("succeeded", 3, 6), job.error
    assert (_samples(base, answered), _samples(base, fresh)) == ([0, 1, 2], [0, 1, 2])


def test_a_resumed_job_writes_only_the_samples_still_missing(project, tiny_model_dir):
    # given: a job whose worker died after writing the first sample of a fresh prompt
    fresh, answered, done = make_prompt(project), make_prompt(project), make_prompt(project)
    _person_answers(answered, 1)
    base = ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)
    job = generation_job_start(
        project=project, model_version=base, params={"max_new_tokens": 3, "seed": 2}
    )
    left = Response.objects.create(prompt=fresh, model_version=base, sample_index=0, text="kept")
    Response.objects.create(prompt=done, model_version=base, sample_index=0, text="kept too")
    Response.objects.create(prompt=done, model_version=base, sample_index=1, text="and this")

    # when: the job runs again
    generation_job_execute(job_id=job.pk)

    # then: it wrote the fresh prompt's second sample and the answered prompt's one, no more
    job.refresh_from_db()
    assert (job.status, job.total, job.done) == ("succeeded", 2, 2), job.error
    assert (_samples(base, fresh), _samples(base, answered), _samples(base, done)) == (
        [0, 1],
        [0],
        [0, 1],
    )
    assert Response.objects.get(prompt=fresh, model_version=base, sample_index=0).pk == left.pk
    assert [_comparisons_of(p) for p in (fresh, answered, done)] == [1, 1, 1]
