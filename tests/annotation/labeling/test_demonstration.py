import json
import uuid

import pytest

from annotation.datasets.selectors import write_jsonl
from annotation.labeling.kinds import KINDS
from annotation.labeling.kinds.demonstration import (
    create_tasks,
    demonstration_task_for_conversation,
    matches_gold,
    sft_rows,
)
from annotation.labeling.services import assignment_next, ensure_task, judgment_submit
from annotation.models import Assignment, Judgment, Prompt, Response, Role, Task
from config.errors import ServiceError
from tests.factories import make_member, make_prompt, make_user, make_version

ORIGINAL = "Paris is the capital of Germany.\nIt has about 2 million people."
EDITED = "Paris is the capital of France.\nIt has about 2 million people."
CONTEXT = [
    {"role": "user", "content": "Plan a day in Paris."},
    {"role": "assistant", "content": "Louvre in the morning, Seine walk after lunch."},
]


def _write_task(project, *, text="How do I boil an egg?", context=None):
    task, _ = ensure_task(
        project=project, kind="demonstration", prompt=make_prompt(project, text), context=context
    )
    return task


def _response(project, *, original=ORIGINAL, version=None):
    prompt = make_prompt(project, "Tell me about Paris.")
    return Response.objects.create(
        prompt=prompt, model_version=version, author="" if version else "test", text=original
    )


def _edit_task(project, *, original=ORIGINAL):
    response = _response(project, original=original)
    task, _ = ensure_task(
        project=project, kind="demonstration", prompt=response.prompt, responses=[response]
    )
    return task


def _submit(labeler, assignment, **data):
    return judgment_submit(
        project=assignment.task.project,
        labeler=labeler,
        assignment_id=assignment.pk,
        data=data,
        client_id=uuid.uuid4(),
    )


# --- parse ------------------------------------------------------------------------------


def test_a_written_reply_is_stored_stripped_with_unix_newlines(project, labeler):
    _write_task(project)
    assignment = assignment_next(project=project, labeler=labeler)

    judgment = _submit(labeler, assignment, text="  Boil water.\r\nAdd the egg.\r\n  ")

    assert judgment.kind == "demonstration"
    assert judgment.text == "Boil water.\nAdd the egg."
    assert judgment.edited_from is None
    assert judgment.edit_diff == ""
    assert judgment.shown_order == []
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.DONE


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "text is required: write the ideal reply."),
        ({"text": None}, "text is required: write the ideal reply."),
        ({"text": "  \r\n\t "}, "text is empty: write the ideal reply."),
        ({"text": ["a list"]}, "text must be a string."),
        ({"text": 42}, "text must be a string."),
        ({"text": "x" * 20_001}, "The reply has 20001 characters; keep it to 20000 at most."),
    ],
)
def test_bad_text_is_refused_with_a_clear_message_and_stores_nothing(
    project, labeler, data, message
):
    _write_task(project)
    assignment = assignment_next(project=project, labeler=labeler)

    with pytest.raises(ServiceError) as refused:
        _submit(labeler, assignment, **data)

    assert refused.value.message == message
    assert Judgment.objects.count() == 0
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.PENDING


def test_a_reply_of_exactly_the_limit_is_accepted(project, labeler):
    _write_task(project)
    assignment = assignment_next(project=project, labeler=labeler)

    judgment = _submit(labeler, assignment, text="x" * 20_000)

    assert len(judgment.text) == 20_000


def test_an_edit_records_the_response_and_a_unified_diff(project, labeler):
    task = _edit_task(project)
    assignment = assignment_next(project=project, labeler=labeler)

    judgment = _submit(labeler, assignment, text=EDITED.replace("\n", "\r\n"))

    assert judgment.text == EDITED
    assert judgment.edited_from == task.links.get().response
    assert judgment.shown_order == [judgment.edited_from_id]
    assert judgment.edit_diff == (
        "--- model\n"
        "+++ edited\n"
        "@@ -1,2 +1,2 @@\n"
        "-Paris is the capital of Germany.\n"
        "+Paris is the capital of France.\n"
        " It has about 2 million people."
    )


def test_an_unchanged_edit_is_accepted_with_an_empty_diff(project, labeler):
    _edit_task(project, original=ORIGINAL + "\n")
    assignment = assignment_next(project=project, labeler=labeler)

    judgment = _submit(labeler, assignment, text=ORIGINAL.replace("\n", "\r\n"))

    assert judgment.text == ORIGINAL
    assert judgment.edited_from_id is not None
    assert judgment.edit_diff == ""


def test_a_demonstration_task_takes_at_most_one_response(project):
    prompt = make_prompt(project)
    responses = [Response.objects.create(prompt=prompt, text=t) for t in ("one", "two")]

    with pytest.raises(ServiceError) as refused:
        ensure_task(project=project, kind="demonstration", prompt=prompt, responses=responses)

    assert refused.value.message == "A demonstration task takes 0 to 1 responses, not 2."
    assert Task.objects.count() == 0


# --- gold -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "gold", "expected"),
    [
        (EDITED, {"text": EDITED}, True),
        ("paris is the capital of  FRANCE. It has about 2 million people.", {"text": EDITED},
         True),
        ("Paris is the capital of France.", {"text": EDITED}, False),
        ("Paris is the capital of France.", {"text": EDITED, "min_similarity": 0.5}, True),
        ("Something else entirely.", {"text": EDITED}, False),
        (EDITED, {}, False),
    ],
)  # fmt: skip
def test_gold_matches_by_word_similarity(text, gold, expected):
    assert matches_gold(Judgment(text=text), gold) is expected
    assert KINDS["demonstration"].matches_gold is matches_gold


# --- page -----------------------------------------------------------------------------


def test_the_label_page_shows_a_write_task_with_its_conversation_and_keys(login, project, labeler):
    _write_task(project, text="And in the evening?", context=CONTEXT)
    client = login(labeler)

    page = client.get(f"/p/{project.slug}/label/")

    html = page.content.decode()
    assignment = page.context["assignment"]
    assert page.status_code == 200
    assert "Write the ideal assistant reply" in html
    assert f'<textarea id="demo-text-{assignment.pk}" name="text"' in html
    assert "autofocus" in html
    assert "Louvre in the morning" in html
    assert "And in the evening?" in html
    assert "<kbd>Ctrl</kbd>+<kbd>Enter</kbd>" in html
    assert '<button type="submit" class="primary" data-demo-submit>' in html


def test_the_label_page_starts_an_edit_with_the_model_text_escaped(login, project, labeler):
    _edit_task(project, original="Use <script>alert(1)</script> carefully.")
    client = login(labeler)

    html = client.get(f"/p/{project.slug}/label/").content.decode()

    assert "<script>alert(1)</script>" not in html
    assert "\nUse &lt;script&gt;alert(1)&lt;/script&gt; carefully.</textarea>" in html
    assert "Edit it into the ideal reply" in html
    assert 'data-demo-mode="edit"' in html


def test_a_page_submission_stores_the_reply_and_moves_on(login, project, labeler):
    _write_task(project)
    client = login(labeler)
    assignment = client.get(f"/p/{project.slug}/label/").context["assignment"]

    answer = client.post(
        f"/p/{project.slug}/label/",
        {"assignment_id": assignment.pk, "client_id": str(uuid.uuid4()), "shown_at_ms": "0",
         "text": "Boil it for nine minutes.\r\n"},
    )  # fmt: skip

    assert answer.status_code == 302
    judgment = Judgment.objects.get()
    assert (judgment.labeler, judgment.text) == (labeler, "Boil it for nine minutes.")


def test_a_page_submission_of_an_empty_reply_says_why_and_stores_nothing(login, project, labeler):
    _write_task(project)
    client = login(labeler)
    assignment = client.get(f"/p/{project.slug}/label/").context["assignment"]

    answer = client.post(
        f"/p/{project.slug}/label/",
        {"assignment_id": assignment.pk, "client_id": str(uuid.uuid4()), "text": "   "},
        follow=True,
    )

    assert "text is empty: write the ideal reply." in answer.content.decode()
    assert Judgment.objects.count() == 0


# --- API ------------------------------------------------------------------------------


def test_api_edit_submission_is_idempotent_and_returns_the_diff(login, project, labeler):
    task = _edit_task(project)
    client = login(labeler)
    next_task = client.get(f"/api/projects/{project.slug}/tasks/next/").json()
    url = f"/api/projects/{project.slug}/judgments/"
    body = {"assignment_id": next_task["assignment_id"], "client_id": str(uuid.uuid4()),
            "text": EDITED}  # fmt: skip

    bad = client.post(url, {**body, "client_id": str(uuid.uuid4()), "text": ""},
                      content_type="application/json")  # fmt: skip
    created = client.post(url, body, content_type="application/json")
    repeated = client.post(url, body, content_type="application/json")

    assert next_task["kind"] == "demonstration"
    assert next_task["responses"][0]["text"] == ORIGINAL
    assert bad.status_code == 400
    assert bad.json()["detail"] == "text is empty: write the ideal reply."
    assert (created.status_code, repeated.status_code) == (201, 200)
    payload = created.json()
    assert payload["text"] == EDITED
    assert payload["edited_from"] == task.links.get().response_id
    assert payload["edit_diff"].startswith("--- model\n+++ edited\n@@ -1,2 +1,2 @@\n")
    assert Judgment.objects.count() == 1


@pytest.mark.parametrize(
    ("who", "status"),
    [("anonymous", 401), ("outsider", 403), ("labeler", 201), ("researcher", 201),
     ("admin", 201)],
)  # fmt: skip
def test_who_may_submit_a_demonstration_through_the_api(client, project, who, status):
    _write_task(project)
    worker = make_member(project, Role.LABELER)
    assignment = assignment_next(project=project, labeler=worker)
    if who in ("labeler", "researcher", "admin"):
        caller = make_member(project, Role(who))
        Assignment.objects.filter(pk=assignment.pk).update(labeler=caller)
        client.force_login(caller)
    elif who == "outsider":
        client.force_login(make_user())

    answer = client.post(
        f"/api/projects/{project.slug}/judgments/",
        {"assignment_id": assignment.pk, "client_id": str(uuid.uuid4()), "text": "Hello."},
        content_type="application/json",
    )

    assert answer.status_code == status
    assert Judgment.objects.count() == (1 if status == 201 else 0)


# --- SFT export -----------------------------------------------------------------------


def test_sft_rows_are_trl_conversations_ending_with_the_demonstration(project, labeler, tmp_path):
    _write_task(project, text="And in the evening?", context=CONTEXT)
    _edit_task(project)
    for text in ("Dinner in Montmartre.", EDITED):
        _submit(labeler, assignment_next(project=project, labeler=labeler), text=text)

    rows = list(sft_rows(project))
    path = tmp_path / "sft.jsonl"
    with path.open("w") as stream:
        write_jsonl(rows, stream)

    assert rows == [
        {"messages": [*CONTEXT, {"role": "user", "content": "And in the evening?"},
                      {"role": "assistant", "content": "Dinner in Montmartre."}]},
        {"messages": [{"role": "user", "content": "Tell me about Paris."},
                      {"role": "assistant", "content": EDITED}]},
    ]  # fmt: skip
    from datasets import load_dataset
    from trl.data_utils import is_conversational

    dataset = load_dataset("json", data_files=str(path), split="train")
    assert dataset.column_names == ["messages"]
    assert all(is_conversational(row) for row in dataset)
    assert [row["messages"][-1]["role"] for row in dataset] == ["assistant", "assistant"]


def test_sft_rows_leave_out_superseded_demonstrations_and_other_kinds(project, labeler):
    _write_task(project)
    original = _submit(labeler, assignment_next(project=project, labeler=labeler), text="Old.")
    Judgment.objects.create(
        kind="demonstration", project=project, task=original.task, prompt=original.prompt,
        text="Corrected.", labeler=original.labeler, supersedes=original, source="review",
    )  # fmt: skip
    Judgment.objects.create(
        kind="comparison", project=project, prompt=original.prompt, choice="tie", labeler=labeler
    )

    rows = list(sft_rows(project))

    assert [row["messages"][-1]["content"] for row in rows] == ["Corrected."]


# --- task creation --------------------------------------------------------------------


def test_write_mode_makes_one_task_per_prompt_and_is_safe_to_repeat(project):
    plain = make_prompt(project, "Plain question?")
    threaded = Prompt.objects.create(
        project=project, text="And in the evening?", metadata={"context": CONTEXT}
    )

    first = create_tasks(project=project, options={"mode": "write"})
    again = create_tasks(project=project, options={"mode": "write"})

    assert (first.created, again.created) == (2, 0)
    assert again.message == "Created 0 demonstration tasks: 2 prompts already have a write task."
    tasks = {task.prompt: task for task in Task.objects.filter(kind="demonstration")}
    assert tasks[plain].context == []
    assert tasks[threaded].context == CONTEXT
    assert all(task.links.count() == 0 for task in tasks.values())


def test_edit_mode_makes_one_task_per_response_of_the_version(project, other_project):
    version, other_version = make_version(), make_version()
    mine = [_response(project, version=version) for _ in range(2)]
    _response(project, version=other_version)
    _response(other_project, version=version)

    created = create_tasks(project=project, options={"mode": "edit", "model_version": version.pk})

    assert (created.created, created.reasons) == (2, ())
    tasks = Task.objects.all()
    assert sorted(task.links.get().response_id for task in tasks) == [r.pk for r in mine]
    assert {task.project for task in tasks} == {project}
    again = {"mode": "edit", "model_version": str(version.pk)}
    assert create_tasks(project=project, options=again).created == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("write", "Options must be an object with a mode."),
        ({}, "mode must be write (reply from scratch) or edit (improve a model's)."),
        ({"mode": "rewrite"},
         "mode must be write (reply from scratch) or edit (improve a model's)."),
        ({"mode": "edit"}, "Edit mode needs model_version: the id of a model version."),
        ({"mode": "edit", "model_version": "x"},
         "Edit mode needs model_version: the id of a model version."),
        ({"mode": "edit", "model_version": 999_999}, "There is no model version 999999."),
    ],
)  # fmt: skip
def test_bad_options_are_refused_and_create_nothing(project, options, message):
    make_prompt(project)

    with pytest.raises(ServiceError) as refused:
        create_tasks(project=project, options=options)

    assert refused.value.message == message
    assert Task.objects.count() == 0


def test_a_prompt_with_a_malformed_context_stops_write_mode_whole(project):
    make_prompt(project, "Fine?")
    broken = Prompt.objects.create(
        project=project, text="Broken?", metadata={"context": [{"role": "bot", "content": "hi"}]}
    )

    with pytest.raises(ServiceError) as refused:
        create_tasks(project=project, options={"mode": "write"})

    assert refused.value.message == (
        f"Prompt {broken.pk}'s context: turn 1 has role 'bot'; use system, user, assistant."
    )
    assert Task.objects.count() == 0


def test_a_conversation_becomes_a_write_task_for_its_next_reply(project):
    messages = [*CONTEXT, {"role": "user", "content": "And in the evening?"}]

    task = demonstration_task_for_conversation(project=project, messages=messages)
    again = demonstration_task_for_conversation(project=project, messages=messages)

    assert again == task
    assert task.kind == "demonstration"
    assert task.context == CONTEXT
    assert task.prompt.text == "And in the evening?"
    assert Prompt.objects.count() == 1
    assert create_tasks(project=project, options={"mode": "write"}).created == 0


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "messages must hold at least one user turn."),
        (CONTEXT, "The conversation must end with a user turn: the reply answers it."),
        ([{"role": "user", "content": " "}], "messages: turn 1 needs non-empty text content."),
        ([{"role": "user"}], "messages: turn 1 needs non-empty text content."),
        (["hi"], "messages: turn 1 must be an object with role and content."),
        ([{"role": "robot", "content": "hi"}],
         "messages: turn 1 has role 'robot'; use system, user, assistant."),
    ],
)  # fmt: skip
def test_a_bad_conversation_is_refused_and_creates_nothing(project, messages, message):
    with pytest.raises(ServiceError) as refused:
        demonstration_task_for_conversation(project=project, messages=messages)

    assert refused.value.message == message
    assert (Task.objects.count(), Prompt.objects.count()) == (0, 0)


def test_the_kind_is_registered_with_its_task_creation_hook():
    spec = KINDS["demonstration"]

    assert (spec.min_responses, spec.max_responses) == (0, 1)
    assert spec.create_tasks is create_tasks
    assert '"mode": "edit"' in spec.create_help
    assert json.dumps(spec.template) == '"annotation/labeling/kinds/_demonstration.html"'
