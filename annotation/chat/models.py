"""The chat turn: one message of the labeler and the job that writes the model's two
replies to it. annotation/models.py imports it, so it lives under the app label
"annotation" like every other row of the app."""

from django.db import models

from config.jobs import Job


class ChatTurn(Job):
    """One turn of a chat: the labeler's message (the turn's own Prompt row, which keeps
    chat prompts out of the labeling pool) and the job that writes the model's two replies
    (Responses of that prompt, sample_index 0 and 1).

    It runs on the one job lifecycle (config/jobs.py): queued on commit, claimed once,
    heartbeating while it generates; a turn whose worker died is queued again and resumes,
    and after ``max_attempts`` it is failed with the reason for the labeler's "Try again".
    A succeeded turn's replies wait, in ``shown_order``, for the labeler's pick."""

    session = models.ForeignKey(
        "annotation.ChatSession", on_delete=models.CASCADE, related_name="turns"
    )
    prompt = models.OneToOneField(
        "annotation.Prompt", on_delete=models.CASCADE, related_name="chat_turn"
    )
    message_index = models.PositiveSmallIntegerField(
        help_text="Where the labeler's message is in the session's messages."
    )
    model_version = models.ForeignKey(
        "models_registry.ModelVersion", on_delete=models.PROTECT, related_name="+"
    )
    generation_params = models.JSONField(
        default=dict, help_text="Sampling settings, with the turn's own seed."
    )
    shown_order = models.JSONField(
        default=list, blank=True, help_text="The two reply ids in the order shown (left, right)."
    )

    # Both replies are written once (unique per prompt, version and sample index), so a
    # rerun after a lost worker stores nothing twice: it resumes.
    resumable = True
    max_attempts = 3

    class Meta:
        app_label = "annotation"
        ordering = ["message_index", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["session", "message_index"], name="chat_turn_once_per_message"
            )
        ]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self):
        return f"chat {self.session_id} turn {self.message_index}"
