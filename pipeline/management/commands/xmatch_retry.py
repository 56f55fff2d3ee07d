from django.core.management.base import BaseCommand

from pipeline.workflow.ops_tasks import retry_pending_xmatch


class Command(BaseCommand):
    help = "Cross-match the objects queued after a failed cross-match (also run every XMATCH_RETRY_MINUTES by celery beat)."

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=1000)

    def handle(self, *args, limit, **opts):
        self.stdout.write(f"retried {retry_pending_xmatch(limit)} objects")
