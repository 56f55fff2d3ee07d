from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from pipeline.models import Object
from pipeline.store.locks import database_writer
from pipeline.workflow import canvas
from pipeline.workflow.timing import new_batch_id


class Command(BaseCommand):
    help = (
        "Run the step graph again (cross-match, correction, magstats, features, classifiers) for stored objects, "
        "in batches: after a failed batch, a new catalogue, or a new version of a step. --stamps adds the stamp "
        "classifier (first alert of each ZTF object), which otherwise runs only for new objects."
    )

    def add_arguments(self, parser):
        parser.add_argument("oids", nargs="*", help="Objects to reprocess")
        parser.add_argument("--all", action="store_true", help="Every object in the database")
        parser.add_argument("--batch-size", type=int, default=settings.ALERT_BATCH_SIZE)
        parser.add_argument("--stamps", action="store_true",
                            help="Classify the stamps again too (after a new stamp model; `repair` does it by itself)")

    def handle(self, *args, oids, batch_size, stamps, **opts):
        if opts["all"]:
            oids = list(Object.objects.order_by("oid").values_list("oid", flat=True))
        elif not oids:
            raise CommandError("name objects to reprocess, or --all")
        unknown = set(oids) - set(Object.objects.filter(oid__in=oids).values_list("oid", flat=True))
        if unknown:
            raise CommandError(f"unknown objects: {', '.join(sorted(unknown)[:10])}")
        if stamps and not settings.STAMP_CLASSIFIER_ENABLED:
            raise CommandError("--stamps: the stamp classifier is off (STAMP_CLASSIFIER=off)")
        batches = [oids[start : start + batch_size] for start in range(0, len(oids), batch_size)]
        with database_writer("reprocess", self.stderr):  # SQLite: one writer at a time, beside ingest/repair
            handles = [canvas.build(new_batch_id(), batch, new_oids=batch if stamps else ()).apply_async()
                       for batch in batches]
            for handle in handles:
                handle.get(disable_sync_subtasks=False)
        self.stdout.write(f"reprocessed {len(oids)} objects in {len(handles)} batches")
