from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from pipeline.workflow import batches
from pipeline.workflow.timing import step_report


class Command(BaseCommand):
    help = "Block until every queued canvas (e.g. of `ingest --no-wait`) has finished or failed, then print the summary."

    def add_arguments(self, parser):
        parser.add_argument("batch_ids", nargs="*", help="Only these batches (default: every queued canvas)")
        parser.add_argument("--timeout", type=float, help="Give up after SECONDS (exit code 1)")
        parser.add_argument("--stall", type=float, default=settings.WAIT_STALL_SECONDS,
                            help="Give up (exit code 1) when no step has finished on the awaited batches for "
                                 "SECONDS (default WAIT_STALL_SECONDS, %(default)s; 0: never)")

    def handle(self, *args, batch_ids, timeout, stall, **opts):
        from pipeline.models import BatchCanvas

        ids = batch_ids or list(BatchCanvas.objects.filter(state=BatchCanvas.QUEUED).values_list("batch_id", flat=True))
        still = batches.wait(ids, timeout=timeout, stall=stall)
        counts, failures = batches.summary(ids)
        self.stdout.write(f"Canvases of {len(ids)} batch(es): " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        self.stdout.write(step_report(ids))
        if still:
            raise CommandError(str(still))
        if failures:
            raise CommandError("failed:\n" + "\n".join(failures))
