from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from pipeline.workflow import timing


class Command(BaseCommand):
    help = ("Per step, percentiles of the seconds from each alert's ingestion to the step's end on its batch, "
            "and their cumulative distribution as a PNG (one curve per step).")

    def add_arguments(self, parser):
        parser.add_argument("--png", default=str(settings.VAR_DIR / "timing_cdf.png"))
        parser.add_argument("--since", help="Only alerts ingested from this ISO time on")
        parser.add_argument("--batch", nargs="*", dest="batch_ids", help="Only these batches")

    def handle(self, *args, png, since, batch_ids, **opts):
        lat = timing.latencies(batch_ids or None, parse_datetime(since) if since else None)
        if not lat:
            raise CommandError("no step timings for ingested alerts yet")
        self.stdout.write(timing.report(lat))
        Path(png).parent.mkdir(parents=True, exist_ok=True)
        timing.plot_cdf(lat, png)
        self.stdout.write(f"cumulative distribution: {png}")
