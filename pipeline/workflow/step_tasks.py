"""The step tasks, thin: load a batch from the database, call one step, bulk-write, return ids.

Every step task has one signature, ``(batch_id, oids)``, records its start and end in StepTiming,
retries only on transient database faults, and is idempotent (writes are upserts on natural keys).
The order of steps lives in canvas.py; tasks that launch canvases live in ops_tasks.py, so this module
imports nothing that imports it back.
"""
import functools
import hashlib
import logging
import time

import psycopg
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, transaction
from django.utils import timezone

from pipeline.backends import xmatch_backend
from pipeline.models import (
    AllWise, Detection, Feature, MagStats, OutlierScore, Probability, Quarantine, Xmatch, XmatchPending,
)
from pipeline.steps import correction, lc_classifier, magstats as magstats_step
from pipeline.steps.features import FEATURE_VERSION, compute_features
from pipeline.steps.xmatch import ALLWISE_PHOTOMETRY, CATALOG, XmatchUnavailable
from pipeline.store import db, loaders
from pipeline.workflow.faults import ENVIRONMENT_ERRORS, load_model
from pipeline.workflow.timing import record_timing

log = logging.getLogger(__name__)

# Django's and the driver's own (psycopg.errors.AdminShutdown is a psycopg.OperationalError).
TRANSIENT_ERRORS = (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)
# The worker's faults, not the input's: retried, then the batch fails (faults.py); nothing quarantined.
RETRIED = TRANSIENT_ERRORS + ENVIRONMENT_ERRORS
NOT_POISON = RETRIED + (SoftTimeLimitExceeded,)
#: Seconds between in-process retries of an eager run: as many, and growing as, a worker's (max_retries=5).
EAGER_RETRY_DELAYS = (1, 2, 4, 8, 16)


def retrying_in_process(name, call):
    """``call()``, retried on transient database faults with backoff, then the last fault raised.

    For eager runs (no broker): there Celery's autoretry only raises ``Retry``, so nothing is retried."""
    for delay in EAGER_RETRY_DELAYS:
        try:
            return call()
        except TRANSIENT_ERRORS as exc:
            close_old_connections()
            delay = min(delay, settings.CELERY_TASK_RETRY_BACKOFF_MAX)
            log.warning("%s: transient database fault, retrying in %s s: %s", name, delay, exc)
            time.sleep(delay)
    return call()


def step_task(step, **options):
    """Register ``fn(oids) -> n`` as the pipeline step ``step``: timing, retries, one contract.

    Transient database faults and faults of the worker's environment (a model or library that will not
    load, OS and memory errors) are retried, then fail the batch. Any other error is the input's: the
    batch is split until the objects that make ``fn`` raise are found; each goes to the quarantine with
    the step and the error, and the rest of the batch is written.
    """

    def decorator(fn):
        @shared_task(
            name=f"{__name__}.{fn.__name__}",
            autoretry_for=RETRIED,
            retry_backoff=True,
            retry_backoff_max=settings.CELERY_TASK_RETRY_BACKOFF_MAX,
            max_retries=5,
            **options,
        )
        @functools.wraps(fn)
        def task(batch_id, oids):
            if task.request.is_eager:
                return retrying_in_process(step, lambda: run_step(batch_id, oids))
            return run_step(batch_id, oids)

        def run_step(batch_id, oids):
            started = timezone.now()
            try:
                n = run_isolating(step, fn, sorted(oids), batch_id)
            except TRANSIENT_ERRORS:
                close_old_connections()
                raise
            record_timing(batch_id, step, started, n)
            return {"batch_id": batch_id, "step": step, "n": n}

        task.step = step
        return task

    return decorator


def run_isolating(step, fn, oids, batch_id):
    """``fn(oids)`` in one transaction; on an input error, halve the batch down to the guilty objects."""
    try:
        with transaction.atomic():
            return fn(list(oids))
    except NOT_POISON:
        raise
    except Exception as exc:
        if len(oids) > 1:
            half = len(oids) // 2
            return run_isolating(step, fn, oids[:half], batch_id) + run_isolating(step, fn, oids[half:], batch_id)
        quarantine_object(step, oids[0], batch_id, exc)
        return 0


def quarantine_object(step, oid, batch_id, exc):
    """An object that makes ``step`` raise: one quarantine row per (object, step, error)."""
    reason = f"{step} failed: {type(exc).__name__}: {exc}"[:4000]
    log.error("quarantined object %s at step %s: %s", oid, step, reason, exc_info=exc)
    digest = hashlib.sha256(f"{step}|{oid}|{reason}".encode()).hexdigest()
    # The source marks a step's failure (batches.STEP_FAILURE_SOURCE), not bad input.
    row = dict(sha256=digest, reason=reason, source=f"step {step}", archive_key="", size=0, oid=oid[:32],
               candid=None, batch_id=batch_id, step=step, created=db.now_param())
    db.insert_ignore(Quarantine, [row], returning="sha256")


@step_task("correct")
def correct(oids):
    stored = loaders.detections(loaders.of_survey(oids, "ztf"), loaders.DETECTION_FIELDS + loaders.CORRECTION_FIELDS)
    if stored.empty:
        return 0
    corrected, objects = correction.correct_objects(stored[loaders.DETECTION_FIELDS])
    changed = loaders.changed_rows(stored, corrected, loaders.CORRECTION_FIELDS)
    rows = corrected.loc[changed, loaders.DETECTION_FIELDS + loaders.CORRECTION_FIELDS]
    # Objects before detections, the order ingest writes them in: the two never deadlock.
    loaders.update_objects(objects, ["corrected", "stellar", "step_id_corr"])
    db.upsert(Detection, rows, unique_fields=["candid", "survey"], update_fields=loaders.CORRECTION_FIELDS)
    return len(rows)


@step_task("magstats")
def magstats(oids):
    fields = list(dict.fromkeys(loaders.MAGSTATS_INPUT_FIELDS + magstats_step.STELLAR_INPUTS))
    detections = loaders.detections(oids, fields)
    if detections.empty:
        return 0
    non_detections = loaders.non_detections(oids)
    flags = loaders.object_flags(oids)
    stats = magstats_step.magstats(detections, non_detections)
    columns = [f.name for f in MagStats._meta.concrete_fields if f.name != "id"]
    stats_rows = stats.reindex(columns=columns)
    db.upsert(MagStats, stats_rows, unique_fields=["oid", "fid"], update_fields=columns[2:])

    per_object = magstats_step.object_stats(detections, flags)
    loaders.update_objects(per_object, loaders.OBJECT_STAT_FIELDS)
    return len(stats_rows)


@step_task("xmatch")
def xmatch(oids):
    objects = loaders.object_positions(oids)
    try:
        matches = xmatch_backend().match(objects, radius_arcsec=settings.XMATCH_RADIUS_ARCSEC)
    except XmatchUnavailable as exc:
        failed = exc.oids or list(objects["oid"])
        log.warning("cross-match unavailable, %d objects queued for retry: %s", len(failed), exc)
        write_xmatches(exc.partial)
        loaders.queue_xmatch_retry(failed, CATALOG, str(exc))
        return len(exc.partial)
    write_xmatches(matches)
    XmatchPending.objects.filter(oid__in=oids, catalog=CATALOG).delete()
    return len(matches)


def write_xmatches(matches):
    if matches.empty:
        return
    sources = matches.drop_duplicates("catid")[["catid", "ra", "dec"] + ALLWISE_PHOTOMETRY]
    db.upsert(AllWise, sources, unique_fields=["catid"], update_fields=["ra", "dec"] + ALLWISE_PHOTOMETRY)
    db.upsert(
        Xmatch,
        matches[["oid", "catalog", "catid", "dist"]],
        unique_fields=["oid", "catalog"],
        update_fields=["catid", "dist"],
    )


@step_task("features")
def features(oids):
    """Features of the objects whose light curve changed since they were last computed."""
    objects = loaders.objects_needing_features(oids, FEATURE_VERSION)
    if objects.empty:
        return 0
    todo = list(objects["oid"])
    result = compute_features(
        loaders.feature_bands(loaders.detections(todo, loaders.FEATURE_INPUT_FIELDS)),
        loaders.feature_bands(loaders.non_detections(todo)),
        objects,
        loaders.allwise_photometry(todo),
    )
    rows = loaders.feature_rows(result)
    db.upsert(Feature, rows, unique_fields=["oid", "name", "version"], update_fields=["fid", "value", "missing_reason"])
    loaders.record_feature_state(result, objects)
    return len(result.values)


@shared_task(name=f"{__name__}.publish", autoretry_for=TRANSIENT_ERRORS, retry_backoff=True, max_retries=5)
def publish(batch_id, oids):
    """Send the objects' alerts not yet on the output stream (one message each; see streams.py).
    An unreachable stream leaves them pending: ``repair`` (or the object's next batch) sends them."""
    if publish.request.is_eager:
        return retrying_in_process("publish", lambda: publish_pending(batch_id, oids))
    return publish_pending(batch_id, oids)


def publish_pending(batch_id, oids):
    from pipeline.output import streams

    started = timezone.now()
    try:
        n = streams.publish(list(oids), batch_id)
    except streams.StreamUnavailable as exc:
        log.warning("output stream unreachable, alerts of %d objects left pending: %s", len(oids), exc)
        n = 0
    record_timing(batch_id, "publish", started, n)
    return {"batch_id": batch_id, "step": "publish", "n": n}


@functools.lru_cache(maxsize=2)
def lc_model(path=None):
    """(classifier, outlier forests) of the saved light-curve classifier, loaded once per process."""
    path = path or settings.LC_CLASSIFIER_MODEL
    log.info("loading the light-curve classifier %s", path)
    return load_model(f"light-curve classifier {path}", lc_classifier.load, path)


def preload_models(queues):
    """Load the models of the steps served from ``queues`` (each worker pool process, as it starts). A
    model that will not load is logged here; its step then retries and fails its batch (faults.py)."""
    loaders_by_queue = {settings.QUEUE_CPU: [lc_model]}
    if settings.STAMP_CLASSIFIER_ENABLED:
        from pipeline.workflow.stamp_step import classifier

        loaders_by_queue[settings.QUEUE_GPU] = [classifier]
    for queue in sorted(set(queues) & set(loaders_by_queue)):
        for load in loaders_by_queue[queue]:
            started = time.monotonic()
            try:
                load()
            except Exception:
                log.exception("model of queue %s not loaded at process start", queue)
                continue
            log.info("model of queue %s loaded at process start in %.1f s", queue, time.monotonic() - started)


@step_task("lc_classifier")
def lc_classify(oids):
    """Light-curve classifier probabilities (every level) of the ZTF objects with stored features that
    pass the gate; the others get no rows (``lc_classifier.gate_reason`` says why). The forest was
    trained on ZTF light curves: Rubin objects are left alone."""
    model, _ = lc_model()
    values = loaders.feature_matrix(loaders.of_survey(oids, "ztf"), FEATURE_VERSION)
    if values.empty:
        return 0
    rows, _, _ = lc_classifier.classify(model, values, FEATURE_VERSION)
    if rows.empty:
        return 0
    db.upsert(Probability, rows, unique_fields=["oid", "classifier_name", "classifier_version", "class_name"],
              update_fields=["probability", "ranking"])
    return len(rows)


@step_task("outliers")
def outliers(oids):
    """Outlier score of each classified object within its predicted branch."""
    model, forests = lc_model()
    branches = loaders.top_branches(oids, model.version)
    if branches.empty or forests is None:
        return 0
    values = loaders.feature_matrix(list(branches.index), FEATURE_VERSION).reindex(branches.index)
    scores = forests.score(values, branches.to_numpy())
    db.upsert(OutlierScore, scores, unique_fields=["oid", "version"], update_fields=["branch", "score", "is_outlier"])
    return len(scores)


@step_task("stamp_classifier")
def stamp_classify(oids):
    """ALeRCE's stamp classifier on the first alert of each new ZTF object (gpu queue; CPU when no GPU)."""
    from pipeline.workflow.stamp_step import classify_new_objects  # TensorFlow loads only where this task runs

    return classify_new_objects(loaders.of_survey(oids, "ztf"))
