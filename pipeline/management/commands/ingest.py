from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from pipeline.farm import BrokerLost
from pipeline.locks import database_writer
from pipeline.runner import ingest_paths, step_report


class Command(BaseCommand):
    help = "Ingest ZTF Avro alerts (files, folders, nightly .tar.gz archives) and run each batch's pipeline."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+")
        parser.add_argument("--batch-size", type=int, default=settings.ALERT_BATCH_SIZE)
        parser.add_argument("--no-pipeline", action="store_true", help="Store the alerts only; run no later step")
        parser.add_argument("--no-wait", action="store_true",
                            help="With workers: return once the batches are queued (then `manage.py wait`)")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **opts):
        try:
            with database_writer("ingest", self.stderr):
                summary = ingest_paths(
                    opts["paths"],
                    batch_size=opts["batch_size"],
                    pipeline=not opts["no_pipeline"],
                    wait=not opts["no_wait"],
                    progress=not opts["no_progress"],
                )
        except BrokerLost as exc:
            self.stdout.write(exc.summary.report())
            raise CommandError(
                f"ingest stopped: {exc}. Batches stored but not launched (recorded in batch_canvas): "
                f"{', '.join(exc.batch_ids)}. The rest of the input was not read. Once the broker is back, run "
                "`manage.py repair` and ingest the same paths again (nothing is stored twice)."
            ) from exc
        self.stdout.write(summary.report())
        if not opts["no_wait"]:
            self.stdout.write(step_report(summary.batch_ids))
