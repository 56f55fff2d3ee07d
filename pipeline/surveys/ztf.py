"""ZTF survey adapter: an Avro alert packet -> plain records named after ALeRCE's tables.

Packets follow ZTF's alert schema (ZwickyTransientFacility/ztf-avro-alert; Patterson et al. 2019,
PASP 131, 018001): one ``ztf.alert`` record with the new ``candidate``, up to 30 days of
``prv_candidates`` (detections, which carry a ``candid``, and upper limits, whose ``candid`` is
null) and three gzipped-FITS cutouts. Schema 4.x adds ``fp_hists`` (forced photometry).

Policies (see ``parse_record``):
- Unknown schema versions and non-ZTF records (e.g. Rubin) raise ``BadAlert``; so do missing,
  null, NaN or sentinel values in the required fields (objectId, candid, candidate.jd/fid/ra/dec/
  magpsf/sigmapsf).
- Optional values that are absent (older schema), null, NaN or one of ZTF's "no value"
  sentinels become ``None``. ZTF writes -999 for "no counterpart" in the PS1, Gaia, solar-system
  and reference-image fields of the candidate, -99999 in those of prv_candidates / fp_hists, and
  the string "null" in ssnamenr. The .avsc docs do not list these sentinels; they come from the
  ZTF pipeline (Masci et al. 2019, PASP 131, 018003) and are what the real packets hold.
- History rows the adapter cannot trust are dropped and counted (``ParsedAlert.dropped_*``,
  ``dropped``, ``warnings``): upper limits without a diffmaglim, earlier detections without
  photometry, detections more than ``MAX_HISTORY_OFFSET_ARCSEC`` from the alert's own candidate
  (another object's history, or a placeholder position), and rows whose jd contradicts the night
  encoded in their pid (see ``_night_problem``), which re-distributed streams are known to produce.
- An alert whose own candidate's jd contradicts its pid is refused whole (``BadAlert``): the
  rebroadcast packets that carry such a jd carry placeholder coordinates too. So is an alert with
  more than ``MAX_HISTORY_ROWS`` history rows.
- Schema 3.5 (2021, partnership stream) carries forced-photometry rows in ``prv_candidates``
  (no candid, no magpsf, forcediffimflux); they go to ``forced_photometry`` with the 4.x
  ``fp_hists``, not to the upper limits.

Pure Python + fastavro; no Django, no Celery.
"""
import io
import json
import math
import re
import zlib

import fastavro

from pipeline.surveys.base import INT32_RANGE, BadAlert, ParsedAlert, is_valid_candid, on_sky
from pipeline.surveys.base import BadValue as _BadValue
from pipeline.surveys.base import shown as _shown
from pipeline.surveys.cutouts import cutout_image  # noqa: F401 - part of this adapter's interface

__all__ = [
    "KNOWN_SCHEMA_VERSIONS", "BadAlert", "ParsedAlert", "decode_container", "parse_record",
    "parse_packet", "jd_to_mjd", "cutout_image",
]

#: Schema versions this adapter has been checked against on real packets. ``None`` is the early
#: (2017/18) packet whose writer schema has no ``schemavsn`` / ``publisher`` field at all; it has
#: the 2.0 layout less ``rbversion`` and is parsed exactly like 2.0.
KNOWN_SCHEMA_VERSIONS = frozenset({None, "2.0", "3.0", "3.1", "3.2", "3.3", "3.5", "4.01", "4.02"})

MJD_OFFSET = 2400000.5
#: JD at which ZTF night id (nid) 0 starts: 2017-01-01T00:00 UTC.
NID_JD0 = 2457754.5
#: Where in its night's UTC day (jd - NID_JD0 - nid) a row ZTF took can lie: the Sun is below
#: Palomar's horizon between 0.028 (earliest sunset) and 0.622 (latest sunrise) of the day; the
#: rows of every real packet in ../shared/data that were not rebroadcast span 0.069 to 0.579.
NIGHT_WINDOW = (0.0, 0.65)
#: ZTF's pid starts with the night id and the exposure's time of day in millionths of a day
#: (pid = nid * 10**9 + round-down(1e6 * (jd - NID_JD0 - nid)) * 1000 + ...). Every row of the real
#: packets in ../shared/data that no rebroadcaster rewrote (20,438 rows, 2017 to 2025) agrees with
#: its jd within 0.6 s; the rebroadcast ones are off by hours. A jd farther than this is not the
#: time of the exposure the row names.
PID_TIME_TOLERANCE_S = 60.0
#: ZTF puts in prv_candidates the earlier detections within 1.5 arcsec of the candidate; their
#: astrometric scatter is ~0.1-0.3 arcsec (at most 1.3 arcsec from their object's median in the
#: real packets). A history detection farther than this from the alert's own candidate is not of
#: this object (another object's history copied in, or a placeholder position: those lie degrees off).
MAX_HISTORY_OFFSET_ARCSEC = 5.0
#: ZTF sends 30 days of history: at most 180 prv_candidates (and no fp_hists over 30 days) in the
#: real packets. Ten times a dense 30 days of a high-cadence field is still under this; more is a
#: fabricated packet, refused whole.
MAX_HISTORY_ROWS = 2000

#: Bounds on what one container may decode into: a ZTF packet is one record of at most a few
#: hundred KB, so these are far above any real packet and far below what a crafted one could ask.
MAX_RECORDS_PER_CONTAINER = 100
MAX_DECODED_BYTES = 4 * 2**20
#: Array items that can encode in fewer bytes could decode into far more memory than they take.
MIN_ARRAY_ITEM_BYTES = 8
_SCHEMA_CACHE_MAX_BYTES = 2**18

#: Ids: a real ZTF objectId is "ZTF" + 2-digit year + 7 lowercase letters; the simulator's
#: (``pipeline/simulation/night.py``) put "SIM" after "ZTF". candids are positive 64-bit integers.
_ZTF_OID = re.compile(r"ZTF[0-9]{2}[a-z]{7}", re.ASCII)
_SIMULATED_OID = re.compile(r"ZTFSIM[0-9]{2}[a-z]{7}", re.ASCII)
#: Longest string each column holds (tests check these against the models): a longer value is
#: refused at parse time, never truncated by the database.
STRING_LIMITS = {"rbversion": 16, "drbversion": 16, "ssnamenr": 32, "procstatus": 64, "publisher": 128}
#: Integer columns of 32 bits; every other integer is a 64-bit Avro long; everything else copied is a float.
INT32_FIELDS = frozenset({"nneg", "nbad", "field", "rcid", "programid", "nmtchps", "ndethist", "ncovhist"})
INT64_FIELDS = frozenset({"pid", "objectidps1", "objectidps2", "objectidps3"})
_INT32_MIN, _INT32_MAX = INT32_RANGE
_NOT_FLOAT_FIELDS = INT32_FIELDS | INT64_FIELDS | frozenset(STRING_LIMITS)
_CHECKED_INT_FIELDS = INT32_FIELDS | frozenset(STRING_LIMITS)

#: Values ZTF writes for "no value" in float/long fields (-999 candidate, -99999 history rows).
MISSING_SENTINELS = frozenset({-99.0, -999.0, -9999.0, -99999.0})
_INFINITIES = frozenset({math.inf, -math.inf})
#: An optional float that is a sentinel or infinite holds no value (NaN is caught apart).
_NO_VALUE_FLOATS = MISSING_SENTINELS | _INFINITIES
#: Forced-photometry fluxes can be legitimately negative: only -99999 means "none" there.
_FLUX_FIELDS = frozenset({"forcediffimflux", "forcediffimfluxunc"})
_FLUX_SENTINELS = frozenset({-99999.0}) | _INFINITIES

_REQUIRED_CANDIDATE = ("jd", "fid", "ra", "dec", "magpsf", "sigmapsf")
_REQUIRED_PRV_DETECTION = ("jd", "fid", "ra", "dec", "magpsf", "sigmapsf")
_FIDS = frozenset({1, 2, 3})
_ISDIFFPOS = {"t": 1, "1": 1, "T": 1, "f": -1, "0": -1, "F": -1}

DETECTION_KEYS = (
    "candid", "oid", "mjd", "fid", "pid", "ra", "dec", "magpsf", "sigmapsf", "magap", "sigmagap",
    "diffmaglim", "isdiffpos", "rb", "drb", "rbversion", "drbversion", "magnr", "sigmagnr",
    "distnr", "chinr", "sharpnr", "fwhm", "elong", "nneg", "nbad", "field", "rcid", "programid",
    "sgscore1", "distpsnr1", "ssdistnr", "ssmagnr", "ssnamenr", "has_stamp", "parent_candid",
)
# Keys copied as they are (after NaN/sentinel cleaning) from a candidate / prv_candidate row.
_DETECTION_COPIED = tuple(
    k for k in DETECTION_KEYS
    if k not in ("candid", "oid", "mjd", "fid", "isdiffpos", "has_stamp", "parent_candid")
)
NON_DETECTION_KEYS = ("oid", "fid", "mjd", "diffmaglim", "parent_candid")
FORCED_PHOTOMETRY_KEYS = (
    "oid", "mjd", "fid", "pid", "field", "rcid", "programid", "diffmaglim", "forcediffimflux",
    "forcediffimfluxunc", "procstatus", "magzpsci", "magzpsciunc", "magzpscirms", "clrcoeff",
    "clrcounc", "exptime", "sciinpseeing", "scibckgnd", "scisigpix", "adpctdif1", "adpctdif2",
    "distnr", "ranr", "decnr", "magnr", "sigmagnr", "chinr", "sharpnr", "parent_candid",
)
_FP_COPIED = tuple(k for k in FORCED_PHOTOMETRY_KEYS if k not in ("oid", "mjd", "parent_candid"))
PS1_KEYS = (
    "oid", "candid",
    "objectidps1", "sgmag1", "srmag1", "simag1", "szmag1", "sgscore1", "distpsnr1",
    "objectidps2", "sgmag2", "srmag2", "simag2", "szmag2", "sgscore2", "distpsnr2",
    "objectidps3", "sgmag3", "srmag3", "simag3", "szmag3", "sgscore3", "distpsnr3",
    "nmtchps",
)
GAIA_KEYS = ("oid", "candid", "neargaia", "neargaiabright", "maggaia", "maggaiabright")
SS_KEYS = ("oid", "candid", "ssdistnr", "ssmagnr", "ssnamenr")
OBJECT_KEYS = ("oid", "ndethist", "ncovhist", "mjdstarthist", "mjdendhist", "ra", "dec")
CUTOUT_FIELDS = {"science": "cutoutScience", "template": "cutoutTemplate", "difference": "cutoutDifference"}


def is_simulated_oid(oid: str) -> bool:
    """True for the simulator's ids (``ZTFSIM`` + yy + 7 letters); never true for a real ZTF id
    (``ZTF`` + yy + 7 letters)."""
    return bool(_SIMULATED_OID.fullmatch(oid))


def is_valid_oid(oid) -> bool:
    """A real ZTF objectId or one the simulator writes, nothing else (no other length, no Unicode digits)."""
    return isinstance(oid, str) and bool(_ZTF_OID.fullmatch(oid) or _SIMULATED_OID.fullmatch(oid))


def jd_to_mjd(jd):
    """Modified Julian Date: MJD = JD - 2400000.5 (works on floats and numpy arrays)."""
    return jd - MJD_OFFSET


# --------------------------------------------------------------------------------------------
# Avro object container
# --------------------------------------------------------------------------------------------
_MAGIC = b"Obj\x01"
_SYNC_SIZE = 16
_SCHEMA_CACHE = {}  # raw writer-schema JSON bytes -> fastavro parsed schema
_SCHEMA_CACHE_MAX = 64


class _Corrupt(Exception):
    """Internal: the container is structurally broken (message says where)."""


def _read_long(data, pos):
    """Avro zig-zag varint at ``pos``: (value, next position)."""
    try:
        b = data[pos]
        n = b & 0x7F
        shift = 7
        pos += 1
        while b & 0x80:
            b = data[pos]
            n |= (b & 0x7F) << shift
            shift += 7
            pos += 1
            if shift > 70:
                raise _Corrupt(f"varint too long at offset {pos}")
    except IndexError:
        raise _Corrupt(f"data ends at byte {len(data)} in the middle of a length field") from None
    return (n >> 1) ^ -(n & 1), pos


def _read_header(data):
    """(metadata dict, sync marker, offset of the first block) of an Avro object container."""
    pos = len(_MAGIC)
    meta = {}
    while True:
        count, pos = _read_long(data, pos)
        if count == 0:
            break
        if count < 0:
            count = -count
            _, pos = _read_long(data, pos)
        for _ in range(count):
            size, pos = _read_long(data, pos)
            if size < 0:
                raise _Corrupt("negative length in header")
            key = data[pos:pos + size]
            pos += size
            size, pos = _read_long(data, pos)
            if size < 0:
                raise _Corrupt("negative length in header")
            meta[key] = data[pos:pos + size]
            pos += size
            if pos > len(data):
                raise _Corrupt(f"header runs past the end of the data ({len(data)} bytes)")
    sync = data[pos:pos + _SYNC_SIZE]
    pos += _SYNC_SIZE
    if pos > len(data):
        raise _Corrupt(f"header runs past the end of the data ({len(data)} bytes)")
    return meta, sync, pos


_PRIMITIVE_MIN_BYTES = {"null": 0, "boolean": 1, "int": 1, "long": 1, "float": 4, "double": 8, "bytes": 1, "string": 1}


class _SchemaWalk:
    """Minimum encoded size of every type of a writer schema, and the check that no array or map
    holds items smaller than ``MIN_ARRAY_ITEM_BYTES`` (a few bytes must not decode into gigabytes)."""

    def __init__(self):
        self.named = {}
        self.active = set()

    def min_bytes(self, t, namespace=""):
        if isinstance(t, str):
            if t in _PRIMITIVE_MIN_BYTES:
                return _PRIMITIVE_MIN_BYTES[t]
            name = t if "." in t or not namespace else f"{namespace}.{t}"
            key = name if name in self.named else t
            if key in self.active:  # recursive type: at least a union index on the way down
                return 1
            return self.named.get(key, 1)
        if isinstance(t, list):
            sizes = [self.min_bytes(branch, namespace) for branch in t]
            return 1 + (min(sizes) if sizes else 0)
        if not isinstance(t, dict):
            raise _Corrupt(f"writer schema holds an unknown type {_shown(t)}")
        kind = t.get("type")
        if kind in ("array", "map"):
            items = t.get("items") if kind == "array" else t.get("values")
            if self.min_bytes(items, namespace) < MIN_ARRAY_ITEM_BYTES:
                raise BadAlert(
                    f"writer schema declares an {kind} of items that encode in under {MIN_ARRAY_ITEM_BYTES} bytes: "
                    "a small packet could decode into unbounded memory"
                )
            return 1
        if kind in ("record", "error", "enum", "fixed"):
            name = t.get("name", "")
            ns = t.get("namespace", namespace) if "." not in name else name.rpartition(".")[0]
            full = name if "." in name or not ns else f"{ns}.{name}"
            self.active.update((full, name))
            if kind == "enum":
                size = 1
            elif kind == "fixed":
                size = int(t.get("size", 0))
            else:
                size = sum(self.min_bytes(f.get("type"), ns) for f in t.get("fields", ()))
            self.active.difference_update((full, name))
            self.named[full] = self.named[name] = size
            return size
        return self.min_bytes(kind, namespace)


def _parsed_schema(raw):
    parsed = _SCHEMA_CACHE.get(raw)
    if parsed is None:
        try:
            schema = json.loads(raw)
        except Exception as exc:
            raise _Corrupt(f"writer schema in the header does not parse ({type(exc).__name__}: {exc})") from None
        _SchemaWalk().min_bytes(schema)
        try:
            parsed = fastavro.parse_schema(schema)
        except Exception as exc:  # schema errors, whatever their type
            raise _Corrupt(f"writer schema in the header does not parse ({type(exc).__name__}: {exc})") from None
        if len(raw) <= _SCHEMA_CACHE_MAX_BYTES:
            if len(_SCHEMA_CACHE) >= _SCHEMA_CACHE_MAX:
                _SCHEMA_CACHE.clear()
            _SCHEMA_CACHE[raw] = parsed
    return parsed


def _decode_blocks(data, parsed, sync, pos, deflate, max_records, max_bytes):
    n = len(data)
    records = []
    reader = fastavro.schemaless_reader
    decoded = 0
    while pos < n:
        count, pos = _read_long(data, pos)
        size, pos = _read_long(data, pos)
        if count < 0 or size < 0:
            raise _Corrupt(f"negative block count or size at offset {pos}")
        if len(records) + count > max_records:
            raise BadAlert(
                f"Avro container holds more than {max_records} records (a block of {count}); "
                "a ZTF packet holds one: refused whole"
            )
        end = pos + size
        if end + _SYNC_SIZE > n:
            raise _Corrupt(f"block of {size} bytes at offset {pos} runs past the end of the data ({n} bytes)")
        if data[end:end + _SYNC_SIZE] != sync:
            raise _Corrupt(f"sync marker mismatch after the block at offset {pos}")
        block = data[pos:end]
        if deflate:
            inflater = zlib.decompressobj(-15)
            block = inflater.decompress(block, max_bytes - decoded + 1)
            if inflater.unconsumed_tail or len(block) > max_bytes - decoded:
                raise BadAlert(
                    f"Avro container decompresses to more than {max_bytes} bytes "
                    f"({size} compressed bytes at offset {pos}): refused whole"
                )
        decoded += len(block)
        if decoded > max_bytes:
            raise BadAlert(f"Avro container holds more than {max_bytes} bytes of records: refused whole")
        fo = io.BytesIO(block)
        for _ in range(count):
            records.append(reader(fo, parsed, None))
        if fo.tell() != len(block):
            raise _Corrupt(f"block at offset {pos} holds {len(block) - fo.tell()} bytes beyond its {count} records")
        pos = end + _SYNC_SIZE
    return records


def decode_container(data, max_records=MAX_RECORDS_PER_CONTAINER, max_bytes=MAX_DECODED_BYTES):
    """Decode an Avro object container (one or more records) into a list of dicts.

    Fast path: the header is read here and the writer schema is parsed once per distinct schema
    (cached), then each block is decoded with fastavro's schemaless reader. Raises ``BadAlert`` for
    empty bytes, data that is not an Avro container, truncated or corrupt containers, codecs other
    than null/deflate (ZTF writes null), and containers over the bounds: more than ``max_records``
    records, more than ``max_bytes`` of decompressed blocks, arrays of items too small to bound.
    """
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise BadAlert(f"not an Avro file: expected bytes, got {type(data).__name__}")
    if not data:
        raise BadAlert("empty packet (0 bytes)")
    if not data.startswith(_MAGIC):
        hint = ""
        if data[0] == 0 and len(data) > 5:
            hint = f"; looks like Confluent wire format (schema id {int.from_bytes(data[1:5], 'big')})"
        raise BadAlert(f"not an Avro file: expected magic b'Obj\\x01', got {data[:4]!r}{hint}")
    try:
        meta, sync, pos = _read_header(data)
        raw_schema = meta.get(b"avro.schema")
        if raw_schema is None:
            raise _Corrupt("header has no avro.schema")
        codec = meta.get(b"avro.codec", b"null")
        if codec not in (b"null", b"deflate"):
            raise BadAlert(f"Avro codec {_shown(codec.decode('latin-1'))} is not supported (ZTF packets use null or deflate)")
        records = _decode_blocks(
            data, _parsed_schema(raw_schema), sync, pos, codec == b"deflate", max_records, max_bytes
        )
    except BadAlert:
        raise
    except _Corrupt as exc:
        raise BadAlert(f"truncated or corrupt Avro container: {exc}") from None
    except Exception as exc:  # fastavro/zlib raise many types (EOFError, ValueError, ...)
        raise BadAlert(f"truncated or corrupt Avro container: {type(exc).__name__}: {exc}") from None
    if not records:
        raise BadAlert("truncated or corrupt Avro container: it holds no records")
    return records


# --------------------------------------------------------------------------------------------
# Record -> plain records
# --------------------------------------------------------------------------------------------
def _clean(value, name=""):
    """None for null, NaN, infinities, ZTF "no value" sentinels and the string 'null'; else the value.

    Raises ``_BadValue`` for a value its column cannot hold: a string longer than
    ``STRING_LIMITS[name]`` or in a numeric column, an integer out of its column's range, a float
    in an integer column, any other type.
    """
    cls = value.__class__
    if cls is float:
        if value != value or value in _NO_VALUE_FLOATS:
            return None
        if name in _NOT_FLOAT_FIELDS:
            raise _BadValue(f"{name} is a float ({value!r}); its column holds {'text' if name in STRING_LIMITS else 'integers'}")
    elif cls is int:
        if value in MISSING_SENTINELS:
            return None
        if name in _CHECKED_INT_FIELDS:
            if name in STRING_LIMITS:
                raise _BadValue(f"{name} is an integer; its column holds text")
            if not _INT32_MIN <= value <= _INT32_MAX:
                raise _BadValue(f"{name} = {value} does not fit a 32-bit integer")
    elif cls is str:
        if value == "null" or value == "":
            return None
        limit = STRING_LIMITS.get(name)
        if limit is None:
            raise _BadValue(f"{name} is text ({_shown(value)}); its column holds numbers")
        if len(value) > limit:
            raise _BadValue(f"{name} is {len(value)} characters long; its column holds at most {limit}")
    elif value is not None:
        raise _BadValue(f"{name} has type {type(value).__name__}")
    return value


def _clean_flux(value, name=""):
    if value is None or value != value or value in _FLUX_SENTINELS:
        return None
    if value.__class__ is not float and value.__class__ is not int:
        raise _BadValue(f"{name} has type {type(value).__name__}")
    return value


def _copied(row, keys, where, oid, candid):
    """``{key: cleaned value}`` for ``keys`` of ``row``; a value its column cannot hold is a BadAlert."""
    try:
        return {k: _clean(row.get(k), k) for k in keys}
    except _BadValue as exc:
        raise BadAlert(f"bad value in {where}: {exc}", oid, candid) from None


def _required(row, name, where, oid, candid):
    """The value of a required numeric field, or BadAlert saying what is wrong with it."""
    if name not in row:
        raise BadAlert(f"missing required field {where}.{name}", oid, candid)
    value = row[name]
    if value is None:
        raise BadAlert(f"null in required field {where}.{name}", oid, candid)
    if value.__class__ is bool or not isinstance(value, (int, float)):
        raise BadAlert(f"bad type in required field {where}.{name}: {type(value).__name__}", oid, candid)
    if value != value:
        raise BadAlert(f"NaN in required field {where}.{name}", oid, candid)
    if value in _INFINITIES:
        raise BadAlert(f"infinite value in required field {where}.{name}", oid, candid)
    if value in MISSING_SENTINELS:
        raise BadAlert(f"sentinel {value!r} in required field {where}.{name}", oid, candid)
    return value


def _usable(row, names):
    """True when every one of ``names`` holds a real, finite number (no null, NaN, sentinel or infinity)."""
    for name in names:
        v = row.get(name)
        if v.__class__ is not float and v.__class__ is not int or v != v or v in _NO_VALUE_FLOATS:
            return False
    return True


def _on_sky(row):
    """ra in [0, 360) and |dec| <= 90 (degrees)."""
    return on_sky(row["ra"], row["dec"])


def _night_problem(jd, pid, nid=None):
    """Why ``jd`` cannot be the time of the row's exposure, or None. It must fall in the dark part
    (``NIGHT_WINDOW``) of the row's night (its ``nid`` where the schema carries one, else the night
    id that ZTF encodes in the first digits of ``pid``) and, where the pid is ZTF's (its night is
    the row's), within ``PID_TIME_TOLERANCE_S`` of the time of day the pid encodes."""
    pid_is_ztf = pid.__class__ is int and pid >= 10**9
    if nid is None or nid.__class__ is not int:
        if not pid_is_ztf:
            return None
        nid = pid // 10**9
    offset = jd - (NID_JD0 + nid)
    if not NIGHT_WINDOW[0] <= offset < NIGHT_WINDOW[1]:
        return f"jd {jd!r} lies outside the dark part of night {nid}"
    if pid_is_ztf and pid // 10**9 == nid:
        exposure = NID_JD0 + nid + (pid % 10**9 // 1000) / 1e6
        if abs(jd - exposure) * 86400.0 > PID_TIME_TOLERANCE_S:
            return (f"jd {jd!r} is {abs(jd - exposure) * 86400.0:.0f} s from the exposure time "
                    f"{exposure:.6f} that its pid {pid} encodes")
    return None


def _night_ok(jd, pid, nid=None):
    return _night_problem(jd, pid, nid) is None


def _offset_arcsec(row, ra, dec):
    """Angular distance (arcsec) of a row's position from (ra, dec) in degrees."""
    ra1, dec1, ra2, dec2 = map(math.radians, (row["ra"], row["dec"], ra, dec))
    h = math.sin((dec2 - dec1) / 2) ** 2 + math.cos(dec1) * math.cos(dec2) * math.sin((ra2 - ra1) / 2) ** 2
    return math.degrees(2 * math.asin(min(1.0, math.sqrt(h)))) * 3600.0


def _shared_jds(rows):
    """jds carried by history rows of different exposures (pids): no exposure shares its instant with
    another, so such a jd is a rebroadcaster's fill value, wrong for every row that carries it."""
    pids_by_jd = {}
    for row in rows:
        jd, pid = row.get("jd"), row.get("pid")
        if jd is not None and pid is not None:
            pids_by_jd.setdefault(jd, set()).add(pid)
    return {jd for jd, pids in pids_by_jd.items() if len(pids) > 1}


def _detection(row, candid, oid, parent_candid, has_stamp, where):
    det = _copied(row, _DETECTION_COPIED, where, oid, parent_candid)
    det["candid"] = candid
    det["oid"] = oid
    det["mjd"] = row["jd"] - MJD_OFFSET
    det["fid"] = row["fid"]
    det["isdiffpos"] = _ISDIFFPOS.get(row.get("isdiffpos"))
    det["has_stamp"] = has_stamp
    det["parent_candid"] = parent_candid
    return det


def _forced_photometry(row, oid, parent_candid, where):
    fp = _copied(row, _FP_COPIED, where, oid, parent_candid)
    try:
        for k in _FLUX_FIELDS:
            fp[k] = _clean_flux(row.get(k), k)
    except _BadValue as exc:
        raise BadAlert(f"bad value in {where}: {exc}", oid, parent_candid) from None
    fp["oid"] = oid
    fp["mjd"] = row["jd"] - MJD_OFFSET
    fp["parent_candid"] = parent_candid
    return fp


def _group(cand, keys, oid, candid, ignore=()):
    """A catalogue group (ps1/gaia/ss) or None when it holds no value."""
    values = _copied(cand, keys[2:], "candidate", oid, candid)
    if all(v is None for k, v in values.items() if k not in ignore):
        return None
    return {"oid": oid, "candid": candid, **values}


def _stamp(cutout):
    if not cutout:
        return None
    data = cutout.get("stampData")
    if data is not None and not isinstance(data, bytes):
        return None
    return data or None


def parse_record(record):
    """One decoded ZTF alert -> ``ParsedAlert`` (see the module docstring for the policies).

    Raises ``BadAlert`` for records that are not ZTF alerts (no ``candidate``), unknown
    ``schemavsn``, ids that are not ZTF's, missing/null/NaN/infinite/sentinel values in the required
    fields, positions off the sky, and values their column cannot hold (wrong type, too long, out of range).
    """
    try:
        return _parse_record(record)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:  # a crafted writer schema's odd types
        oid = record.get("objectId") if isinstance(record, dict) else None
        candid = record.get("candid") if isinstance(record, dict) else None
        raise BadAlert(f"malformed record: {type(exc).__name__}: {_shown(str(exc), 120)}",
                       oid if is_valid_oid(oid) else None, candid if is_valid_candid(candid) else None) from None


def _parse_record(record):
    if not isinstance(record, dict):
        raise BadAlert(f"unknown schema: record is a {type(record).__name__}, not a ZTF alert")
    cand = record.get("candidate")
    raw_oid = record.get("objectId")
    raw_candid = record.get("candid")
    oid = raw_oid if is_valid_oid(raw_oid) else None
    candid = raw_candid if is_valid_candid(raw_candid) else None
    if not isinstance(cand, dict):
        fields = ", ".join(sorted(map(str, record))[:8])
        raise BadAlert(f"unknown schema: not a ZTF alert (no 'candidate' record; fields: {_shown(fields, 120)})", oid, candid)
    vsn = record.get("schemavsn")
    if vsn.__class__ is not str and vsn is not None or vsn not in KNOWN_SCHEMA_VERSIONS:
        raise BadAlert(f"unknown schema: ZTF schemavsn {_shown(vsn)} is not one this adapter knows", oid, candid)
    if not raw_oid:
        raise BadAlert("missing required field objectId", None, candid)
    if oid is None:
        raise BadAlert(
            f"objectId {_shown(raw_oid)} is not a ZTF id ('ZTF' + 2 digits + 7 lowercase letters)", None, candid
        )
    if raw_candid is None or "candid" not in record:
        raise BadAlert("missing required field candid", oid, None)
    if candid is None:
        raise BadAlert(f"candid {_shown(raw_candid)} is not a positive 64-bit integer", oid, None)
    publisher = record.get("publisher")
    if publisher is not None and (publisher.__class__ is not str or len(publisher) > STRING_LIMITS["publisher"]):
        raise BadAlert(
            f"publisher {_shown(publisher)} is not text of at most {STRING_LIMITS['publisher']} characters", oid, candid
        )
    for name in _REQUIRED_CANDIDATE:
        _required(cand, name, "candidate", oid, candid)
    if cand["fid"] not in _FIDS:
        raise BadAlert(f"bad value in required field candidate.fid: {_shown(cand['fid'])}", oid, candid)
    if not _on_sky(cand):
        raise BadAlert(f"candidate position off the sky: ra {cand['ra']!r}, dec {cand['dec']!r}", oid, candid)
    if cand.get("isdiffpos") not in _ISDIFFPOS:
        raise BadAlert(f"bad value in required field candidate.isdiffpos: {_shown(cand.get('isdiffpos'))}", oid, candid)
    if cand.get("candid", candid) != candid:
        raise BadAlert(f"candid mismatch: packet {candid}, candidate {_shown(cand.get('candid'))}", oid, candid)
    night = _night_problem(cand["jd"], cand.get("pid"), cand.get("nid"))
    if night:
        raise BadAlert(f"candidate {night}: a rebroadcaster's fill value (such packets carry placeholder "
                       "positions too); the alert is refused", oid, candid)

    cutouts = {key: _stamp(record.get(name)) for key, name in CUTOUT_FIELDS.items()}
    detection = _detection(cand, candid, oid, candid, cutouts["science"] is not None, "candidate")

    history = record.get("prv_candidates") or ()
    if not isinstance(history, (list, tuple)):
        raise BadAlert(f"prv_candidates is a {type(history).__name__}, not a list", oid, candid)
    fp_hists = record.get("fp_hists") or ()
    if not isinstance(fp_hists, (list, tuple)):
        raise BadAlert(f"fp_hists is a {type(fp_hists).__name__}, not a list", oid, candid)
    for name, rows in (("prv_candidates", history), ("fp_hists", fp_hists)):
        if len(rows) > MAX_HISTORY_ROWS:
            raise BadAlert(f"{name} holds {len(rows)} rows; ZTF sends 30 days of history (at most 180 rows in "
                           f"the real packets): more than {MAX_HISTORY_ROWS} is refused", oid, candid)
    shared = _shared_jds(row for row in history if isinstance(row, dict) and row.get("jd").__class__ is float)
    prv_detections, non_detections, forced = [], [], []
    dropped_ul = dropped_det = off_night = shared_jd = incomplete = off_sky = bad_candid = far = dropped_fp = 0
    dropped = []  # what each dropped row was, for the quarantine
    for i, row in enumerate(history):
        if not isinstance(row, dict):
            raise BadAlert(f"prv_candidates[{i}] is a {type(row).__name__}, not a record", oid, candid)
        where = f"prv_candidates[{i}]"
        if "candid" not in row and "forcediffimflux" in row:  # schema 3.5: forced photometry
            if _usable(row, ("jd",)) and row.get("fid") in _FIDS:
                forced.append(_forced_photometry(row, oid, candid, where))
            else:
                incomplete += 1
                dropped_fp += 1
                dropped.append(_dropped_row(row, where, "lacks jd or fid"))
            continue
        row_candid = row.get("candid")
        is_detection = row_candid is not None
        jd = row.get("jd")
        if is_detection and not is_valid_candid(row_candid):
            bad_candid += 1
            why = "candid is not a positive 64-bit integer"
        elif jd in shared:
            shared_jd += 1
            why = "jd shared by rows of different exposures"
        elif _usable(row, ("jd",)) and not _night_ok(jd, row.get("pid"), row.get("nid")):
            off_night += 1
            why = _night_problem(jd, row.get("pid"), row.get("nid"))
        elif row.get("fid") not in _FIDS:
            incomplete += 1
            why = "no valid fid"
        elif is_detection and _usable(row, _REQUIRED_PRV_DETECTION) and row.get("isdiffpos") in _ISDIFFPOS:
            if not _on_sky(row):
                off_sky += 1
                why = "position off the sky"
            elif _offset_arcsec(row, cand["ra"], cand["dec"]) > MAX_HISTORY_OFFSET_ARCSEC:
                far += 1
                why = (f"{_offset_arcsec(row, cand['ra'], cand['dec']):.1f} arcsec from the alert's candidate "
                       f"(more than {MAX_HISTORY_OFFSET_ARCSEC:g}): not this object's detection")
            else:
                prv_detections.append(_detection(row, row_candid, oid, candid, False, where))
                continue
        elif not is_detection and _usable(row, ("jd", "diffmaglim")):
            non_detections.append({
                "oid": oid, "fid": row["fid"], "mjd": row["jd"] - MJD_OFFSET,
                "diffmaglim": row["diffmaglim"], "parent_candid": candid,
            })
            continue
        else:
            incomplete += 1
            why = "lacks jd, photometry or position"
        dropped.append(_dropped_row(row, where, why))
        if is_detection:
            dropped_det += 1
        else:
            dropped_ul += 1
    for i, row in enumerate(fp_hists):
        if not isinstance(row, dict):
            raise BadAlert(f"fp_hists[{i}] is a {type(row).__name__}, not a record", oid, candid)
        if _usable(row, ("jd",)) and row.get("fid") in _FIDS:
            forced.append(_forced_photometry(row, oid, candid, f"fp_hists[{i}]"))
        else:
            incomplete += 1
            dropped_fp += 1
            dropped.append(_dropped_row(row, f"fp_hists[{i}]", "lacks jd or fid"))

    notes = []
    if shared_jd:
        notes.append(f"dropped {shared_jd} prv_candidates whose jd is shared by rows of different exposures (pid)")
    if off_night:
        notes.append(f"dropped {off_night} prv_candidates whose jd lies outside the night encoded in their pid")
    if incomplete:
        notes.append(
            f"dropped {incomplete} history rows lacking jd, fid or photometry "
            "(upper limits need diffmaglim; detections need ra, dec, magpsf, sigmapsf, isdiffpos)"
        )
    if off_sky:
        notes.append(f"dropped {off_sky} prv_candidates with a position off the sky")
    if far:
        notes.append(f"dropped {far} prv_candidates more than {MAX_HISTORY_OFFSET_ARCSEC:g} arcsec from the alert's "
                     "candidate (not this object's detections)")
    if bad_candid:
        notes.append(f"dropped {bad_candid} prv_candidates whose candid is not a positive 64-bit integer")

    hist = _copied(cand, ("ndethist", "ncovhist", "jdstarthist", "jdendhist"), "candidate", oid, candid)
    jdstart, jdend = hist["jdstarthist"], hist["jdendhist"]
    object_fields = {
        "oid": oid,
        "ndethist": hist["ndethist"],
        "ncovhist": hist["ncovhist"],
        "mjdstarthist": None if jdstart is None else jdstart - MJD_OFFSET,
        "mjdendhist": None if jdend is None else jdend - MJD_OFFSET,
        "ra": cand["ra"],
        "dec": cand["dec"],
    }
    return ParsedAlert(
        oid=oid,
        candid=candid,
        schemavsn=vsn,
        publisher=publisher,
        detection=detection,
        prv_detections=prv_detections,
        non_detections=non_detections,
        cutouts=cutouts,
        object_fields=object_fields,
        # nmtchps is always filled (0 when PS1 has nothing within 30"): it alone is no match.
        ps1=_group(cand, PS1_KEYS, oid, candid, ignore=("nmtchps",)),
        gaia=_group(cand, GAIA_KEYS, oid, candid),
        ss=_group(cand, SS_KEYS, oid, candid),
        dropped_upper_limits=dropped_ul,
        dropped_detections=dropped_det,
        dropped_forced_photometry=dropped_fp,
        dropped=dropped,
        forced_photometry=forced,
        warnings=notes,
    )


_DROPPED_FIELDS = ("candid", "jd", "pid", "fid", "ra", "dec", "magpsf", "diffmaglim")


def _dropped_row(row, where, why):
    """A short, JSON-safe record of a dropped history row (what the quarantine keeps of it)."""
    out = {"where": where, "why": why}
    for name in _DROPPED_FIELDS:
        value = row.get(name)
        if value is None or value.__class__ in (int, float, bool):
            out[name] = value if value.__class__ is not float or math.isfinite(value) else repr(value)
        else:
            out[name] = _shown(value, 64)
    return out


def parse_packet(data):
    """``decode_container`` then ``parse_record`` on every record (a BadAlert propagates)."""
    return [parse_record(record) for record in decode_container(data)]
