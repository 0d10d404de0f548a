import pytest
from django.contrib.auth import get_user_model

from annotation.candidates.models import GenerationJob
from annotation.candidates.selectors import generation_preview
from annotation.candidates.services import generation_job_execute, generation_job_start
from annotation.models import CHAT_TURN_KEY, Prompt, Response, Task
from config.celery import QueueUnavailable
from config.errors import ServiceError
from models_registry.endpoints import serving_endpoint_set
from models_registry.engine.ml import GenerationParams, load_policy, sample_candidates
from models_registry.models import ModelVersion
from models_registry.services import (
    ensure_base_model_from_folder,
    model_version_register,
    reward_scorer,
)
from tests.factories import make_member, make_prompt, make_task, make_version
from tests.models_registry.engine.fake_model_server import FakeServer, answering


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


def _mixed_project(project, tiny_model_dir):
    """Prompts in every state a generation job meets: unanswered, answered by a person,
    by two people, only by a retired version, already half answered by the base model, a
    chat turn (never generated for), and a comparison task that already exists."""
    base = ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)
    retired = make_version("old", state=ModelVersion.State.RETIRED)
    for _ in range(2):
        make_prompt(project)
    _person_answers(make_prompt(project), 1)
    _person_answers(make_prompt(project), 2)
    Response.objects.create(prompt=make_prompt(project), model_version=retired, text="old")
    Response.objects.create(prompt=make_prompt(project), model_version=base, text="half")
    Prompt.objects.create(project=project, text="hi", metadata={CHAT_TURN_KEY: 1})
    make_task(project)
    return base


@pytest.mark.parametrize("samples", [None, 1, 2])
def test_the_preview_says_what_the_job_then_writes_and_pairs(project, tiny_model_dir, samples):
    # given
    base = _mixed_project(project, tiny_model_dir)
    replies_before, tasks_before = Response.objects.count(), Task.objects.count()

    # when
    preview = generation_preview(project=project, model_version=base, samples_per_prompt=samples)
    job = generation_job_start(
        project=project,
        model_version=base,
        samples_per_prompt=samples,
        params={"max_new_tokens": 3, "seed": 4},
    )
    generation_job_execute(job_id=job.pk)

    # then
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert preview.replies == job.total == Response.objects.count() - replies_before
    assert preview.comparison_tasks == Task.objects.count() - tasks_before
    assert (preview.prompts, preview.replies, preview.comparison_tasks) == {
        None: (7, 10, 7),  # 2 samples to each prompt no one else answered, else 1
        1: (6, 6, 3),  # the lone samples of 3 prompts have nothing to pair with
        2: (7, 13, 10),
    }[samples]


def _page_text(answer) -> str:
    return " ".join(answer.content.decode().split())


@pytest.fixture
def preview_world(project, tiny_model_dir):
    """One prompt a person answered and two no one did; a base policy and a reward model."""
    _person_answers(make_prompt(project), 1)
    make_prompt(project), make_prompt(project)
    base = ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)
    reward = make_version("judge", kind=ModelVersion.Kind.REWARD, method="reward")
    return {"base": base, "reward": reward}


def _stored() -> tuple:
    return GenerationJob.objects.count(), Response.objects.count(), Task.objects.count()


def test_the_models_page_previews_the_job_it_queues(login, admin_member, project, preview_world):
    # given
    client = login(admin_member)
    expected = "This job will write 5 replies to 3 prompts and create 3 comparison tasks."

    # when: the page opens on the newest policy, and htmx asks again as the options change
    page = client.get(f"/p/{project.slug}/models/")
    fragment = client.get(
        f"/p/{project.slug}/models/preview/",
        {"model_version": preview_world["base"].pk, "samples_per_prompt": 2},
        HTTP_HX_REQUEST="true",
    )

    # then
    assert expected in _page_text(page)
    assert f'hx-get="/p/{project.slug}/models/preview/"' in page.content.decode()
    assert fragment.status_code == 200
    html = _page_text(fragment)
    assert html.startswith('<p id="generation-preview"')
    assert "write 6 replies to 3 prompts and create 4 comparison tasks." in html

    # and the job the page queues does what the page said
    tasks_before = Task.objects.count()
    form = {"model_version": preview_world["base"].pk, "best_of": 1, "max_new_tokens": 3}
    queued = client.post(f"/p/{project.slug}/models/", {**form, "temperature": 0.7})
    assert queued.status_code == 302
    job = GenerationJob.objects.get()
    generation_job_execute(job_id=job.pk)
    job.refresh_from_db()
    assert (job.status, job.total) == ("succeeded", 5), job.error
    assert Task.objects.count() - tasks_before == 3


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "Model version: This field is required."),
        ({"model_version": "abc"}, "Model version: Select a valid choice."),
        ({"model_version": "reward"}, "Model version: Select a valid choice."),
        ({"model_version": "base", "samples_per_prompt": 9}, "less than or equal to 8"),
        ({"model_version": "base", "samples_per_prompt": "two"}, "Enter a whole number."),
    ],
)
def test_the_page_preview_refuses_bad_choices_with_the_reason(
    login, admin_member, project, preview_world, query, message
):
    query = {name: preview_world.get(value, value) for name, value in query.items()}
    query = {name: getattr(value, "pk", value) for name, value in query.items()}
    before = _stored()

    answer = login(admin_member).get(
        f"/p/{project.slug}/models/preview/", query, HTTP_HX_REQUEST="true"
    )

    assert answer.status_code == 400
    assert message in _page_text(answer)
    assert 'class="error"' in answer.content.decode()
    assert _stored() == before


def test_the_page_preview_says_a_project_without_prompts_has_nothing_to_generate(
    login, admin_member, other_project, project, preview_world
):
    make_member(other_project, "admin", "other-admin")
    client = login(get_user_model().objects.get(username="other-admin"))

    answer = client.get(
        f"/p/{other_project.slug}/models/preview/", {"model_version": preview_world["base"].pk}
    )

    assert answer.status_code == 400
    assert "The project has no prompts yet: import some first." in _page_text(answer)


def test_the_api_previews_a_job_and_the_job_does_what_it_said(
    login, admin_member, project, preview_world
):
    client = login(admin_member)
    base = preview_world["base"]

    preview = client.get(
        f"/api/projects/{project.slug}/generation-jobs/preview/", {"model_version": base.pk}
    )
    started = client.post(
        f"/api/projects/{project.slug}/generation-jobs/",
        {"model_version": base.pk, "max_new_tokens": 3},
    )
    tasks_before = Task.objects.count()
    generation_job_execute(job_id=started.json()["id"])

    assert preview.status_code == 200
    assert preview.json() == {
        "samples_per_prompt": None,
        "prompts": 3,
        "replies": 5,
        "comparison_tasks": 3,
    }
    assert (started.status_code, started.json()["samples_per_prompt"]) == (201, None)
    assert Response.objects.filter(model_version=base).count() == 5
    assert Task.objects.count() - tasks_before == 3


@pytest.mark.parametrize(
    ("query", "status", "body"),
    [
        ({}, 400, {"model_version": ["This field is required."]}),
        (
            {"model_version": 999},
            400,
            {"model_version": ['Invalid pk "999" - object does not exist.']},
        ),
        ({"model_version": "reward"}, 400, {"detail": "Only policy models generate candidates."}),
        (
            {"model_version": "base", "samples_per_prompt": 0},
            400,
            {"samples_per_prompt": ["Ensure this value is greater than or equal to 1."]},
        ),
    ],
)
def test_the_api_preview_refuses_bad_input_and_stores_nothing(
    login, admin_member, project, preview_world, query, status, body
):
    query = {name: getattr(preview_world.get(value), "pk", value) for name, value in query.items()}
    before = _stored()

    answer = login(admin_member).get(
        f"/api/projects/{project.slug}/generation-jobs/preview/", query
    )

    assert (answer.status_code, answer.json()) == (status, body)
    assert _stored() == before


def test_the_generation_form_never_defaults_to_an_intermediate_stage(login, admin_member, project):
    base = make_version("base")
    stage = make_version("base / SFT run 1", parent=base, method="sft", state="candidate")
    stage.intermediate = True
    stage.save(update_fields=["intermediate"])

    page = login(admin_member).get(f"/p/{project.slug}/models/")

    assert page.context["form"].initial["model_version"] == base


def _completion(text: str) -> dict:
    return {
        "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def test_a_version_served_by_a_model_server_gets_its_candidates_from_there(project):
    prompts = [make_prompt(project) for _ in range(2)]
    server = FakeServer(answering(_completion("from the server")))
    try:
        # Its files do not exist: the job must not load them.
        version = make_version("served", path="/nonexistent")
        serving_endpoint_set(version=version, url=server.url, served_model_name="served-m")
        job = generation_job_start(project=project, model_version=version, params={"seed": 1})

        generation_job_execute(job_id=job.pk)
    finally:
        server.close()

    job.refresh_from_db()
    assert (job.status, job.done, job.total) == (GenerationJob.Status.SUCCEEDED, 4, 4)
    replies = Response.objects.filter(model_version=version)
    assert sorted(replies.values_list("prompt_id", "sample_index", "text")) == sorted(
        (prompt.pk, index, "from the server") for prompt in prompts for index in (0, 1)
    )
    assert Task.objects.filter(project=project).count() == 2


def test_a_model_server_answering_garbage_fails_only_its_job_with_the_reason(
    project, tiny_model_dir
):
    make_prompt(project)
    server = FakeServer(answering(b"<html>502 Bad Gateway</html>", content_type="text/html"))
    try:
        version = make_version("broken-served")
        serving_endpoint_set(version=version, url=server.url, served_model_name="m")
        job = generation_job_start(project=project, model_version=version)
        in_process = ensure_base_model_from_folder(name="tiny", path=tiny_model_dir)
        other = generation_job_start(
            project=project, model_version=in_process, params={"max_new_tokens": 3}
        )

        generation_job_execute(job_id=job.pk)
        generation_job_execute(job_id=other.pk)
    finally:
        server.close()

    job.refresh_from_db()
    other.refresh_from_db()
    assert job.status == GenerationJob.Status.FAILED
    assert job.error.startswith(
        f"GenerationBackendError: model server {server.url} answered garbage (not JSON)"
    )
    assert not Response.objects.filter(model_version=version).exists()
    assert other.status == GenerationJob.Status.SUCCEEDED, other.error
    assert Response.objects.filter(model_version=in_process).count() == 2
