# Runs and prediction jobs are stamped by the database's clock (catalogue.selectors.clock).

import django.db.models.functions.datetime
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("catalogue", "0019_covering_indexes"),
    ]

    operations = [
        migrations.AlterField(
            model_name="predictionjob",
            name="created",
            field=models.DateTimeField(db_default=django.db.models.functions.datetime.Now()),
        ),
        migrations.AlterField(
            model_name="run",
            name="created",
            field=models.DateTimeField(db_default=django.db.models.functions.datetime.Now()),
        ),
    ]
