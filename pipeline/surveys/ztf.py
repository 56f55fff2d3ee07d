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
  ``warnings``): upper limits without a diffmaglim, earlier detections without photometry, and
  rows whose jd contradicts the night encoded in their pid (nid = pid // 10**9, night nid starts
  at JD 2457754.5 + nid), which re-distributed streams are known to produce.
- Schema 3.5 (2021, partnership stream) carries forced-photometry rows in ``prv_candidates``
  (no candid, no magpsf, forcediffimflux); they go to ``forced_photometry`` with the 4.x
  ``fp_hists``, not to the upper limits.

Pure Python + fastavro; no Django, no Celery.
"""
import gzip
import io
import json
import re
import warnings
import zlib

import fastavro
import numpy as np

from pipeline.surveys.base import BadAlert, ParsedAlert

__all__ = [
    "KNOWN_SCHEMA_VERSIONS", "BadAlert", "ParsedAlert", "decode_container", "parse_record",
    "parse_packet", "jd_to_mjd", "cutout_image",
]

#: Schema versions this adapter has been checked against on real packets. ``None`` is the early
#: (2017/18) packet whose writer schema has no ``schemavsn`` / ``publisher`` field at all; it has
#: the 2.0 layout less ``rbversion`` and is parsed exactly like 2.0.
KNOWN_SCHEMA_VERSIONS = frozenset({None, "2.0", "3.0", "3.1", "3.2", "3.3", "3.5", "4.01", "4.02"})

MJD_OFFSET = 2400000.5
#: JD at which ZTF night id (nid) 0 starts: 2017-01-01T00:00 UTC. Checked on every real packet:
#: jd - (NID_JD0 + pid // 10**9) lies in [0, 1) for every row ZTF wrote.
NID_JD0 = 2457754.5

#: Values ZTF writes for "no value" in float/long fields (-999 candidate, -99999 history rows).
MISSING_SENTINELS = frozenset({-99.0, -999.0, -9999.0, -99999.0})
#: Forced-photometry fluxes can be legitimately negative: only -99999 means "none" there.
_FLUX_FIELDS = frozenset({"forcediffimflux", "forcediffimfluxunc"})
_FLUX_SENTINELS = frozenset({-99999.0})

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


_SIMULATED_OID = re.compile(r"^ZTFSIM\d{2}[a-z]{7}$")


def is_simulated_oid(oid: str) -> bool:
    """True for the simulator's ids (``ZTFSIM`` + yy + 7 letters); never true for a real ZTF id
    (``ZTF`` + yy + 7 letters)."""
    return bool(_SIMULATED_OID.match(oid))


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


def _parsed_schema(raw):
    parsed = _SCHEMA_CACHE.get(raw)
    if parsed is None:
        try:
            parsed = fastavro.parse_schema(json.loads(raw))
        except Exception as exc:  # json or schema errors, whatever their type
            raise _Corrupt(f"writer schema in the header does not parse ({type(exc).__name__}: {exc})") from None
        if len(_SCHEMA_CACHE) >= _SCHEMA_CACHE_MAX:
            _SCHEMA_CACHE.clear()
        _SCHEMA_CACHE[raw] = parsed
    return parsed


def _decode_blocks(data, parsed, sync, pos, deflate):
    n = len(data)
    records = []
    reader = fastavro.schemaless_reader
    while pos < n:
        count, pos = _read_long(data, pos)
        size, pos = _read_long(data, pos)
        if count < 0 or size < 0:
            raise _Corrupt(f"negative block count or size at offset {pos}")
        end = pos + size
        if end + _SYNC_SIZE > n:
            raise _Corrupt(f"block of {size} bytes at offset {pos} runs past the end of the data ({n} bytes)")
        if data[end:end + _SYNC_SIZE] != sync:
            raise _Corrupt(f"sync marker mismatch after the block at offset {pos}")
        block = data[pos:end]
        if deflate:
            block = zlib.decompress(block, -15)
        fo = io.BytesIO(block)
        for _ in range(count):
            records.append(reader(fo, parsed, None))
        if fo.tell() != len(block):
            raise _Corrupt(f"block at offset {pos} holds {len(block) - fo.tell()} bytes beyond its {count} records")
        pos = end + _SYNC_SIZE
    return records


def decode_container(data):
    """Decode an Avro object container (one or more records) into a list of dicts.

    Fast path: the header is read here and the writer schema is parsed once per distinct schema
    (cached), then each block is decoded with fastavro's schemaless reader; codecs other than
    null/deflate go through ``fastavro.reader``. Raises ``BadAlert`` for empty bytes, data that
    is not an Avro container, and truncated or corrupt containers.
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
        if codec in (b"null", b"deflate"):
            records = _decode_blocks(data, _parsed_schema(raw_schema), sync, pos, codec == b"deflate")
        else:
            records = list(fastavro.reader(io.BytesIO(data)))
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
def _clean(value):
    """None for null, NaN, ZTF "no value" sentinels and the string 'null'; else the value."""
    cls = value.__class__
    if cls is float:
        if value != value or value in MISSING_SENTINELS:
            return None
    elif cls is int:
        if value in MISSING_SENTINELS:
            return None
    elif cls is str:
        if value == "null" or value == "":
            return None
    return value


def _clean_flux(value):
    if value is None or value != value or value in _FLUX_SENTINELS:
        return None
    return value


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
    if value in MISSING_SENTINELS:
        raise BadAlert(f"sentinel {value!r} in required field {where}.{name}", oid, candid)
    return value


def _usable(row, names):
    """True when every one of ``names`` holds a real number (no null, NaN or sentinel)."""
    for name in names:
        v = row.get(name)
        if v is None or v.__class__ is bool or v != v or v in MISSING_SENTINELS:
            return False
    return True


def _night_ok(jd, pid, nid=None):
    """Whether ``jd`` falls in (a day either side of) the row's night: its ``nid`` where the schema
    carries one, else the night id that ZTF encodes in the first digits of ``pid``."""
    if nid is None or nid.__class__ is not int:
        if pid is None or pid.__class__ is not int or pid < 10**9:
            return True
        nid = pid // 10**9
    offset = jd - (NID_JD0 + nid)
    return -1.0 <= offset < 2.0


def _detection(row, candid, oid, parent_candid, has_stamp):
    det = {k: _clean(row.get(k)) for k in _DETECTION_COPIED}
    det["candid"] = candid
    det["oid"] = oid
    det["mjd"] = row["jd"] - MJD_OFFSET
    det["fid"] = row["fid"]
    det["isdiffpos"] = _ISDIFFPOS.get(row.get("isdiffpos"))
    det["has_stamp"] = has_stamp
    det["parent_candid"] = parent_candid
    return det


def _forced_photometry(row, oid, parent_candid):
    fp = {k: _clean(row.get(k)) for k in _FP_COPIED}
    for k in _FLUX_FIELDS:
        fp[k] = _clean_flux(row.get(k))
    fp["oid"] = oid
    fp["mjd"] = row["jd"] - MJD_OFFSET
    fp["parent_candid"] = parent_candid
    return fp


def _group(cand, keys, oid, candid, ignore=()):
    """A catalogue group (ps1/gaia/ss) or None when it holds no value."""
    values = {k: _clean(cand.get(k)) for k in keys[2:]}
    if all(v is None for k, v in values.items() if k not in ignore):
        return None
    return {"oid": oid, "candid": candid, **values}


def _stamp(cutout):
    if not cutout:
        return None
    data = cutout.get("stampData")
    return data or None


def parse_record(record):
    """One decoded ZTF alert -> ``ParsedAlert`` (see the module docstring for the policies).

    Raises ``BadAlert`` for records that are not ZTF alerts (no ``candidate``), unknown
    ``schemavsn``, and missing/null/NaN/sentinel values in the required fields.
    """
    if not isinstance(record, dict):
        raise BadAlert(f"unknown schema: record is a {type(record).__name__}, not a ZTF alert")
    cand = record.get("candidate")
    oid = record.get("objectId")
    candid = record.get("candid")
    oid = oid if isinstance(oid, str) else None
    candid = candid if candid.__class__ is int else None
    if not isinstance(cand, dict):
        fields = ", ".join(sorted(map(str, record))[:8])
        raise BadAlert(f"unknown schema: not a ZTF alert (no 'candidate' record; fields: {fields})", oid, candid)
    vsn = record.get("schemavsn")
    if vsn not in KNOWN_SCHEMA_VERSIONS:
        raise BadAlert(f"unknown schema: ZTF schemavsn {vsn!r} is not one this adapter knows", oid, candid)
    if not oid:
        raise BadAlert("missing required field objectId", None, candid)
    if candid is None:
        raise BadAlert("missing required field candid", oid, None)
    for name in _REQUIRED_CANDIDATE:
        _required(cand, name, "candidate", oid, candid)
    if cand["fid"] not in _FIDS:
        raise BadAlert(f"bad value in required field candidate.fid: {cand['fid']!r}", oid, candid)
    if cand.get("candid", candid) != candid:
        raise BadAlert(f"candid mismatch: packet {candid}, candidate {cand.get('candid')}", oid, candid)

    cutouts = {key: _stamp(record.get(name)) for key, name in CUTOUT_FIELDS.items()}
    detection = _detection(cand, candid, oid, candid, cutouts["science"] is not None)

    prv_detections, non_detections, forced = [], [], []
    dropped_ul = dropped_det = off_night = incomplete = 0
    for row in record.get("prv_candidates") or ():
        if "candid" not in row and "forcediffimflux" in row:  # schema 3.5: forced photometry
            if _usable(row, ("jd",)) and row.get("fid") in _FIDS:
                forced.append(_forced_photometry(row, oid, candid))
            continue
        is_detection = row.get("candid") is not None
        jd = row.get("jd")
        if jd is not None and not _night_ok(jd, row.get("pid"), row.get("nid")):
            off_night += 1
        elif row.get("fid") not in _FIDS:
            incomplete += 1
        elif is_detection and _usable(row, _REQUIRED_PRV_DETECTION):
            prv_detections.append(_detection(row, row["candid"], oid, candid, False))
            continue
        elif not is_detection and _usable(row, ("jd", "diffmaglim")):
            non_detections.append({
                "oid": oid, "fid": row["fid"], "mjd": row["jd"] - MJD_OFFSET,
                "diffmaglim": row["diffmaglim"], "parent_candid": candid,
            })
            continue
        else:
            incomplete += 1
        if is_detection:
            dropped_det += 1
        else:
            dropped_ul += 1
    for row in record.get("fp_hists") or ():
        if _usable(row, ("jd",)) and row.get("fid") in _FIDS:
            forced.append(_forced_photometry(row, oid, candid))

    notes = []
    if off_night:
        notes.append(f"dropped {off_night} prv_candidates whose jd lies outside the night encoded in their pid")
    if incomplete:
        notes.append(
            f"dropped {incomplete} prv_candidates lacking jd, fid or photometry "
            "(upper limits need diffmaglim; detections need ra, dec, magpsf, sigmapsf)"
        )

    jdstart, jdend = _clean(cand.get("jdstarthist")), _clean(cand.get("jdendhist"))
    object_fields = {
        "oid": oid,
        "ndethist": _clean(cand.get("ndethist")),
        "ncovhist": _clean(cand.get("ncovhist")),
        "mjdstarthist": None if jdstart is None else jdstart - MJD_OFFSET,
        "mjdendhist": None if jdend is None else jdend - MJD_OFFSET,
        "ra": cand["ra"],
        "dec": cand["dec"],
    }
    return ParsedAlert(
        oid=oid,
        candid=candid,
        schemavsn=vsn,
        publisher=record.get("publisher"),
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
        forced_photometry=forced,
        warnings=notes,
    )


def parse_packet(data):
    """``decode_container`` then ``parse_record`` on every record (a BadAlert propagates)."""
    return [parse_record(record) for record in decode_container(data)]


def cutout_image(stamp_bytes):
    """The 2-D image of a cutout's ``stampData`` (gzipped or plain FITS), native byte order.

    ZTF writes ``SIMPLE  =  T`` with the value off its fixed-format column; astropy reads it
    fine but warns, so that one VerifyWarning is silenced here.
    """
    from astropy.io import fits  # imported here: the ingest hot path does not need astropy
    from astropy.io.fits.verify import VerifyWarning

    if not stamp_bytes:
        raise ValueError("no cutout data")
    raw = bytes(stamp_bytes)
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Found a SIMPLE card", category=VerifyWarning)
        with fits.open(io.BytesIO(raw), memmap=False) as hdul:
            for hdu in hdul:
                if hdu.data is not None:
                    data = np.asarray(hdu.data)
                    return data.astype(data.dtype.newbyteorder("="), copy=True)
    raise ValueError("FITS cutout holds no image")
