"""Celery tasks of the annotation app (Celery autodiscovers this module in every app)."""

from annotation.chat_tasks import chat_replies_generate_task

__all__ = ["chat_replies_generate_task"]
