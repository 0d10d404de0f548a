"""Celery task of the chat mode; annotation/tasks.py imports it so workers discover it."""

from celery import shared_task

from annotation.chat import services


# The gpu queue is named here because config/settings.py routes only models_registry and
# training tasks there by pattern.
@shared_task(name="annotation.chat_replies_generate_task", queue="gpu", acks_late=True)
def chat_replies_generate_task(prompt_id: int) -> None:
    services.chat_replies_generate(prompt_id=prompt_id)
