"""Celery task of the arena; annotation/tasks.py imports it so workers discover it."""

from celery import shared_task

from annotation.arena import services


# Interactive work has its own queue and worker so that a labeler's reply never waits behind
# batch generation or training on `gpu`. The queue is named here, the task's one route.
@shared_task(name="annotation.arena_replies_generate_task", queue="interactive", acks_late=True)
def arena_replies_generate_task(battle_id: int) -> None:
    services.arena_replies_generate(battle_id=battle_id)
