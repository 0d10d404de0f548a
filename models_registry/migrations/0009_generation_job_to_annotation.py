"""Generation jobs now belong to annotation (annotation 0008_generation_jobs_move, which
keeps this app's table ``models_registry_generationjob`` and its rows): only the model
leaves the registry's state; the database is not touched."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("models_registry", "0008_serving_endpoint"),
        ("annotation", "0008_generation_jobs_move"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="GenerationJob")],
            database_operations=[],
        ),
    ]
