from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from pipeline.runner import ingest_paths, step_report
from pipeline.sources import Limits


class Command(BaseCommand):
    help = "Ingest ZTF Avro alerts (files, folders, nightly .tar.gz archives) and run each batch's pipeline."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+")
        parser.add_argument("--batch-size", type=int, default=settings.ALERT_BATCH_SIZE)
        parser.add_argument("--no-pipeline", action="store_true", help="Store the alerts only; run no later step")
        parser.add_argument("--no-wait", action="store_true", help="With workers: do not wait for the steps to finish")
        parser.add_argument("--no-progress", action="store_true")
        parser.add_argument("--max-packet-bytes", type=int, default=Limits.max_packet_bytes,
                            help="Largest file or archive member read as a packet (larger: quarantined, a prefix kept)")
        parser.add_argument("--max-night-bytes", type=int, default=Limits.max_night_bytes,
                            help="Most bytes one archive may expand to; reading stops there, and says so")

    def handle(self, *args, **opts):
        summary = ingest_paths(
            opts["paths"],
            batch_size=opts["batch_size"],
            pipeline=not opts["no_pipeline"],
            wait=not opts["no_wait"],
            progress=not opts["no_progress"],
            limits=Limits(max_packet_bytes=opts["max_packet_bytes"], max_night_bytes=opts["max_night_bytes"]),
        )
        self.stdout.write(summary.report())
        if not opts["no_wait"]:
            self.stdout.write(step_report(summary.batch_ids))
        if summary.failed:  # exit status 1: a path was missing or a batch's steps failed
            problems = [f"{len(summary.missing)} missing path(s)"] * bool(summary.missing)
            problems += [f"steps failed in {len(summary.step_failures)} batch(es)"] * bool(summary.step_failures)
            raise CommandError("ingest incomplete: " + ", ".join(problems))
