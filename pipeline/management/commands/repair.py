from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from pipeline.store.locks import database_writer
from pipeline.workflow import batches
from pipeline.workflow.repair import repair


class Command(BaseCommand):
    help = (
        "Find every object whose steps are behind its detections (uncorrected detections, magstats or "
        "features older than the light curve, alerts not yet on the output stream, batches whose canvas was "
        "never launched or failed) and run "
        "the step graph for it again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--min-age", type=float, default=0.0,
                            help="Leave alone objects touched in the last MINUTES (their batch may be in flight)")
        parser.add_argument("--batch-size", type=int, default=settings.ALERT_BATCH_SIZE)
        parser.add_argument("--dry-run", action="store_true", help="Only count what is behind")
        parser.add_argument("--no-wait", action="store_true", help="With workers: do not wait for the canvases")

    def handle(self, *args, min_age, batch_size, dry_run, no_wait, **opts):
        with database_writer("repair", self.stderr):
            found, batch_ids = repair(batch_size, min_age, launch=not dry_run)
            for step, oids in found.items():
                self.stdout.write(f"  behind {step:<12} {len(oids):>7} objects")
            total = len(set().union(*found.values()))
            self.stdout.write(f"{'would re-run' if dry_run else 're-ran'} {total} objects in {len(batch_ids)} batches")
            still = batches.wait(batch_ids) if batch_ids and not no_wait and not batches.eager() else []
            counts, failures = batches.summary(batch_ids)
            if failures:
                raise CommandError("repair batches failed:\n" + "\n".join(failures))
            if still:
                raise CommandError(str(still))
