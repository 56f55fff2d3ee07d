from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("pipeline", "0002_probability_outliers_quarantine_step")]

    operations = [
        migrations.AlterField(
            model_name="quarantine",
            name="size",
            field=models.BigIntegerField(default=0, help_text="Bytes of the whole input (the archive keeps a bounded prefix)"),
        ),
    ]
