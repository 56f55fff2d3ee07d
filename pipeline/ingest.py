"""Ingest step: raw packets -> archive + object/detection/non-detection rows, one batch at a time.

A batch is decoded and parsed in memory, the raw bytes go to the archive, and every table gets one
multi-row write. Writes skip what is already stored (keys: candid, (oid, fid, mjd), oid), so
re-ingesting the same alerts changes nothing. Bad input is quarantined with its reason; the rest of
the batch goes on.
"""
import hashlib
import logging
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import db
from .models import (
    Detection, ForcedPhotometry, Gaia, NonDetection, Object, Ps1, Quarantine, RawAlert, SolarSystem, StepTiming,
)
from .sources import Packet, SourceProblem
from .storage import alert_key, quarantine_key
from .surveys.base import BadAlert
from .surveys.dispatch import decode_packet, parse_record
from .surveys.ztf import is_simulated_oid

log = logging.getLogger(__name__)

_ARCHIVE_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive")
OBJECT_HISTORY_FIELDS = ["ndethist", "ncovhist", "mjdstarthist", "mjdendhist"]


@dataclass
class IngestSummary:
    alerts_read: int = 0
    new_objects: int = 0
    detections: int = 0
    non_detections: int = 0
    forced_photometry: int = 0
    duplicates_skipped: int = 0
    quarantined: int = 0
    batches: int = 0
    step_failures: list = field(default_factory=list)
    batch_ids: list = field(default_factory=list)

    def add(self, other):
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def as_dict(self):
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "batch_ids"}

    def report(self):
        lines = [
            "Ingest summary",
            f"  alerts read          {self.alerts_read}",
            f"  new objects          {self.new_objects}",
            f"  new detections       {self.detections}",
            f"  new non-detections   {self.non_detections}",
            f"  new forced phot.     {self.forced_photometry}",
            f"  duplicates skipped   {self.duplicates_skipped}",
            f"  quarantined          {self.quarantined}",
            f"  batches              {self.batches}",
        ]
        if self.step_failures:
            lines.append(f"  steps failed in {len(self.step_failures)} batch(es):")
            lines += [f"    {failure}" for failure in self.step_failures]
        return "\n".join(lines)


@dataclass
class BatchResult:
    batch_id: str
    summary: IngestSummary
    oids: list = field(default_factory=list)
    new_oids: list = field(default_factory=list)  # first seen in this batch: the stamp classifier's input
    quarantine_reasons: list = field(default_factory=list)


@dataclass
class _Rejected:
    source: str
    reason: str
    data: bytes
    oid: str = ""
    candid: int | None = None

    @property
    def sha256(self):
        payload = self.data or f"{self.source}|{self.reason}".encode()
        return hashlib.sha256(payload).hexdigest()


def new_batch_id():
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


def parse_packets(items):
    """Decode and parse a batch. Returns (alerts as (packet, ParsedAlert), rejected)."""
    alerts, rejected = [], []
    for item in items:
        if isinstance(item, SourceProblem):
            rejected.append(_Rejected(item.source, item.reason, item.data))
            continue
        try:
            records, version = decode_packet(item.data, settings.LSST_SCHEMAS)
        except BadAlert as exc:
            rejected.append(_Rejected(item.source, exc.reason, item.data))
            continue
        for record in records:
            try:
                alerts.append((item, parse_record(record, version)))
            except BadAlert as exc:
                rejected.append(
                    _Rejected(item.source, exc.reason, item.data, getattr(exc, "oid", "") or "", getattr(exc, "candid", None))
                )
    return alerts, rejected


def _collect_rows(alerts):
    """Merge the batch's records, one row per key; the alert's own candidate beats a prv copy."""
    objects, detections, non_detections, forced = {}, {}, {}, {}
    ps1, gaia, ss = {}, {}, {}
    for packet, alert in alerts:
        obj = objects.get(alert.oid)
        if obj is None or (alert.object_fields.get("mjdendhist") or 0) >= (obj.get("mjdendhist") or 0):
            objects[alert.oid] = dict(alert.object_fields)
        for det in alert.prv_detections:
            detections.setdefault(det["candid"], det)
        detections[alert.candid] = alert.detection
        for nd in alert.non_detections:
            non_detections.setdefault((nd["oid"], nd["fid"], nd["mjd"]), nd)
        for fp in alert.forced_photometry:
            if fp["fid"] is not None:
                forced.setdefault((fp["oid"], fp["fid"], fp["mjd"]), fp)
        for target, row in ((ps1, alert.ps1), (gaia, alert.gaia), (ss, alert.ss)):
            if row and (alert.oid not in target or row["candid"] > target[alert.oid]["candid"]):
                target[alert.oid] = row
    return objects, detections, non_detections, forced, ps1, gaia, ss


def _write_objects(objects, now):
    rows = []
    for oid, fields_ in objects.items():
        row = {name: fields_.get(name) for name in OBJECT_HISTORY_FIELDS}
        row.update(
            oid=oid,
            survey=fields_.get("survey", "ztf"),
            simulated=fields_.get("simulated") or is_simulated_oid(oid),
            meanra=fields_["ra"],
            meandec=fields_["dec"],
            ndet=0,
            step_id_corr="",
            created=now,
            updated=now,
        )
        rows.append(row)
    new_oids = db.insert_ignore(Object, rows)
    new = set(new_oids)
    db.upsert(
        Object,
        [r for r in rows if r["oid"] not in new],
        unique_fields=["oid"],
        update_fields=OBJECT_HISTORY_FIELDS + ["updated"],
        newer_than="mjdendhist",
    )
    return new_oids


def quarantine(rejected, archive, batch_id, now):
    """Keep rejected input aside: bytes in the archive, a row with the reason (once per distinct input)."""
    if not rejected:
        return
    rows, blobs = [], []
    for item in rejected:
        digest = item.sha256
        key = quarantine_key(digest) if item.data else ""
        if item.data:
            blobs.append((key, item.data))
        log.warning("quarantined %s: %s", item.source, item.reason)
        rows.append(
            dict(
                sha256=digest,
                reason=item.reason,
                source=item.source[-512:],
                archive_key=key,
                size=len(item.data),
                oid=item.oid or "",
                candid=item.candid,
                batch_id=batch_id,
                created=now,
            )
        )
    archive.save_many(blobs)
    db.insert_ignore(Quarantine, _unique_by(rows, "sha256"), returning="sha256")


def _same_keys(model, rows):
    """Rows of one batch with one set of keys: a survey's extra columns get the model default (or None)
    in the other survey's rows, so a mixed ZTF + Rubin batch loses no column."""
    rows = list(rows)
    keys = dict.fromkeys(rows[0]) if rows else {}
    for row in rows:
        if len(row) != len(keys) or any(k not in keys for k in row):
            keys.update(dict.fromkeys(row))
    if not rows or all(len(row) == len(keys) for row in rows):
        return rows
    defaults = {name: model._meta.get_field(name).get_default() for name in keys}
    return [row if len(row) == len(keys) else {**defaults, **row} for row in rows]


def _unique_by(rows, key):
    return list({row[key]: row for row in rows}.values())


def record_timing(batch_id, step, started, n):
    StepTiming.objects.update_or_create(
        batch_id=batch_id,
        step=step,
        defaults=dict(started=started, finished=timezone.now(), n=n, hostname=socket.gethostname()),
    )


def ingest_batch(items, archive) -> BatchResult:
    """Ingest one batch of Packet/SourceProblem items. Safe to repeat: nothing is written twice."""
    batch_id = new_batch_id()
    started = timezone.now()
    summary = IngestSummary(batches=1, alerts_read=sum(1 for item in items if isinstance(item, Packet)))
    alerts, rejected = parse_packets(items)

    seen, fresh = set(), []
    known = db.existing_values(RawAlert, "candid", [a.candid for _, a in alerts])
    for packet, alert in alerts:
        if alert.candid in known or alert.candid in seen:
            summary.duplicates_skipped += 1
            continue
        seen.add(alert.candid)
        fresh.append((packet, alert))

    objects, detections, non_detections, forced, ps1, gaia, ss = _collect_rows(fresh)
    now = db.now_param()
    packet_keys = _packet_keys(fresh)
    # Raw bytes are written while the rows are; the transaction commits only once they are stored.
    archiving = _ARCHIVE_WRITER.submit(archive.save_many, [(key, p.data) for p, key in packet_keys.values()])
    with transaction.atomic():
        new_oids = _write_objects(objects, now)
        summary.new_objects = len(new_oids)
        inserted = set(db.insert_ignore(Detection, _same_keys(Detection, detections.values())))
        summary.detections = len(inserted)
        # An alert's own candidate may already be stored as a prv copy from a later alert: the alert's
        # version (with its stamp flag and the PS1 fields a prv copy lacks) replaces it.
        known_own = [alert.detection for _, alert in fresh if alert.candid not in inserted]
        if known_own:
            known_own = _same_keys(Detection, known_own)
            db.upsert(Detection, known_own, unique_fields=["candid"], update_fields=list(known_own[0]))
        summary.non_detections = len(db.insert_ignore(NonDetection, list(non_detections.values())))
        summary.forced_photometry = len(db.insert_ignore(ForcedPhotometry, _same_keys(ForcedPhotometry, forced.values())))
        for model, rows in ((Ps1, ps1), (Gaia, gaia), (SolarSystem, ss)):
            rows = list(rows.values())
            if rows:
                update = [name for name in rows[0] if name != "oid"]
                db.upsert(model, rows, unique_fields=["oid"], update_fields=update, newer_than="candid")
        db.insert_ignore(
            RawAlert, [_raw_row(packet, alert, packet_keys[id(packet)][1], batch_id, now) for packet, alert in fresh]
        )
        quarantine(rejected, archive, batch_id, now)
        summary.quarantined = len(rejected)
        archiving.result()
        record_timing(batch_id, "ingest", started, len(fresh))
    return BatchResult(
        batch_id=batch_id,
        summary=summary,
        oids=sorted(objects),
        new_oids=sorted(new_oids),
        quarantine_reasons=[(r.source, r.reason) for r in rejected],
    )


def _packet_keys(fresh):
    """Archive key of each packet: its (first) alert's candid; a multi-alert file is stored once."""
    keys = {}
    for packet, alert in fresh:
        keys.setdefault(id(packet), (packet, alert_key(alert.candid)))
    return keys


def _raw_row(packet, alert, key, batch_id, now):
    return dict(
        candid=alert.candid,
        oid=alert.oid,
        archive_key=key,
        schemavsn=alert.schemavsn,
        publisher=(alert.publisher or "")[:128] or None,
        size=len(packet.data),
        batch_id=batch_id,
        ingested=now,
    )
