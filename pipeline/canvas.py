"""The step graph of one batch; the only place that knows the order of the steps.

    ingest ─> group(xmatch, correct) ─> magstats ─> features ─> lc_classify ─> outliers ─> publish
           └> stamp_classify (new objects only, queue gpu; see with_stamps)

Tasks get immutable signatures ``(batch_id, oids)``: small messages; the data stay in the database.
Without a broker the same canvas runs eagerly in-process.
"""
from celery import chain, group
from django.conf import settings

from . import tasks


def build(batch_id, oids):
    """The canvas for the objects that received new alerts in batch ``batch_id``."""
    oids = sorted(oids)
    return chain(
        group(tasks.xmatch.si(batch_id, oids), tasks.correct.si(batch_id, oids)),
        tasks.magstats.si(batch_id, oids),
        tasks.features.si(batch_id, oids),
        tasks.lc_classify.si(batch_id, oids),
        tasks.outliers.si(batch_id, oids),
        tasks.publish.si(batch_id, oids),
    )


def with_stamps(canvas, batch_id, new_oids):
    """The batch's canvas with the stamp classifier (queue ``gpu``) on its new objects, in parallel.

    ALeRCE classifies the first alert of each new object only; later alerts of known objects skip it.
    """
    if not new_oids or not settings.STAMP_CLASSIFIER_ENABLED:
        return canvas
    return group(canvas, tasks.stamp_classify.si(batch_id, sorted(new_oids)))


def launch(batch_result):
    """Start the canvas of an ingested batch; returns its AsyncResult, or None when nothing is new."""
    if not batch_result.oids:
        return None
    canvas = build(batch_result.batch_id, batch_result.oids)
    return with_stamps(canvas, batch_result.batch_id, batch_result.new_oids).apply_async()
