"""Celery task of the arena; annotation/tasks.py imports it so workers discover it."""

from celery import shared_task

from annotation.arena import services


# The gpu queue is named here because config/settings.py routes only models_registry and
# training tasks there by pattern.
@shared_task(name="annotation.arena_replies_generate_task", queue="gpu", acks_late=True)
def arena_replies_generate_task(battle_id: int) -> None:
    services.arena_replies_generate(battle_id=battle_id)
