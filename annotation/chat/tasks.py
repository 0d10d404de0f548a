"""Celery task of the chat mode; annotation/tasks.py imports it so workers discover it."""

from celery import shared_task

from annotation.chat import services


# Interactive work has its own queue and worker so that a labeler's reply never waits behind
# batch generation or training on `gpu`. The queue is named here, the task's one route.
@shared_task(name="annotation.chat_replies_generate_task", queue="interactive", acks_late=True)
def chat_replies_generate_task(turn_id: int) -> None:
    services.chat_replies_generate(turn_id=turn_id)
