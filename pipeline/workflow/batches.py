"""Operating the worker farm: launch a batch's canvas with a record of it, wait for the records, and
survive a lost broker (pause, resume, or stop with every unlaunched batch recorded) and a lost database
connection (closed and tried again, as the workers do)."""
import logging
import time

import kombu.exceptions
import redis.exceptions
from celery import current_app
from celery.result import result_from_tuple
from django.conf import settings
from django.db import connection
from django.utils import timezone

from pipeline.models import BatchCanvas, StepTiming
from pipeline.workflow import canvas
from pipeline.workflow.step_tasks import TRANSIENT_ERRORS as DATABASE_ERRORS

log = logging.getLogger(__name__)

BROKER_ERRORS = (
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)


def is_broker_error(exc):
    """A connection fault of the broker or result store, also when Celery re-raised it as another type
    (the result consumer turns a lost Redis into a RuntimeError with the cause attached)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, BROKER_ERRORS) or "Celery result store" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class BrokerLost(Exception):
    """The broker did not come back in time; ``batch_ids`` are stored but their canvases never started."""

    def __init__(self, message, batch_ids):
        super().__init__(message)
        self.batch_ids = batch_ids


def retrying_database(fn, *args, attempts=6, **kwargs):
    """``fn(*args, **kwargs)``, run again after a transient database fault (a terminated connection, a
    restart): the dead connection is closed first. ``fn`` must be safe to repeat."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except DATABASE_ERRORS as exc:
            if attempt == attempts - 1 or connection.in_atomic_block:
                raise
            log.warning("database connection lost (%s); trying again", exc)
            connection.close()
            time.sleep(min(0.5 * 2**attempt, 10.0))


def eager():
    return settings.CELERY_TASK_ALWAYS_EAGER


def broker_alive(timeout=2.0):
    try:
        with current_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:  # any failure to connect means "not now"
        return False


def launch(batch_id, oids, new_oids=(), wait_seconds=None):
    """Start the canvas of a stored batch and record it (BatchCanvas). With workers, a lost broker is
    waited for up to ``wait_seconds``; then the batch is recorded as not launched and BrokerLost raised.
    Eagerly, the steps run here; a step's exception propagates after the record is written.
    ``new_oids`` (first seen in this batch) also get the stamp classifier (see canvas.build)."""
    oids = sorted(oids)
    if not oids:
        return None
    record = BatchCanvas(batch_id=batch_id, oids=oids, launched=timezone.now())
    if eager():
        try:
            handle = _canvas(batch_id, oids, new_oids).apply_async()
            record.state, record.finished = BatchCanvas.DONE, timezone.now()
            return handle
        except Exception as exc:
            record.state, record.error, record.finished = BatchCanvas.FAILED, repr(exc)[:4000], timezone.now()
            raise
        finally:
            retrying_database(record.save)
    wait_seconds = settings.BROKER_LOST_WAIT_SECONDS if wait_seconds is None else wait_seconds
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            handle = _canvas(batch_id, oids, new_oids).apply_async()
        except Exception as exc:
            if not is_broker_error(exc):
                raise
            if time.monotonic() >= deadline:
                record.state, record.error = BatchCanvas.NOT_LAUNCHED, f"broker unreachable: {exc!r}"[:4000]
                retrying_database(record.save)
                raise BrokerLost(f"the broker has been unreachable for {wait_seconds:.0f} s: {exc}", [batch_id])
            log.warning("broker unreachable (%s); batch %s waits for it", exc, batch_id)
            while time.monotonic() < deadline and not broker_alive():
                time.sleep(1.0)
            continue
        record.state, record.result = BatchCanvas.QUEUED, handle.as_tuple()
        retrying_database(record.save)  # the canvas runs: its record must not be lost with a connection
        return handle


def _canvas(batch_id, oids, new_oids):
    return canvas.build(batch_id, oids, new_oids)


def _nodes(result):
    """Every task result of a canvas: the last task, its parents, and the members of groups."""
    seen, stack = [], [result]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        seen.append(node)
        stack.append(node.parent)
        stack.extend(getattr(node, "results", None) or [])
    return seen


def canvas_state(record):
    """DONE when the last task (of every branch) succeeded, FAILED when a task failed for good, else
    QUEUED. A task whose worker process died is requeued (reject on worker lost): not a failure yet."""
    from billiard.exceptions import WorkerLostError

    result = result_from_tuple(record.result)
    if result.successful():
        return BatchCanvas.DONE, ""
    for node in _nodes(result):
        if getattr(node, "results", None) is not None:
            continue  # a group: its members are visited on their own
        if node.state == "FAILURE" and not isinstance(node.result, WorkerLostError):
            return BatchCanvas.FAILED, f"{node.id}: {node.result!r}"[:4000]
    return BatchCanvas.QUEUED, ""


class StillQueued(list):
    """The canvas records ``wait`` gave up on, and ``reason``, why it gave up."""

    def __init__(self, records=(), reason=""):
        super().__init__(records)
        self.reason = reason

    def __str__(self):
        return f"{len(self)} canvas(es) still queued {self.reason}"


def wait(batch_ids=None, timeout=None, poll=1.0, stall=None, broker_wait=None):
    """Block until every queued canvas (of ``batch_ids``, or all) has finished or failed; update the
    records. Returns the records still queued (``StillQueued``, empty when all ended) when ``timeout``
    ran out, when the broker or result store has been unreachable for ``broker_wait`` seconds (default
    BROKER_LOST_WAIT_SECONDS), or when no step finished on them for ``stall`` seconds (default
    WAIT_STALL_SECONDS; 0: never), which is how a lost canvas looks."""
    stall = settings.WAIT_STALL_SECONDS if stall is None else stall
    broker_wait = settings.BROKER_LOST_WAIT_SECONDS if broker_wait is None else broker_wait
    started = time.monotonic()
    last_progress, progress, lost_since = started, None, None
    while True:
        still, store_lost = retrying_database(_poll, batch_ids)
        now = time.monotonic()
        if not still:
            return StillQueued()
        if timeout is not None and now - started >= timeout:
            return StillQueued(still, f"after the {timeout:g} s timeout")
        if not eager() and (store_lost or not broker_alive()):
            lost_since = now if lost_since is None else lost_since
            if now - lost_since >= broker_wait:
                return StillQueued(still, f"with the broker or its result store unreachable for {broker_wait:g} s: "
                                          "once it is back, `manage.py repair` re-runs their objects")
        else:
            lost_since = None
        if stall:
            steps_done = retrying_database(StepTiming.objects.filter(batch_id__in=[r.batch_id for r in still]).count)
            if (len(still), steps_done) != progress:
                last_progress, progress = now, (len(still), steps_done)
            elif now - last_progress >= stall:
                return StillQueued(still, f"with no step finished on them for {stall:g} s: lost canvases? "
                                          "`manage.py repair` re-runs their objects")
        time.sleep(poll)


def _poll(batch_ids):
    """One look at the queued canvases: (records still queued, whether the result store was unreachable)."""
    pending = BatchCanvas.objects.filter(state=BatchCanvas.QUEUED)
    if batch_ids is not None:
        pending = pending.filter(batch_id__in=list(batch_ids))
    still, store_lost = [], False
    for record in pending.order_by("launched"):
        try:
            state, error = canvas_state(record)
        except Exception as exc:  # the result store is away: ask again at the next poll
            if not is_broker_error(exc):
                raise
            log.warning("result store unreachable (%s); waiting", exc)
            state, error, store_lost = BatchCanvas.QUEUED, "", True
        if state == BatchCanvas.QUEUED:
            still.append(record)
            continue
        record.state, record.error, record.finished = state, error, timezone.now()
        record.save(update_fields=["state", "error", "finished"])
    return still, store_lost


def summary(batch_ids=None):
    """Batches per canvas state, and the errors of the failed ones."""
    return retrying_database(_summary, batch_ids)


def _summary(batch_ids):
    records = BatchCanvas.objects.all()
    if batch_ids is not None:
        records = records.filter(batch_id__in=list(batch_ids))
    counts, failures = {}, []
    for batch_id, state, error in records.values_list("batch_id", "state", "error"):
        counts[state] = counts.get(state, 0) + 1
        if state in (BatchCanvas.FAILED, BatchCanvas.NOT_LAUNCHED):
            failures.append(f"batch {batch_id} {state}: {error}")
    return counts, failures


STEP_FAILURE_SOURCE = "step "  # Quarantine.source of an object a step could not process (tasks.quarantine_object)


def step_quarantines(batch_ids):
    """One line per batch whose steps quarantined objects (the rest of the batch went on)."""
    return retrying_database(_step_quarantines, batch_ids)


def _step_quarantines(batch_ids):
    from pipeline.models import Quarantine

    lines = {}
    rows = Quarantine.objects.filter(batch_id__in=list(batch_ids), source__startswith=STEP_FAILURE_SOURCE)
    for batch_id, step, oid, reason in rows.order_by("batch_id", "step", "oid").values_list(
        "batch_id", "step", "oid", "reason"
    ):
        lines.setdefault(batch_id, []).append(f"{oid} at {step}: {reason[:200]}")
    return [f"batch {b}: {len(v)} object(s) quarantined, e.g. {v[0]}" for b, v in lines.items()]
