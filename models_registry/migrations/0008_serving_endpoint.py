from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("models_registry", "0007_generation_job_lifecycle"),
    ]

    operations = [
        migrations.AddField(
            model_name="modelversion",
            name="serving_url",
            field=models.CharField(
                blank=True,
                help_text="OpenAI-compatible inference server (vLLM, TGI, SGLang) that serves "
                "this version, up to /v1; empty to generate in-process from the files.",
                max_length=500,
            ),
        ),
        migrations.AddField(
            model_name="modelversion",
            name="served_model_name",
            field=models.CharField(
                blank=True,
                help_text="The model name that server knows this version by.",
                max_length=200,
            ),
        ),
        migrations.AddField(
            model_name="modelversion",
            name="serving_api_key",
            field=models.CharField(
                blank=True,
                help_text="Bearer key for that server; never shown back.",
                max_length=500,
            ),
        ),
    ]
