"""Types shared by the survey adapters (``ztf.py``, later ``lsst.py``).

An adapter turns one raw alert packet into plain Python records (dicts of str/int/float/None)
that the ingest step writes to the database. It knows nothing about Django or Celery.
"""
from dataclasses import dataclass, field


class BadAlert(Exception):
    """A packet or record that cannot be ingested; the caller quarantines it with ``reason``.

    ``reason`` is short human text ("not an Avro file: ...", "missing required field
    candidate.magpsf", ...); ``oid`` and ``candid`` are set when they could be read.
    """

    def __init__(self, reason, oid=None, candid=None):
        super().__init__(reason)
        self.reason = reason
        self.oid = oid
        self.candid = candid

    def __str__(self):
        where = " ".join(f"{k}={v}" for k, v in (("oid", self.oid), ("candid", self.candid)) if v is not None)
        return f"{self.reason} ({where})" if where else self.reason


@dataclass
class ParsedAlert:
    """One alert as plain records, ready to be written (names follow ALeRCE's tables).

    ``detection`` is the alert's own candidate; ``prv_detections`` and ``non_detections`` come
    from its history; ``forced_photometry`` holds forced-photometry rows (``fp_hists`` of schema
    4.x, and the ``prv_candidates`` of schema 3.5, which are forced photometry, not upper limits).
    History rows the adapter refused are counted in ``dropped_upper_limits`` /
    ``dropped_detections`` and explained in ``warnings``: they are never silently lost.
    """

    oid: str
    candid: int
    schemavsn: "str | None"
    publisher: "str | None"
    detection: dict
    prv_detections: list
    non_detections: list
    cutouts: dict
    object_fields: dict
    ps1: "dict | None"
    gaia: "dict | None"
    ss: "dict | None"
    dropped_upper_limits: int = 0
    dropped_detections: int = 0
    dropped_forced_photometry: int = 0
    dropped: list = field(default_factory=list)  # one short JSON-safe dict per dropped row (where, why, values)
    forced_photometry: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    @property
    def detections(self):
        """The alert's own detection followed by the earlier ones."""
        return [self.detection, *self.prv_detections]
