"""Running migrations on a real schema in a test (Django's MigrationExecutor): go to a
state, and hold the schema at an old state for a test, putting it back to the latest after."""

from contextlib import contextmanager

from django.db import connection
from django.db.migrations.executor import MigrationExecutor


def migrate_to(targets):
    """Migrate the test database to ``targets``; returns the apps of that state."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@contextmanager
def schema_at(targets):
    """The schema as it was at ``targets`` (its apps), put back to the latest afterwards."""
    try:
        yield migrate_to(targets)
    finally:
        migrate_to(MigrationExecutor(connection).loader.graph.leaf_nodes())
