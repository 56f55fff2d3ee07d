"""The stamp classifier step on the database: first alert of each new object -> probabilities.

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

from pipeline.backends import archive
from pipeline.ingest.storage import ArchiveMissing
from pipeline.models import Detection, Probability, Quarantine, RawAlert
from pipeline.steps import stamps
from pipeline.store import db
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
    """(candid, oid, archive_key) of the earliest stored alert of each object (by mjd, then candid)."""
    raws = list(RawAlert.objects.filter(oid__in=oids).values_list("candid", "oid", "archive_key"))
    mjd = dict(Detection.objects.filter(candid__in=[r[0] for r in raws]).values_list("candid", "mjd"))
    first = {}
    for candid, oid, key in raws:
        rank = (mjd.get(candid, float("inf")), candid)
        if oid not in first or rank < first[oid][0]:
            first[oid] = (rank, (candid, oid, key))
    return [first[oid][1] for oid in sorted(first)]


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
        return 0
    model = classifier()
    probabilities = model.predict_proba(batch.stacks, batch.features, batch_size=settings.STAMP_CLASSIFIER_BATCH)
    oids_done = [usable[i][1] for i in batch.index]
    rows = stamps.probability_rows(oids_done, probabilities, model.version)
    db.upsert(Probability, rows, unique_fields=["oid", "classifier_name", "classifier_version", "class_name"],
              update_fields=["probability", "ranking"])
    return len(oids_done)


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
