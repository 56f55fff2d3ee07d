"""The stamp classifier step on the database: first alert of each object -> probabilities.

The first alert is the object's earliest by time with cutouts, whatever the arrival order; the step
records it (``Object.stamp_candid``), and an object whose batch brings an earlier one is classified
again (``loaders.stamp_outdated``, used by ingest and by ``repair``).

Cutouts are not in the database: the step reads each first alert's raw packet from the archive
(``RawAlert.archive_key``; a multi-alert file is stored once, so the record is picked by candid),
decodes its three cutouts and candidate, and calls ``pipeline.steps.stamps``. An alert whose packet
or cutouts cannot be used goes to the quarantine for this step only (``step='stamp_classifier'``);
the object's other steps are not affected.
"""
import hashlib
import logging
from functools import cache

from django.conf import settings
from django.db import transaction

from pipeline.backends import archive
from pipeline.ingest.storage import ArchiveMissing
from pipeline.models import Probability, Quarantine, RawAlert
from pipeline.steps import stamps
from pipeline.store import db, loaders
from pipeline.surveys.base import BadAlert
from pipeline.surveys.ztf import decode_container
from pipeline.workflow.faults import load_model

log = logging.getLogger(__name__)

STEP = stamps.CLASSIFIER_NAME


@cache
def classifier():
    """The stamp classifier of ``settings.STAMP_CLASSIFIER_DIR``, loaded once per process; logs the device."""
    folder = settings.STAMP_CLASSIFIER_DIR
    model = load_model(f"stamp classifier {folder}", stamps.StampClassifier.load, folder)
    device = stamps.device_description()
    if device.startswith("GPU"):
        log.info("stamp classifier %s runs on %s", model.version, device)
    else:
        log.warning("stamp classifier %s: no GPU visible to TensorFlow, running on the CPU", model.version)
    return model


def first_alerts(oids):
    """(candid, oid, archive_key) of each ZTF object's first alert by time with cutouts
    (``loaders.first_stamp_alerts``), whatever order the alerts arrived in."""
    first = loaders.first_stamp_alerts(oids)
    keys = dict(RawAlert.objects.filter(survey="ztf", candid__in=list(first.values())).values_list("candid", "archive_key"))
    return [(first[oid], oid, keys[first[oid]]) for oid in sorted(first)]


def load_records(alerts, store):
    """The decoded Avro record of each (candid, oid, key); problems as {candid: (reason, bytes)}."""
    records, problems, packets = {}, {}, {}
    for candid, oid, key in alerts:
        try:
            if key not in packets:
                packets[key] = store.load(key)
            data = packets[key]
            record = next((r for r in decode_container(data) if r.get("candid") == candid), None)
            if record is None:
                raise BadAlert(f"archived packet {key} holds no alert {candid}")
            records[candid] = (record, data)
        except ArchiveMissing:
            problems[candid] = (f"raw packet missing from the archive ({key})", b"")
        except BadAlert as exc:
            problems[candid] = (f"archived packet unreadable: {exc.reason}", packets.get(key, b""))
    return records, problems


def classify_new_objects(oids, batch_id=""):
    """Classify the first alert of each object in ``oids``; returns the number of objects classified."""
    alerts = first_alerts(oids)
    if not alerts:
        return 0
    records, problems = load_records(alerts, archive())
    usable = [(candid, oid, key) for candid, oid, key in alerts if candid in records]
    batch = stamps.prepare_alerts([records[candid][0] for candid, _, _ in usable])
    for i, reason in batch.rejected:
        candid = usable[i][0]
        problems[candid] = (reason, records[candid][1])
    quarantine(alerts, problems, batch_id)
    if not batch.index:
        return _write(alerts, [])
    model = classifier()
    probabilities = model.predict_proba(batch.stacks, batch.features, batch_size=settings.STAMP_CLASSIFIER_BATCH)
    oids_done = [usable[i][1] for i in batch.index]
    rows = stamps.probability_rows(oids_done, probabilities, model.version)
    return _write(alerts, rows)


def _write(alerts, rows):
    """Write the probabilities and the alert taken (``Object.stamp_candid``) of the objects whose first
    alert is still the one classified: one that an earlier alert overtook meanwhile is left to the
    batch that brought it (or to ``repair``)."""
    taken = {oid: candid for candid, oid, _ in alerts}
    with transaction.atomic():
        current = loaders.first_stamp_alerts(list(taken))
        still = {oid: candid for oid, candid in taken.items() if current.get(oid) == candid}
        if len(still) < len(taken):
            log.info("stamp classifier: %d objects got an earlier alert meanwhile; not written", len(taken) - len(still))
        loaders.record_stamp_candids(still)
        rows = [row for row in rows if row["oid"] in still]
        if rows:
            db.upsert(Probability, rows, unique_fields=["oid", "classifier_name", "classifier_version", "class_name"],
                      update_fields=["probability", "ranking"])
    return len({row["oid"] for row in rows})


def quarantine(alerts, problems, batch_id):
    """One quarantine row per unusable alert for this step (keyed by its packet's bytes, or its candid)."""
    if not problems:
        return
    where = {candid: (oid, key) for candid, oid, key in alerts}
    now = db.now_param()
    rows = []
    for candid, (reason, data) in problems.items():
        oid, key = where[candid]
        log.warning("stamp classifier: alert %s of %s quarantined: %s", candid, oid, reason)
        digest = hashlib.sha256(data or f"{STEP}|{candid}".encode()).hexdigest()
        rows.append(dict(sha256=digest, reason=reason, source=key, archive_key=key if data else "",
                         size=len(data), oid=oid, candid=candid, batch_id=batch_id, step=STEP, created=now))
    db.insert_ignore(Quarantine, list({r["sha256"]: r for r in rows}.values()), returning="sha256")
