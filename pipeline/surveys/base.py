"""Types and value checks shared by the survey adapters (``ztf.py``, ``lsst.py``).

An adapter turns one raw alert packet into plain Python records (dicts of str/int/float/None)
that the ingest step writes to the database. It knows nothing about Django or Celery.
Both adapters check values at parse time with the helpers here: a value its column cannot hold
(too long, out of range, wrong type) or that is physically impossible (off the sky) is refused,
never truncated or stored.
"""
from dataclasses import dataclass, field

#: Ids (ZTF candid, Rubin diaSourceId / diaObjectId / ssObjectId) are positive signed 64-bit integers.
MAX_CANDID = 2**63 - 1
INT32_RANGE = (-(2**31), 2**31 - 1)
INT64_RANGE = (-(2**63), 2**63 - 1)


def is_valid_candid(candid) -> bool:
    """A positive 64-bit integer (not a bool, float or string): what every alert id must be."""
    return candid.__class__ is int and 0 < candid <= MAX_CANDID


def shown(value, limit=40):
    """A bounded repr of an untrusted value, for reasons and logs."""
    text = repr(value)
    if len(text) > limit:
        size = f"{len(value)} characters" if isinstance(value, (str, bytes)) else type(value).__name__
        text = f"{text[:limit]}... ({size})"
    return text


class BadValue(Exception):
    """A value of the wrong type, size or range for its column (the caller says where)."""


def on_sky(ra, dec) -> bool:
    """ra in [0, 360) and |dec| <= 90 (degrees)."""
    return 0.0 <= ra < 360.0 and -90.0 <= dec <= 90.0


def checked_text(name, value, limit):
    """``value`` (None for null or "") when it is text of at most ``limit`` characters, else BadValue."""
    if value is None or value == "":
        return None
    if value.__class__ is not str:
        raise BadValue(f"{name} has type {type(value).__name__}; its column holds text")
    if len(value) > limit:
        raise BadValue(f"{name} is {len(value)} characters long; its column holds at most {limit}")
    return value


def checked_int(name, value, bits=64):
    """``value`` (None for null) when it is an integer that fits a signed ``bits``-bit column, else BadValue."""
    if value is None:
        return None
    if value.__class__ is not int:
        raise BadValue(f"{name} has type {type(value).__name__}; its column holds integers")
    low, high = INT32_RANGE if bits == 32 else INT64_RANGE
    if not low <= value <= high:
        raise BadValue(f"{name} = {shown(value)} does not fit a {bits}-bit integer")
    return value


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
