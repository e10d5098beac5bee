from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("catalogue", "0021_runchunk_failure_reasons"),
    ]

    operations = [
        migrations.AddField(
            model_name="preprocessed",
            name="scaling_fallback",
            field=models.BooleanField(
                default=False,
                db_default=False,
                help_text="no scaling value brings this image's noise to the target level (too shallow): the closest one was used",
            ),
        ),
    ]
