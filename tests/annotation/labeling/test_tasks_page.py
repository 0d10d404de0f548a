import pytest

from annotation.labeling.services import tasks_create
from annotation.models import Response, Task
from config.errors import ServiceError
from tests.factories import make_prompt, make_version


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
    assert (
        "Created 1 ranking task: 1 prompt has fewer than 3 candidate answers (the most any of "
        "them has is 2); generate more samples per prompt on Models." in _text(page)
    )


def _text(html: str) -> str:
    return " ".join(html.split())


def _create(client, project, **fields) -> str:
    """Post a batch and read the message on the page it redirects to."""
    answer = client.post(f"/p/{project.slug}/tasks/", {"action": "create", **fields}, follow=True)
    assert answer.redirect_chain == [(f"/p/{project.slug}/tasks/", 302)]
    return _text(answer.content.decode())


def test_a_ranking_batch_says_no_prompt_has_k_answers_and_the_most_one_has(
    login, admin_member, project
):
    _prompt_with_answers(project, 2)
    _prompt_with_answers(project, 1)

    page = _create(login(admin_member), project, kind="ranking", k=4)

    assert (
        "Created 0 ranking tasks: no prompt has 4 or more candidate answers (the most any "
        "prompt has is 2); generate more samples per prompt on Models." in page
    )
    assert Task.objects.count() == 0


def test_a_repeated_ranking_batch_says_which_prompts_are_already_ranked(
    login, admin_member, project
):
    for count in (4, 5, 3):
        _prompt_with_answers(project, count)
    client = login(admin_member)

    first = _create(client, project, kind="ranking", k=4)
    again = _create(client, project, kind="ranking", k=4)

    too_few = (
        "1 prompt has fewer than 4 candidate answers (the most any of them has is 3); "
        "generate more samples per prompt on Models."
    )
    assert f"Created 2 ranking tasks: {too_few}" in first
    assert (
        "Created 0 ranking tasks: 2 prompts already have a ranking task of their 4 newest "
        f"answers; {too_few}" in again
    )
    assert Task.objects.filter(kind="ranking").count() == 2


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"kind": "ranking"}, "ranking"),
        ({"kind": "rating"}, "rating"),
        ({"kind": "demonstration", "mode": "write"}, "demonstration"),
        ({"kind": "demonstration", "mode": "edit", "model_version": "version"}, "demonstration"),
    ],
)
def test_a_batch_in_a_project_without_prompts_says_so(
    login, admin_member, project, other_project, fields, kind
):
    version = make_version("tiny")
    _prompt_with_answers(other_project, 4)  # another project's prompts do not count
    fields = {name: version.pk if value == "version" else value for name, value in fields.items()}

    page = _create(login(admin_member), project, **fields)

    assert f"Created 0 {kind} tasks: no prompts in the project; import some on Prompts." in page
    assert Task.objects.count() == 0


def test_a_rating_batch_says_when_there_are_no_answers_and_which_are_rated(
    login, admin_member, project
):
    prompt = make_prompt(project)
    client = login(admin_member)

    empty = _create(client, project, kind="rating")
    for number in range(3):
        Response.objects.create(prompt=prompt, author="writer", text=f"answer {number}")
    first = _create(client, project, kind="rating")
    again = _create(client, project, kind="rating")

    assert (
        "Created 0 rating tasks: no prompt has a candidate answer yet; generate some on Models."
        in empty
    )
    assert "Created 3 rating tasks." in first
    assert "Created 0 rating tasks: 3 answers already have a rating task." in again
    assert Task.objects.filter(kind="rating").count() == 3


def test_a_demonstration_batch_says_why_prompts_or_answers_got_no_task(
    login, admin_member, project
):
    version = make_version("tiny")
    prompts = [make_prompt(project) for _ in range(2)]
    client = login(admin_member)
    edit = {"kind": "demonstration", "mode": "edit", "model_version": version.pk}

    _create(client, project, kind="demonstration", mode="write")
    write_again = _create(client, project, kind="demonstration", mode="write")
    unanswered = _create(client, project, **edit)
    for prompt in prompts:
        Response.objects.create(prompt=prompt, model_version=version, text="draft")
    _create(client, project, **edit)
    edit_again = _create(client, project, **edit)

    assert "Created 0 demonstration tasks: 2 prompts already have a write task." in write_again
    assert (
        "Created 0 demonstration tasks: tiny has no answers in this project yet; generate some "
        "on Models." in unanswered
    )
    assert (
        "Created 0 demonstration tasks: 2 answers of tiny already have an edit task." in edit_again
    )
    assert Task.objects.filter(kind="demonstration").count() == 4


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


def test_edit_tasks_pick_a_usable_model_version_by_name(login, admin_member, project):
    from annotation.projects.services import ensure_workspace

    mine = make_version("mine", workspace=project.workspace, state="candidate")
    operator = make_version("operator-base")  # installed by the operator: every workspace
    elsewhere = make_version("secret-elsewhere", workspace=ensure_workspace(slug="w2", name="W2"))
    reward = make_version("reward-model-x", kind="reward")
    stage = make_version("sft-stage", intermediate=True)
    client = login(admin_member)

    page = client.get(f"/p/{project.slug}/tasks/").content.decode()

    select = page.split('name="model_version"')[1].split("</select>")[0]
    assert f'<option value="{mine.pk}">mine (candidate)</option>' in select
    assert f'<option value="{operator.pk}">operator-base (serving)</option>' in select
    assert "edit each reply of the model version picked below" in page
    assert "&lt;id&gt;" not in page  # no JSON options to type
    for hidden in (elsewhere, reward, stage):
        assert hidden.name not in select
    assert "secret-elsewhere" not in page
    edit = {"kind": "demonstration", "mode": "edit"}
    Response.objects.create(prompt=make_prompt(project), model_version=mine, text="draft")
    created = client.post(
        f"/p/{project.slug}/tasks/", {"action": "create", **edit, "model_version": mine.pk}
    )
    assert created.status_code == 302 and Task.objects.filter(kind="demonstration").count() == 1


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("elsewhere", "That model version is not one this project&#x27;s workspace may use"),
        ("", "Edit mode needs a model version: pick one."),
        ("x", "That model version is not one this project&#x27;s workspace may use"),
    ],
)
def test_an_edit_batch_of_another_workspace_s_version_is_refused(
    login, admin_member, project, version, message
):
    from annotation.projects.services import ensure_workspace

    elsewhere = make_version("secret-elsewhere", workspace=ensure_workspace(slug="w2", name="W2"))
    Response.objects.create(prompt=make_prompt(project), model_version=elsewhere, text="draft")
    chosen = elsewhere.pk if version == "elsewhere" else version
    fields = {"action": "create", "kind": "demonstration", "mode": "edit", "model_version": chosen}

    answer = login(admin_member).post(f"/p/{project.slug}/tasks/", fields)

    assert answer.status_code == 400
    assert message in answer.content.decode()
    assert "secret-elsewhere" not in answer.content.decode()
    assert Task.objects.count() == 0
