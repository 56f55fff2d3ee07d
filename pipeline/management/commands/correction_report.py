from django.core.management.base import BaseCommand

from pipeline.models import Object
from pipeline.steps import magstats
from pipeline.steps.correction import flag_summary
from pipeline.store import loaders


class Command(BaseCommand):
    help = (
        "Correction flags of the stored detections (all objects, or the OIDs given): how many are corrected "
        "and dubious, and how many objects' stellar flag ALeRCE's chained sharpnr comparison would change."
    )

    def add_arguments(self, parser):
        parser.add_argument("oids", nargs="*")

    def handle(self, *args, oids, **opts):
        oids = oids or list(Object.objects.values_list("oid", flat=True))
        fields = list(dict.fromkeys(loaders.MAGSTATS_INPUT_FIELDS + magstats.STELLAR_INPUTS))
        summary = flag_summary(loaders.detections(oids, fields))
        for name, value in summary.items():
            self.stdout.write(f"{name:<36} {value:>8}")
