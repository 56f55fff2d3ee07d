"""Ingest step: raw packets -> archive + object/detection/non-detection rows, one batch at a time.

A batch is decoded and parsed in memory, the raw bytes go to the archive, and every table gets one
multi-row write. Writes skip what is already stored (keys: (candid, survey), (oid, fid, mjd), oid), so
re-ingesting the same alerts changes nothing. Bad input is quarantined with its reason; the rest of
the batch goes on, and a batch that fails for a reason no check foresaw is split until the input
that fails it stands alone, and that input is quarantined.

A detection's key is (survey, candid): a Rubin diaSourceId equal to a ZTF candid is another detection.
Copies of one detection (key) that disagree are conflicts, resolved by one rule whatever the
order the copies are read in (``_resolve``), counted in the summary and kept in the quarantine:
- a detection belongs to one object: the object whose own alert it is, whatever the order the
  copies arrive in (an own alert takes its candid back from another object's stored history copy);
  a history copy claiming a candid stored under another oid's own alert is refused (never moved);
- a candid that the histories of several objects carry and that is the own alert of none of them
  is stored for none (``_Contest``): every claim is quarantined, a copy stored before the second claim
  arrived is removed (its object recomputed), and the candid is recorded (``ContestedCandid``) so a
  later claim is refused too: the same end in every order and batch split. (The adapter has already
  dropped history rows far from their alert, so each remaining claim lies near its own object);
- which object's history a row is was decided by the adapter: it drops history detections far
  from the alert's own candidate (another object's history copied in) with the reason;
- for one object, the copy from the alert whose own candidate it is wins, else the copy that lies
  in its night, else the one from the newest alert (largest parent candid);
- a second packet with an ingested candid and different content is refused (the archive keeps the first).
Copies that agree to the precision ZTF writes history rows in (mag 1e-4, deg 1e-5, day 1e-5) are
the same detection, not a conflict.
"""
import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, fields

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from pipeline.ingest.sources import Missing, Packet, Skipped, SourceProblem
from pipeline.ingest.storage import QUARANTINE_PREFIX_BYTES, alert_key, quarantine_key
from pipeline.models import (
    ContestedCandid, Detection, ForcedPhotometry, Gaia, NonDetection, Object, Ps1, Quarantine, RawAlert, SolarSystem,
)
from pipeline.store import db, loaders
from pipeline.surveys.base import BadAlert
from pipeline.surveys.dispatch import decode_packet, parse_record
from pipeline.surveys.ztf import MJD_OFFSET, _night_ok, is_simulated_oid
from pipeline.workflow.timing import new_batch_id, record_timing

log = logging.getLogger(__name__)

_ARCHIVE_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive")
OBJECT_HISTORY_FIELDS = ["ndethist", "ncovhist", "mjdstarthist", "mjdendhist"]
#: What makes two copies of a candid the same detection, and how closely they must agree.
CONTENT_TOLERANCE = {"mjd": 1e-5, "ra": 1e-5, "dec": 1e-5, "magpsf": 1e-4, "sigmapsf": 1e-4}
CONTENT_EXACT = ("oid", "fid", "pid", "isdiffpos")
CONTENT_FIELDS = ("candid", "parent_candid", *CONTENT_EXACT, *CONTENT_TOLERANCE)
MAX_REASON_CHARS = 2000
MAX_LISTED = 20


def _transient_errors():
    errors = [OperationalError, InterfaceError, OSError]
    try:
        import psycopg

        errors.append(psycopg.OperationalError)
    except ImportError:  # pragma: no cover - psycopg is a dependency
        pass
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        errors += [BotoCoreError, ClientError]
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


#: Faults of the services, not of the input: a batch that meets one fails as a whole (never quarantined).
TRANSIENT_ERRORS = _transient_errors()


@dataclass
class IngestSummary:
    alerts_read: int = 0
    new_objects: int = 0
    detections: int = 0
    non_detections: int = 0
    forced_photometry: int = 0
    duplicates_skipped: int = 0
    conflicts: int = 0
    rows_dropped: int = 0  # history rows the adapters refused (reasons in the quarantine)
    quarantined: int = 0
    batches: int = 0
    step_failures: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    batch_ids: list = field(default_factory=list)
    quarantine_ids: set = field(default_factory=set)  # (sha256, step) of every quarantine entry of the run

    def add(self, other):
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            setattr(self, f.name, mine | theirs if isinstance(mine, set) else mine + theirs)
        self.quarantined = len(self.quarantine_ids)
        return self

    @property
    def failed(self):
        """A path was missing or a batch's steps failed: the command exits non-zero."""
        return bool(self.missing or self.step_failures)

    def as_dict(self):
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("batch_ids", "quarantine_ids")}

    def report(self):
        lines = [
            "Ingest summary",
            f"  alerts read          {self.alerts_read}",
            f"  new objects          {self.new_objects}",
            f"  new detections       {self.detections}",
            f"  new non-detections   {self.non_detections}",
            f"  new forced phot.     {self.forced_photometry}",
            f"  duplicates skipped   {self.duplicates_skipped}",
            f"  candid conflicts     {self.conflicts}",
            f"  history rows dropped {self.rows_dropped}",
            f"  quarantined          {self.quarantined}",
            f"  skipped              {len(self.skipped)}",
            f"  batches              {self.batches}",
        ]
        for title, items in (("missing paths", self.missing), ("skipped", self.skipped)):
            if items:
                lines.append(f"  {title}:")
                lines += [f"    {item}" for item in items[:MAX_LISTED]]
                if len(items) > MAX_LISTED:
                    lines.append(f"    ... and {len(items) - MAX_LISTED} more")
        if self.step_failures:
            lines.append(f"  steps failed in {len(self.step_failures)} batch(es):")
            lines += [f"    {failure}" for failure in self.step_failures]
        return "\n".join(lines)


@dataclass
class BatchResult:
    batch_id: str
    summary: IngestSummary
    oids: list = field(default_factory=list)
    # The stamp classifier's input: objects first seen in this batch, and those it brought an alert
    # earlier than the one the classifier took (loaders.stamp_outdated)
    new_oids: list = field(default_factory=list)
    quarantine_reasons: list = field(default_factory=list)

    def merge(self, other):
        self.summary.add(other.summary)
        self.summary.batches = 1
        self.oids = sorted(set(self.oids) | set(other.oids))
        self.new_oids = sorted(set(self.new_oids) | set(other.new_oids))
        self.quarantine_reasons += other.quarantine_reasons
        return self


@dataclass
class _Rejected:
    """Input kept aside. ``data`` may be the whole input or a prefix of it (then ``size`` and
    ``digest`` describe the whole); the quarantine stores at most ``QUARANTINE_PREFIX_BYTES`` of it."""

    source: str
    reason: str
    data: bytes
    oid: str = ""
    candid: int | None = None
    size: int | None = None
    digest: str | None = None

    @property
    def sha256(self):
        if self.digest:
            return self.digest
        payload = self.data or f"{self.source}|{self.reason}".encode()
        return hashlib.sha256(payload).hexdigest()

    @property
    def total_size(self):
        return len(self.data) if self.size is None else self.size


def parse_packets(items):
    """Decode and parse a batch. Returns (alerts as (packet, ParsedAlert), rejected)."""
    alerts, rejected = [], []
    for item in items:
        if isinstance(item, SourceProblem):
            rejected.append(_Rejected(item.source, item.reason, item.data, size=item.size, digest=item.sha256))
            continue
        if not isinstance(item, Packet):
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
                rejected.append(_Rejected(item.source, exc.reason, item.data, exc.oid or "", exc.candid))
    return alerts, rejected


# ------------------------------------------------------------------------------ keys
def _survey(alert):
    return alert.detection.get("survey", "ztf")


def _key(det):
    """A detection's key: ZTF candids and Rubin diaSourceIds are separate namespaces."""
    return det.get("survey", "ztf"), det["candid"]


# ------------------------------------------------------------------------------ candid conflicts
def _differences(a, b):
    """Content fields on which two copies of a candid disagree ([] when they are the same detection)."""
    out = [name for name in CONTENT_EXACT if a.get(name) != b.get(name)]
    for name, tolerance in CONTENT_TOLERANCE.items():
        x, y = a.get(name), b.get(name)
        if (x is None) != (y is None) or (x is not None and abs(x - y) > tolerance):
            out.append(name)
    return out


def _describe(a, b, names):
    return ", ".join(f"{name} {a.get(name)!r} vs {b.get(name)!r}" for name in names[:4])


def _is_own(copy):
    return copy["parent_candid"] == copy["candid"]


def _in_night(copy):
    return _night_ok(copy["mjd"] + MJD_OFFSET, copy.get("pid"))


def _rank(copy):
    """Order of preference between copies of one candid of one object (largest wins); ties, which
    only copies from one packet can reach, go to the content's digest, so no reading order decides."""
    return (_is_own(copy), _in_night(copy), copy["parent_candid"] or 0)


def _digest(copy):
    return hashlib.sha256(json.dumps([copy.get(name) for name in CONTENT_FIELDS], default=str).encode()).hexdigest()


def _outranks(a, b):
    ra, rb = _rank(a), _rank(b)
    return ra > rb or (ra == rb and _digest(a) > _digest(b))


def _best(copies, copy_of=lambda item: item):
    best = copies[0]
    for item in copies[1:]:
        if _outranks(copy_of(item), copy_of(best)):
            best = item
    return best


def _stored_copies(keys):
    """(survey, candid) -> the stored copy's content fields, for the keys of a batch already in the table
    (plain SQL: the ORM's cost per parameter is most of the time for a few thousand candids)."""
    keys = set(keys)
    candids = sorted({candid for _, candid in keys})
    qn = connection.ops.quote_name
    columns = ", ".join(qn(Detection._meta.get_field(name).column) for name in ("survey", *CONTENT_FIELDS))
    stored = {}
    with connection.cursor() as cursor:
        for start in range(0, len(candids), 5000):
            chunk = candids[start : start + 5000]
            cursor.execute(
                f"SELECT {columns} FROM {qn(Detection._meta.db_table)} WHERE {qn('candid')} IN ({', '.join(['%s'] * len(chunk))})",
                chunk,
            )
            for survey, *values in cursor.fetchall():
                row = dict(zip(CONTENT_FIELDS, values))
                if (survey, row["candid"]) in keys:
                    stored[survey, row["candid"]] = row
    return stored


def _archived(keys):
    """The (survey, candid) keys of ``keys`` whose alert is already ingested (in RawAlert)."""
    keys = set(keys)
    candids = sorted({candid for _, candid in keys})
    found = set()
    for start in range(0, len(candids), 5000):
        rows = RawAlert.objects.filter(candid__in=candids[start:start + 5000]).values_list("survey", "candid")
        found.update(key for key in rows if key in keys)
    return found


@dataclass
class _Claim:
    copy: dict
    packet: Packet


class _Conflicts:
    """Losing copies, grouped by the packet (or stored alert) that delivered them."""

    def __init__(self):
        self.by_source = {}
        self.count = 0

    def add(self, source, copy, reason):
        self.count += 1
        self.by_source.setdefault(source, []).append((copy, reason))

    def rejected(self):
        out = []
        for source, items in self.by_source.items():
            copies = [{name: copy.get(name) for name in CONTENT_FIELDS} for copy, _ in items]
            data = json.dumps(copies, sort_keys=True, default=str).encode()
            reasons = [reason for _, reason in items]
            head = f"{len(items)} conflicting cop{'y' if len(items) == 1 else 'ies'} of a detection: "
            reason = head + "; ".join(reasons[:MAX_LISTED])
            if len(reasons) > MAX_LISTED:
                reason += f"; ... and {len(reasons) - MAX_LISTED} more"
            first = items[0][0]
            out.append(_Rejected(source, reason, data, first.get("oid") or "", first.get("candid")))
        return out


def _earliest_parent(copy, candidates, kept):
    """``copy`` with, when it is a history copy, the parent candid of the earliest alert that carried
    the same content (copies that agree are one detection: which alert it came from must not depend
    on the order the alerts were read in)."""
    if _is_own(copy):
        return copy
    parents = [claim.copy["parent_candid"] for claim in candidates if not _differences(claim.copy, copy)]
    if kept is not None and kept["oid"] == copy["oid"] and not _is_own(kept) and not _differences(kept, copy):
        parents.append(kept["parent_candid"])
    first = min(parents)
    return copy if first == copy["parent_candid"] else dict(copy, parent_candid=first)


class _Contest:
    """Candids that the histories of several objects carry, the own alert of none: stored for none.
    Each claim is quarantined once per object and content (no parent candid, no packet in the data),
    so the entries are the same whatever the order the claims arrive in."""

    def __init__(self, keys):
        self.known = set()
        candids = sorted({candid for _, candid in keys})
        for start in range(0, len(candids), 5000):
            self.known.update(ContestedCandid.objects.filter(
                candid__in=candids[start:start + 5000]).values_list("survey", "candid"))
        self.known &= set(keys)
        self.new = set()  # (survey, candid) keys contested from this batch on
        self.removed = []  # (survey, candid) keys of stored history copies to delete
        self.entries = {}

    def claims(self, key, group, kept):
        """True when ``key`` (survey, candid) is contested (it then takes the claims and the stored copy)."""
        if (kept is not None and _is_own(kept)) or any(_is_own(claim.copy) for claim in group):
            return False
        oids = {claim.copy["oid"] for claim in group} | ({kept["oid"]} if kept is not None else set())
        if key not in self.known and len(oids) < 2:
            return False
        for claim in group:
            self._refuse(claim.packet.source, claim.copy)
        if kept is not None:
            self._refuse(f"alert {kept['parent_candid']} (stored copy, removed)", kept)
            self.removed.append(key)
        if key not in self.known:
            self.new.add(key)
        return True

    def _refuse(self, source, copy):
        content = {name: copy.get(name) for name in CONTENT_FIELDS if name != "parent_candid"}
        data = json.dumps(content, sort_keys=True, default=str).encode()
        reason = (f"candid {copy['candid']} is carried by the histories of several objects and is the own alert "
                  f"of none of them: stored for none (this copy claimed for {copy['oid']})")
        entry = _Rejected(source, reason, data, copy["oid"], copy["candid"])
        self.entries.setdefault(entry.sha256, entry)

    @property
    def count(self):
        return len(self.entries)

    def rejected(self):
        return list(self.entries.values())

    def write(self, now):
        """Remove the stored copies that turned out contested and record the new contested candids."""
        for survey in {survey for survey, _ in self.removed}:
            Detection.objects.filter(survey=survey, candid__in=[c for s, c in self.removed if s == survey]).delete()
        db.insert_ignore(ContestedCandid, [dict(survey=survey, candid=candid, created=now)
                                           for survey, candid in sorted(self.new)])


def _resolve(claims, stored, conflicts, displaced, contest):
    """The copy to insert (new keys) and to replace (stored, outranked) per (survey, candid); the oids
    that lose a stored detection (to the object whose own alert it is, or to a contest) are added to
    ``displaced``."""
    inserts, replaces = [], []
    for key, group in claims.items():
        candid = key[1]
        kept = stored.get(key)
        if contest.claims(key, group, kept):
            if kept is not None:
                displaced.add(kept["oid"])
            continue
        if kept is not None:
            candidates = []
            for claim in group:
                if claim.copy["oid"] == kept["oid"] or (_is_own(claim.copy) and not _is_own(kept)):
                    candidates.append(claim)
                else:
                    conflicts.add(claim.packet.source, claim.copy,
                                  f"candid {candid} is stored under {kept['oid']}, claimed for {claim.copy['oid']}: not moved")
        else:
            oids = {claim.copy["oid"] for claim in group}
            owners = {claim.copy["oid"] for claim in group if _is_own(claim.copy)}
            if len(oids) > 1:  # (several objects and none an owner is a contest, taken above)
                winner_oid = next(iter(owners)) if len(owners) == 1 else None
                for claim in group:
                    if claim.copy["oid"] != winner_oid:
                        why = (f"candid {candid} is the own alert of {winner_oid}" if winner_oid else
                               f"candid {candid} is the own alert of {len(owners)} objects "
                               f"({', '.join(sorted(owners))})")
                        conflicts.add(claim.packet.source, claim.copy, f"{why}, claimed for {claim.copy['oid']}: refused")
                candidates = [claim for claim in group if claim.copy["oid"] == winner_oid]
            else:
                candidates = list(group)
        if not candidates:
            continue
        best = _best(candidates, lambda claim: claim.copy)
        for claim in candidates:
            if claim is not best and _differences(claim.copy, best.copy):
                names = _differences(claim.copy, best.copy)
                conflicts.add(claim.packet.source, claim.copy,
                              f"candid {candid}: kept the copy from alert {best.copy['parent_candid']} "
                              f"({_describe(claim.copy, best.copy, names)})")
        chosen = _earliest_parent(best.copy, candidates, kept)
        if kept is None:
            inserts.append(chosen)
        elif (kept["oid"] == chosen["oid"] and not _differences(kept, chosen) and not _is_own(kept)
              and not _is_own(chosen)):
            if kept["parent_candid"] != chosen["parent_candid"]:
                replaces.append(chosen)  # the same detection, first carried by an alert read later
        elif _outranks(best.copy, kept):
            names = _differences(kept, best.copy)
            if names or (_is_own(best.copy) and not _is_own(kept)):
                replaces.append(chosen)
            if best.copy["oid"] != kept["oid"]:
                displaced.add(kept["oid"])
                conflicts.add(f"alert {kept['parent_candid']} (stored copy, moved)", kept,
                              f"candid {candid} is the own alert of {best.copy['oid']}: moved there from the "
                              f"history of {kept['oid']} ({_describe(kept, best.copy, names)})")
            elif names:
                conflicts.add(f"alert {kept['parent_candid']} (stored copy, replaced)", kept,
                              f"candid {candid}: replaced by the copy from alert {best.copy['parent_candid']} "
                              f"({_describe(kept, best.copy, names)})")
        elif _differences(best.copy, kept):
            names = _differences(best.copy, kept)
            conflicts.add(best.packet.source, best.copy,
                          f"candid {candid}: kept the stored copy from alert {kept['parent_candid']} "
                          f"({_describe(best.copy, kept, names)})")
    return inserts, replaces


def _dropped_rows(fresh, summary):
    """One quarantine entry per alert whose adapter dropped history rows: the reasons, and what the
    rows were (``ParsedAlert.dropped``); the alert itself is stored."""
    out = []
    for packet, alert in fresh:
        count = alert.dropped_detections + alert.dropped_upper_limits + alert.dropped_forced_photometry
        notes = [note for note in alert.warnings if note.startswith("dropped ")]
        if not (count or notes or alert.dropped):
            continue
        summary.rows_dropped += count
        data = json.dumps({"oid": alert.oid, "candid": alert.candid, "dropped": alert.dropped or notes},
                          sort_keys=True, default=str).encode()
        reason = f"alert {alert.candid}: history rows dropped: " + "; ".join(notes)
        out.append(_Rejected(packet.source, reason[:MAX_REASON_CHARS], data, alert.oid, alert.candid))
    return out


def _accept_packets(alerts, summary, conflicts, rejected):
    """Alerts whose own candid is new; a second copy of an ingested candid is a duplicate when it
    agrees with the stored detection and a conflict (the packet refused) when it does not."""
    keys = {_key(alert.detection) for _, alert in alerts}
    for _, alert in alerts:
        keys.update(_key(det) for det in alert.prv_detections)
    stored = _stored_copies(keys)
    known = _archived(_key(alert.detection) for _, alert in alerts)
    by_key = {}
    for packet, alert in alerts:
        by_key.setdefault(_key(alert.detection), []).append((packet, alert))
    fresh = []
    for key, group in by_key.items():
        candid = key[1]
        kept = stored.get(key) if key in known else None
        if kept is None:
            best = _best(group, lambda item: item[1].detection)
            owner = stored.get(key)
            if owner is not None and owner["oid"] != best[1].oid and _is_own(owner):
                for packet, alert in group:
                    reason = (f"candid {candid} is already stored under {owner['oid']} (from alert "
                              f"{owner['parent_candid']}), not {alert.oid}: not moved")
                    rejected.append(_Rejected(packet.source, reason, packet.data, alert.oid, candid))
                    summary.conflicts += 1
                continue
            fresh.append(best)
            kept = best[1].detection
            group = [item for item in group if item is not best]
        for packet, alert in group:
            names = _differences(alert.detection, kept)
            if not names:
                summary.duplicates_skipped += 1
                continue
            summary.conflicts += 1
            reason = (f"candid {candid} was already ingested from another packet with different content "
                      f"({_describe(alert.detection, kept, names)}): refused")
            rejected.append(_Rejected(packet.source, reason, packet.data, alert.oid, candid))
    return fresh, stored


# ------------------------------------------------------------------------------ rows
def _collect_rows(alerts):
    """Merge the batch's records, one row per key (detections go through ``_resolve``)."""
    objects, claims, non_detections, forced = {}, {}, {}, {}
    ps1, gaia, ss = {}, {}, {}
    for packet, alert in alerts:
        obj = objects.get(alert.oid)
        if obj is None or (alert.object_fields.get("mjdendhist") or 0) >= (obj.get("mjdendhist") or 0):
            objects[alert.oid] = dict(alert.object_fields)
        for det in alert.detections:
            claims.setdefault(_key(det), []).append(_Claim(det, packet))
        for nd in alert.non_detections:
            non_detections.setdefault((nd["oid"], nd["fid"], nd["mjd"]), nd)
        for fp in alert.forced_photometry:
            if fp["fid"] is not None:
                forced.setdefault((fp["oid"], fp["fid"], fp["mjd"]), fp)
        for target, row in ((ps1, alert.ps1), (gaia, alert.gaia), (ss, alert.ss)):
            if row and (alert.oid not in target or row["candid"] > target[alert.oid]["candid"]):
                target[alert.oid] = row
    return objects, claims, non_detections, forced, ps1, gaia, ss


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


def _grouped(rejected):
    """One entry per distinct input (sha256): a file with two bad records is one entry, both reasons."""
    groups = {}
    for item in rejected:
        groups.setdefault(item.sha256, []).append(item)
    out = []
    for digest, items in groups.items():
        first = items[0]
        reasons = list(dict.fromkeys(item.reason for item in items))
        reason = "; ".join(reasons)
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[: MAX_REASON_CHARS - 20] + f"... ({len(reasons)} reasons)"
        out.append((digest, first, reason))
    return out


def quarantine(rejected, archive, batch_id, now):
    """Keep rejected input aside: a bounded prefix of its bytes in the archive, a row with the reason,
    size and SHA-256 of the whole (once per distinct input). Returns the entries' (sha256, step)."""
    if not rejected:
        return set()
    rows, blobs = [], []
    for digest, item, reason in _grouped(rejected):
        key = quarantine_key(digest) if item.data else ""
        if item.data:
            blobs.append((key, item.data[:QUARANTINE_PREFIX_BYTES]))
        log.warning("quarantined %s: %s", item.source[-300:], reason[:300])
        rows.append(
            dict(
                sha256=digest,
                reason=reason,
                source=item.source[-512:],
                archive_key=key,
                size=item.total_size,
                oid=(item.oid or "")[:32],
                candid=item.candid,
                batch_id=batch_id,
                created=now,
            )
        )
    archive.save_many(blobs)
    db.insert_ignore(Quarantine, rows, returning="sha256")
    return {(row["sha256"], "ingest") for row in rows}


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



def ingest_batch(items, archive, batch_id=None) -> BatchResult:
    """Ingest one batch of items from ``sources.iter_packets``. Safe to repeat: nothing is written twice.

    A batch that fails for a reason of its input (not a fault of the database or the archive) is
    split in halves, recursively, under the same batch id; an input that fails alone is quarantined
    with the error, so one bad input never costs its batch-mates.
    """
    batch_id = batch_id or new_batch_id()
    try:
        return _ingest_batch(items, archive, batch_id)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        if len(items) > 1:
            log.warning("batch %s failed (%s: %s); splitting it to find the input that fails",
                        batch_id, type(exc).__name__, exc)
            half = len(items) // 2
            result = ingest_batch(items[:half], archive, batch_id)
            return result.merge(ingest_batch(items[half:], archive, batch_id))
        log.exception("ingest failed on %s", getattr(items[0], "source", items[0]))
        return _quarantine_alone(items[0], archive, batch_id, f"ingest failed: {type(exc).__name__}: {exc}")


def _quarantine_alone(item, archive, batch_id, reason):
    summary = IngestSummary(batches=1, alerts_read=int(isinstance(item, Packet)))
    data = getattr(item, "data", b"")
    rejected = [_Rejected(getattr(item, "source", repr(item)), reason[:MAX_REASON_CHARS], data)]
    with transaction.atomic():
        summary.quarantine_ids = quarantine(rejected, archive, batch_id, db.now_param())
    summary.quarantined = len(summary.quarantine_ids)
    return BatchResult(batch_id=batch_id, summary=summary, quarantine_reasons=[(rejected[0].source, reason)])


def _ingest_batch(items, archive, batch_id) -> BatchResult:
    started = timezone.now()
    summary = IngestSummary(batches=1, alerts_read=sum(1 for item in items if isinstance(item, Packet)))
    summary.skipped = [f"{item.source}: {item.reason}" for item in items if isinstance(item, Skipped)]
    summary.missing = [f"{item.source}: {item.reason}" for item in items if isinstance(item, Missing)]
    alerts, rejected = parse_packets(items)
    with transaction.atomic():
        _one_ingest_at_a_time()
        return _store_batch(alerts, rejected, summary, archive, batch_id, started)


#: The PostgreSQL advisory lock that ingests take while they decide conflicts and write (any constant).
INGEST_LOCK = 7_265_372_657


def _one_ingest_at_a_time():
    """Concurrent ingests decide the candid conflicts of a batch on what the others committed, so they
    take turns from reading the stored copies to the commit (PostgreSQL: an advisory lock held until
    the transaction ends; SQLite has one writer at a time anyway). Decoding stays concurrent."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [INGEST_LOCK])


def _store_batch(alerts, rejected, summary, archive, batch_id, started) -> BatchResult:
    conflicts = _Conflicts()
    fresh, stored = _accept_packets(alerts, summary, conflicts, rejected)
    rejected += _dropped_rows(fresh, summary)
    objects, claims, non_detections, forced, ps1, gaia, ss = _collect_rows(fresh)
    displaced = set()
    contest = _Contest(claims)
    inserts, replaces = _resolve(claims, stored, conflicts, displaced, contest)
    summary.conflicts += conflicts.count + contest.count
    rejected += conflicts.rejected() + contest.rejected()

    now = db.now_param()
    packet_keys = _packet_keys(fresh)
    # Raw bytes are written while the rows are; the transaction commits only once they are stored.
    archiving = _ARCHIVE_WRITER.submit(archive.save_many, [(key, p.data) for p, key in packet_keys.values()])
    try:
        with transaction.atomic():
            new_oids = _write_objects(objects, now)
            summary.new_objects = len(new_oids)
            contest.write(now)
            summary.detections = len(db.insert_ignore(Detection, _same_keys(Detection, inserts)))
            if replaces:
                replaces = _same_keys(Detection, replaces)
                db.upsert(Detection, replaces, unique_fields=["candid", "survey"],
                          update_fields=[name for name in replaces[0] if name not in ("candid", "survey")])
            summary.non_detections = len(db.insert_ignore(NonDetection, list(non_detections.values())))
            summary.forced_photometry = len(db.insert_ignore(ForcedPhotometry, _same_keys(ForcedPhotometry, forced.values())))
            for model, rows in ((Ps1, ps1), (Gaia, gaia), (SolarSystem, ss)):
                rows = list(rows.values())
                if rows:
                    update = [name for name in rows[0] if name != "oid"]
                    db.upsert(model, rows, unique_fields=["oid"], update_fields=update, newer_than="candid")
            db.insert_ignore(
                RawAlert,
                [_raw_row(packet, alert, packet_keys[id(packet)][1], batch_id, now) for packet, alert in fresh],
            )
            summary.quarantine_ids = quarantine(rejected, archive, batch_id, now)
            summary.quarantined = len(summary.quarantine_ids)
            archiving.result()
            record_timing(batch_id, "ingest", started, len(fresh))
    except BaseException:
        wait([archiving])  # the batch may be retried in parts: no write of this try left running
        _remove_unrecorded(archive, [key for _, key in packet_keys.values()])
        raise
    stamp_oids = set(new_oids)
    if settings.STAMP_CLASSIFIER_ENABLED and objects:
        stamp_oids.update(loaders.stamp_outdated(sorted(objects)))
    return BatchResult(
        batch_id=batch_id,
        summary=summary,
        oids=sorted(set(objects) | displaced),  # an object that lost a detection is recomputed too
        new_oids=sorted(stamp_oids),
        quarantine_reasons=[(r.source, r.reason) for r in rejected],
    )


def _remove_unrecorded(archive, keys):
    """After a batch rolled back: remove the packets it archived that no stored alert refers to (a
    disk that filled up mid-batch leaves no orphan). Best effort: a failure here is logged, and
    the original error is the one raised."""
    try:
        recorded = set(RawAlert.objects.filter(archive_key__in=keys).values_list("archive_key", flat=True))
        for key in keys:
            if key not in recorded:
                archive.delete(key)
    except Exception:  # noqa: BLE001 - the batch's own error matters more
        log.exception("could not remove the packets of a rolled-back batch from the archive")


def _packet_keys(fresh):
    """Archive key of each packet: its (first) alert's survey and candid; a multi-alert file is stored once."""
    keys = {}
    for packet, alert in fresh:
        keys.setdefault(id(packet), (packet, alert_key(alert.candid, _survey(alert))))
    return keys


def _raw_row(packet, alert, key, batch_id, now):
    return dict(
        candid=alert.candid,
        survey=_survey(alert),
        oid=alert.oid,
        archive_key=key,
        schemavsn=alert.schemavsn,
        publisher=alert.publisher,
        size=len(packet.data),
        batch_id=batch_id,
        ingested=now,
    )
