"""Drive ingestion from the command line: batches, progress bar, the canvas of each batch, a summary."""
import logging
import sys
import time

from tqdm import tqdm

from pipeline.backends import archive
import errno

from pipeline.ingest.batch import TRANSIENT_ERRORS, IngestSummary, ingest_batch
from pipeline.ingest.sources import Limits, batched, iter_packets
from pipeline.workflow import batches

log = logging.getLogger(__name__)
_FULL = {errno.ENOSPC, errno.EDQUOT}


class IngestStopped(Exception):
    """A batch could not be stored (a fault of the archive or the database, not of the input, that
    retrying did not cure): reading stops. ``summary`` is what the earlier batches stored; the
    failed batch was rolled back whole (no row, no archived packet)."""

    def __init__(self, cause, summary):
        self.cause = cause
        self.summary = summary
        full = isinstance(cause, OSError) and cause.errno in _FULL
        what = "the archive's disk is full" if full else f"{type(cause).__name__}: {cause}"
        super().__init__(f"{what} ({cause})" if full else what)
        self.disk_full = full


def ingest_paths(paths, batch_size, pipeline=True, wait=True, progress=True, limits=Limits()):
    """Ingest everything under ``paths``; returns the IngestSummary (with step failures, if any).

    With workers, a lost broker is waited for; if it stays away, reading stops and ``batches.BrokerLost``
    is raised (its ``summary`` is what was stored): the stored batches are recorded as not launched.
    """
    total = IngestSummary()
    launched = []
    bar = tqdm(desc="alerts", unit="alert", disable=not progress, file=sys.stderr)
    for items in batched(iter_packets(paths, limits), batch_size, limits.max_batch_bytes):
        try:
            result = ingest_retrying(items)
        except TRANSIENT_ERRORS as exc:
            bar.close()
            log.error("ingest stopped: %s", exc)
            raise IngestStopped(exc, total) from exc
        total.add(result.summary)
        total.batch_ids.append(result.batch_id)
        bar.update(result.summary.alerts_read)
        if pipeline:
            try:
                handle = batches.launch(result.batch_id, result.oids, result.new_oids)
            except batches.BrokerLost as exc:
                bar.close()
                exc.summary = total
                raise
            except Exception as exc:  # a failed step must not stop ingestion: alerts are stored
                log.exception("pipeline failed for batch %s", result.batch_id)
                total.step_failures.append(f"batch {result.batch_id}: {exc!r}")
                continue
            if handle is not None:
                launched.append(result.batch_id)
    bar.close()
    if wait and launched and not batches.eager():
        still = batches.wait(launched)
        total.step_failures.extend(batches.summary(launched)[1])
        if still:
            total.step_failures.append(str(still))
    if wait and launched:  # objects a step could not process count as that batch's failure
        total.step_failures.extend(batches.step_quarantines(launched))
    return total


def ingest_retrying(items, attempts=3):
    """Ingest a batch; a transient database fault (deadlock, lost connection) rolls the batch back
    whole, so it is simply run again."""
    from django.db import InterfaceError, OperationalError, close_old_connections, connection

    for attempt in range(attempts):
        try:
            return ingest_batch(items, archive())
        except (OperationalError, InterfaceError) as exc:
            if attempt == attempts - 1:
                raise
            log.warning("batch rolled back (%s); ingesting it again", exc)
            if connection.connection is not None and not connection.is_usable():
                connection.close()
            close_old_connections()
            time.sleep(0.5 * (attempt + 1))
