"""Operational tasks, which launch canvases or run a step outside one: ingest files from a shared
folder, repair objects behind their steps (beat), retry pending cross-matches (beat)."""
from celery import shared_task
from django.conf import settings

from pipeline.ingest.runner import ingest_paths
from pipeline.models import XmatchPending
from pipeline.steps.xmatch import CATALOG
from pipeline.workflow import step_tasks
from pipeline.workflow.repair import repair
from pipeline.workflow.timing import new_batch_id


@shared_task(name=f"{__name__}.retry_pending_xmatch")
def retry_pending_xmatch(limit=1000):
    """Cross-match the objects queued by earlier failures; what fails again stays queued."""
    oids = list(XmatchPending.objects.filter(catalog=CATALOG).order_by("updated").values_list("oid", flat=True)[:limit])
    if oids:
        step_tasks.xmatch(new_batch_id(), oids)
    return len(oids)


@shared_task(name=f"{__name__}.ingest_files", autoretry_for=step_tasks.TRANSIENT_ERRORS, max_retries=3)
def ingest_files(paths, batch_size=None):
    """Ingest files that the worker can read (a shared folder) and launch each batch's canvas."""
    summary = ingest_paths(paths, batch_size or settings.ALERT_BATCH_SIZE, wait=False, progress=False)
    return summary.as_dict()


@shared_task(name=f"{__name__}.repair_behind")
def repair_behind():
    """Beat: re-run the objects whose steps are behind their detections (see workflow/repair.py)."""
    found, batch_ids = repair(settings.ALERT_BATCH_SIZE, settings.REPAIR_MIN_AGE_MINUTES)
    return {step: len(oids) for step, oids in found.items()} | {"batches": len(batch_ids)}
