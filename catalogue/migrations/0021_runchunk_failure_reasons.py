# Why a chunk's failed items failed, counted: a stage that fails too many names the commonest.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("catalogue", "0020_created_on_the_database_clock"),
    ]

    operations = [
        migrations.AddField(
            model_name="runchunk",
            name="failure_reasons",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="why its failed items failed: reason -> how many (a stage that failed says the commonest)",
            ),
        ),
    ]
