"""Drive ingestion from the command line: batches, progress bar, the canvas of each batch, a summary."""
import logging
import sys

from tqdm import tqdm

from . import canvas
from .backends import archive
from .ingest import IngestSummary, ingest_batch
from .sources import Limits, batched, iter_packets

log = logging.getLogger(__name__)


def ingest_paths(paths, batch_size, pipeline=True, wait=True, progress=True, limits=Limits()):
    """Ingest everything under ``paths``; returns the IngestSummary (with step failures, if any)."""
    total = IngestSummary()
    pending = []
    bar = tqdm(desc="alerts", unit="alert", disable=not progress, file=sys.stderr)
    for items in batched(iter_packets(paths, limits), batch_size, limits.max_batch_bytes):
        result = ingest_batch(items, archive())
        total.add(result.summary)
        total.batch_ids.append(result.batch_id)
        bar.update(result.summary.alerts_read)
        if pipeline:
            try:
                handle = canvas.launch(result)
            except Exception as exc:  # a failed step must not stop ingestion: alerts are stored
                log.exception("pipeline failed for batch %s", result.batch_id)
                total.step_failures.append(f"batch {result.batch_id}: {exc!r}")
                continue
            if handle is not None:
                pending.append((result.batch_id, handle))
    bar.close()
    if wait:
        for batch_id, handle in pending:
            try:
                handle.get(disable_sync_subtasks=False, propagate=True)
            except Exception as exc:
                total.step_failures.append(f"batch {batch_id}: {exc!r}")
    return total


def step_report(batch_ids):
    """Per step: batches done, items handled and the median / max seconds a batch took."""
    from statistics import median

    from .models import StepTiming

    rows = {}
    for step, started, finished, n in StepTiming.objects.filter(batch_id__in=batch_ids).values_list(
        "step", "started", "finished", "n"
    ):
        rows.setdefault(step, []).append(((finished - started).total_seconds(), n))
    lines = ["Steps (seconds per batch)"]
    for step in ("ingest", "xmatch", "correct", "magstats", "features", "stamp_classifier", "lc_classifier",
                 "outliers", "publish"):
        if step in rows:
            seconds = [s for s, _ in rows[step]]
            lines.append(
                f"  {step:<16} {len(seconds):>4} batches {sum(n for _, n in rows[step]):>7} items"
                f"   median {median(seconds):6.2f}   max {max(seconds):6.2f}"
            )
    return "\n".join(lines)
