"""The step graph of one batch; the only place that knows the order of the steps.

    ingest ─┬─> group(xmatch, correct) ─> magstats ─> features ─> lc_classify ─> outliers ─┬─> publish
            └─> stamp_classify (new objects only, queue gpu) ──────────────────────────────┘

Tasks get immutable signatures ``(batch_id, oids)``: small messages; the data stay in the database.
The output stream is written last, once both classifiers are done, so each message carries both.
Without a broker the same canvas runs eagerly in-process.
"""
from celery import chain, group
from django.conf import settings

from pipeline.workflow import step_tasks


def light_curve_steps(batch_id, oids):
    """Every step that reads the light curve, in order (queues io and cpu)."""
    return chain(
        group(step_tasks.xmatch.si(batch_id, oids), step_tasks.correct.si(batch_id, oids)),
        step_tasks.magstats.si(batch_id, oids),
        step_tasks.features.si(batch_id, oids),
        step_tasks.lc_classify.si(batch_id, oids),
        step_tasks.outliers.si(batch_id, oids),
    )


def build(batch_id, oids, new_oids=()):
    """The canvas for the objects that received new alerts in batch ``batch_id``.

    ALeRCE classifies stamps of the first alert of each new object only (``new_oids``); later alerts
    of known objects skip it. ``STAMP_CLASSIFIER=off`` leaves the step out (a farm with no gpu worker).
    """
    oids = sorted(oids)
    steps = light_curve_steps(batch_id, oids)
    if new_oids and settings.STAMP_CLASSIFIER_ENABLED:
        steps = group(steps, step_tasks.stamp_classify.si(batch_id, sorted(new_oids)))
    return chain(steps, step_tasks.publish.si(batch_id, oids))

