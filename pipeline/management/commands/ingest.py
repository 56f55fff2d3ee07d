from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from pipeline.ingest.runner import IngestStopped, ingest_paths
from pipeline.ingest.sources import Limits
from pipeline.store.locks import database_writer
from pipeline.workflow.batches import BrokerLost, retrying_database
from pipeline.workflow.timing import step_report


class Command(BaseCommand):
    help = ("Ingest Avro alerts (ZTF or Rubin; files, folders, nightly .tar.gz archives, or a live Kafka stream "
            "with --kafka) and run each batch's pipeline.")

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="*")
        parser.add_argument("--batch-size", type=int, default=settings.ALERT_BATCH_SIZE)
        parser.add_argument("--no-pipeline", action="store_true", help="Store the alerts only; run no later step")
        parser.add_argument("--no-wait", action="store_true",
                            help="With workers: return once the batches are queued (then `manage.py wait`)")
        parser.add_argument("--no-progress", action="store_true")
        parser.add_argument("--max-packet-bytes", type=int, default=Limits.max_packet_bytes,
                            help="Largest file or archive member read as a packet (larger: quarantined, a prefix kept)")
        parser.add_argument("--max-night-bytes", type=int, default=Limits.max_night_bytes,
                            help="Most bytes one archive may expand to; reading stops there, and says so")
        parser.add_argument("--kafka", metavar="HOST:PORT", help="Consume a Kafka stream instead of files")
        parser.add_argument("--topic", action="append", help="Kafka topic (repeatable), e.g. ztf_20251101_programid1")
        parser.add_argument("--group", help="Kafka consumer group: offsets are committed per group")
        parser.add_argument("--stop-when-idle", type=float, default=None, metavar="SECONDS",
                            help="Kafka: stop after this long without a message (default: run until SIGTERM)")

    def handle(self, *args, **opts):
        if opts["kafka"]:
            if not (opts["topic"] and opts["group"]) or opts["paths"]:
                raise CommandError("--kafka needs --topic and --group, and no paths")
            from pipeline.ingest.kafka import KafkaIngest

            summary = KafkaIngest(opts["kafka"], opts["topic"], opts["group"], batch_size=opts["batch_size"],
                                  pipeline=not opts["no_pipeline"], progress=not opts["no_progress"],
                                  stop_when_idle=opts["stop_when_idle"]).run()
            self.stdout.write(summary.report())
            return
        if not opts["paths"]:
            raise CommandError("give files, folders or archives to ingest, or --kafka HOST:PORT")
        try:
            with database_writer("ingest", self.stderr):
                summary = ingest_paths(
                    opts["paths"],
                    batch_size=opts["batch_size"],
                    pipeline=not opts["no_pipeline"],
                    wait=not opts["no_wait"],
                    progress=not opts["no_progress"],
                    limits=Limits(max_packet_bytes=opts["max_packet_bytes"], max_night_bytes=opts["max_night_bytes"]),
                )
        except IngestStopped as exc:
            self.stdout.write(exc.summary.report())
            advice = "Free space, then ingest" if exc.disk_full else "Once it is fixed, ingest"
            raise CommandError(
                f"ingest stopped: {exc}. The batches above were stored; the failing batch was rolled back and its "
                f"packets removed from the archive; the rest of the input was not read. {advice} the same paths "
                "again (nothing is stored twice)."
            ) from exc
        except BrokerLost as exc:
            self.stdout.write(exc.summary.report())
            raise CommandError(
                f"ingest stopped: {exc}. Batches stored but not launched (recorded in batch_canvas): "
                f"{', '.join(exc.batch_ids)}. The rest of the input was not read. Once the broker is back, run "
                "`manage.py repair` and ingest the same paths again (nothing is stored twice)."
            ) from exc
        self.stdout.write(summary.report())
        if not opts["no_wait"]:
            self.stdout.write(retrying_database(step_report, summary.batch_ids))
        if summary.failed:  # exit status 1: a path was missing or a batch's steps failed
            problems = [f"{len(summary.missing)} missing path(s)"] * bool(summary.missing)
            problems += [f"steps failed in {len(summary.step_failures)} batch(es)"] * bool(summary.step_failures)
            raise CommandError("ingest incomplete: " + ", ".join(problems))
