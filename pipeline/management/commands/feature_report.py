from django.core.management.base import BaseCommand
from django.db.models import Count

from pipeline.models import Feature
from pipeline.steps.features import FEATURE_VERSION
from pipeline.steps.features.registry import feature_table


class Command(BaseCommand):
    help = (
        "How many objects miss each light-curve feature, and why (feature x reason counts); "
        "--registry lists every feature with its group, band, unit, meaning and whether the definition is "
        "ALeRCE's or ours."
    )

    def add_arguments(self, parser):
        parser.add_argument("--feature-version", default=FEATURE_VERSION)
        parser.add_argument("--registry", action="store_true", help="List the features instead (Markdown table)")

    def handle(self, *args, feature_version, registry, **opts):
        if registry:
            self.stdout.write(f"Light-curve features {FEATURE_VERSION}\n\n"
                              "| name | group | band | unit | meaning | definition |\n|---|---|---|---|---|---|")
            for name, group, band, meaning, unit, definition in feature_table():
                self.stdout.write(f"| {name} | {group} | {'gr'[band - 1] if band else ''} | {unit} | {meaning} | {definition} |")
            return
        version = feature_version
        rows = (
            Feature.objects.filter(version=version)
            .exclude(missing_reason="")
            .values("name", "missing_reason")
            .annotate(n=Count("id"))
            .order_by("name", "-n")
        )
        objects = Feature.objects.filter(version=version).values("oid").distinct().count()
        self.stdout.write(f"{objects} objects with features {version}; missing values by feature and reason:")
        for row in rows:
            self.stdout.write(f"  {row['name']:<32} {row['missing_reason']:<28} {row['n']:>8}")
