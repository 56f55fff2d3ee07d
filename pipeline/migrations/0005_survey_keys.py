"""Keys are (survey, id): a Rubin diaSourceId may equal a ZTF candid. Detection, RawAlert and
PublishedAlert get a surrogate primary key and a unique (candid, survey)."""
from django.db import migrations, models

SURVEYS = [("ztf", "ZTF"), ("lsst", "Rubin/LSST")]


def _rekey(model_name, constraint, help_text=None):
    field = models.BigIntegerField(help_text=help_text) if help_text else models.BigIntegerField()
    return [
        migrations.AlterField(model_name=model_name, name="candid", field=field),
        migrations.AddField(model_name=model_name, name="id", field=models.BigAutoField(primary_key=True, serialize=False)),
        migrations.AddConstraint(
            model_name=model_name, constraint=models.UniqueConstraint(fields=("candid", "survey"), name=constraint)),
    ]


def _rubin_rows(apps, schema_editor):
    """Rows stored before: a Rubin object's alerts are Rubin's."""
    rubin = apps.get_model("pipeline", "Object").objects.filter(survey="lsst").values("oid")
    for name in ("RawAlert", "PublishedAlert"):
        apps.get_model("pipeline", name).objects.filter(oid__in=rubin).update(survey="lsst")


class Migration(migrations.Migration):

    dependencies = [
        ("pipeline", "0004_contested_candid"),
    ]

    operations = [
        migrations.AddField(model_name="rawalert", name="survey",
                            field=models.CharField(choices=SURVEYS, default="ztf", max_length=16)),
        migrations.AddField(model_name="publishedalert", name="survey",
                            field=models.CharField(choices=SURVEYS, default="ztf", max_length=16)),
        migrations.RunPython(_rubin_rows, migrations.RunPython.noop),
        *_rekey("detection", "detection_candid_survey",
                "Alert candidate id (ZTF candid, Rubin diaSourceId): unique per survey"),
        *_rekey("rawalert", "raw_alert_candid_survey"),
        *_rekey("publishedalert", "published_alert_candid_survey"),
    ]
