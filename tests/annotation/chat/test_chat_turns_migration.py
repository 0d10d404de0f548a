"""Migration 0007 on a real schema (Django's MigrationExecutor): chats stored before it,
with their turns' state in Prompt.metadata, come out as ChatTurn rows, and back."""

import pytest

from tests.migrations import migrate_to, schema_at

BEFORE = [
    ("annotation", "0006_job_lifecycle_judge_jobs_and_battles"),
    ("models_registry", "0008_serving_endpoint"),
]
AFTER = [("annotation", "0007_chat_turns")]


@pytest.fixture
def schema_before_chat_turns(transactional_db):
    """The schema as it was before 0007; put back to the latest after the test."""
    with schema_at(BEFORE) as apps:
        yield apps


def _old_chat(apps):
    User = apps.get_model("auth", "User")
    Project = apps.get_model("annotation", "Project")
    ModelVersion = apps.get_model("models_registry", "ModelVersion")
    ChatSession = apps.get_model("annotation", "ChatSession")
    Prompt = apps.get_model("annotation", "Prompt")
    Response = apps.get_model("annotation", "Response")
    labeler = User.objects.create(username="old-chatter")
    project = Project.objects.create(slug="old-chats", name="Old chats")
    version = ModelVersion.objects.create(
        name="old-model", model_id="old-model", method="base", base_path="/models/old"
    )
    session = ChatSession.objects.create(
        project=project,
        labeler=labeler,
        model_version=version,
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "More?"},
        ],
    )
    picked = Prompt.objects.create(
        project=project, text="Hi", metadata={"chat_session": session.pk, "turn": 0}
    )
    replies = [
        Response.objects.create(prompt=picked, model_version=version, sample_index=i, text=t)
        for i, t in enumerate(("Hello", "Hey"))
    ]
    picked.metadata.update(
        status="ready",
        error="",
        shown_order=[replies[1].pk, replies[0].pk],
        generation_params={"max_new_tokens": 128, "seed": 11},
    )
    picked.save()
    failed = Prompt.objects.create(
        project=project,
        text="More?",
        metadata={
            "chat_session": session.pk,
            "turn": 2,
            "status": "failed",
            "error": "RuntimeError: out of memory",
            "generation_params": {"max_new_tokens": 128, "seed": 12},
        },
    )
    return session, picked, failed, replies


def test_0007_moves_old_turns_into_rows_and_back(schema_before_chat_turns):
    session, picked, failed, replies = _old_chat(schema_before_chat_turns)

    after = migrate_to(AFTER)

    ChatTurn = after.get_model("annotation", "ChatTurn")
    Prompt = after.get_model("annotation", "Prompt")
    turns = list(ChatTurn.objects.order_by("message_index"))
    assert [
        (t.session_id, t.prompt_id, t.message_index, t.status, t.model_version_id) for t in turns
    ] == [
        (session.pk, picked.pk, 0, "succeeded", session.model_version_id),
        (session.pk, failed.pk, 2, "failed", session.model_version_id),
    ]
    assert turns[0].shown_order == [replies[1].pk, replies[0].pk]
    assert turns[0].generation_params == {"max_new_tokens": 128, "seed": 11}
    assert turns[1].error == "RuntimeError: out of memory"
    assert Prompt.objects.get(pk=picked.pk).metadata == {"chat_session": session.pk}

    before = migrate_to(BEFORE)

    restored = before.get_model("annotation", "Prompt").objects.get(pk=failed.pk).metadata
    assert restored == {
        "chat_session": session.pk,
        "turn": 2,
        "status": "failed",
        "error": "RuntimeError: out of memory",
        "shown_order": [],
        "generation_params": {"max_new_tokens": 128, "seed": 12},
    }
