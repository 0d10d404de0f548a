from django.db import migrations, models
from django.utils.text import slugify


def fill_model_ids(apps, schema_editor):
    """Existing versions get the id a new one would: the slug of their name, made unique."""
    ModelVersion = apps.get_model("models_registry", "ModelVersion")
    taken = set()
    for version in ModelVersion.objects.order_by("id"):
        stem = slugify(version.name)[:90] or f"version-{version.pk}"
        candidate, n = stem, 1
        while candidate in taken:
            n += 1
            candidate = f"{stem}-{n}"
        taken.add(candidate)
        version.model_id = candidate
        version.save(update_fields=["model_id"])


class Migration(migrations.Migration):
    dependencies = [
        ("models_registry", "0005_states_and_imports"),
    ]

    operations = [
        # A plain column first: a SlugField's own index plus the unique one added below
        # would create PostgreSQL's "_like" index twice.
        migrations.AddField(
            model_name="modelversion",
            name="model_id",
            field=models.CharField(max_length=100, null=True),
        ),
        migrations.RunPython(fill_model_ids, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="modelversion",
            name="model_id",
            field=models.SlugField(
                help_text="Id in URLs and the OpenAI-compatible API (letters, digits, '-', '_').",
                max_length=100,
                unique=True,
            ),
        ),
        migrations.AlterField(
            model_name="modelversion",
            name="name",
            field=models.CharField(help_text="Readable name, for display.", max_length=200, unique=True),
        ),
        migrations.AddField(
            model_name="modelversion",
            name="intermediate",
            field=models.BooleanField(
                default=False,
                help_text="A stage inside a run (the SFT before DPO): kept in the lineage, but it generates no candidates and enters no battle unless an admin releases it.",
            ),
        ),
    ]
