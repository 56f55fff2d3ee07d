from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from pipeline import canvas
from pipeline.ingest import new_batch_id
from pipeline.models import Object


class Command(BaseCommand):
    help = (
        "Run the step graph again (cross-match, correction, magstats, features) for stored objects, in batches: "
        "after a failed batch, a new catalogue, or a new version of a step."
    )

    def add_arguments(self, parser):
        parser.add_argument("oids", nargs="*", help="Objects to reprocess")
        parser.add_argument("--all", action="store_true", help="Every object in the database")
        parser.add_argument("--batch-size", type=int, default=settings.ALERT_BATCH_SIZE)

    def handle(self, *args, oids, batch_size, **opts):
        if opts["all"]:
            oids = list(Object.objects.order_by("oid").values_list("oid", flat=True))
        elif not oids:
            raise CommandError("name objects to reprocess, or --all")
        unknown = set(oids) - set(Object.objects.filter(oid__in=oids).values_list("oid", flat=True))
        if unknown:
            raise CommandError(f"unknown objects: {', '.join(sorted(unknown)[:10])}")
        handles = [
            canvas.build(new_batch_id(), oids[start : start + batch_size]).apply_async()
            for start in range(0, len(oids), batch_size)
        ]
        for handle in handles:
            handle.get(disable_sync_subtasks=False)
        self.stdout.write(f"reprocessed {len(oids)} objects in {len(handles)} batches")
