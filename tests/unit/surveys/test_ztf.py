"""The ZTF adapter on every real packet of ../shared/data (schemas 2.0 to 4.02, unversioned early
packets, packets without cutouts) and on broken inputs.

Expected values are computed independently from the raw record (read with plain
``fastavro.reader``) and from the manifest, not from the adapter.
"""
import csv
import gzip
import io
import math
import warnings
from collections import Counter

import fastavro
import numpy as np
import pytest
from astropy.io import fits

from pipeline.surveys.base import BadAlert, ParsedAlert
from pipeline.surveys.ztf import (
    KNOWN_SCHEMA_VERSIONS, cutout_image, decode_container, jd_to_mjd, parse_packet, parse_record,
)
from tests.conftest import require_shared

FOLDERS = ("ztf_alerts", "ztf_alerts_older_schemas", "ztf_alerts_no_cutouts")
#: Placeholder positions of rebroadcast packets (Fink's 2023 stream) whose jd was rewritten.
PLACEHOLDERS = [(3.38, 52.69), (4.38, 53.69), (5.38, 54.69), (349.55, 50.5167), (350.55, 51.5167), (351.55, 52.5167)]


def _rewritten_jd(row):
    """The row's jd is more than a minute from the exposure time its pid encodes (ZTF's pid: night id,
    then the time of day in millionths of a day)."""
    pid = row["pid"]
    return abs(row["jd"] - (2457754.5 + pid // 10**9 + pid % 10**9 // 1000 / 1e6)) * 86400 > 60
DETECTION_KEYS = {
    "candid", "oid", "mjd", "fid", "pid", "ra", "dec", "magpsf", "sigmapsf", "magap", "sigmagap",
    "diffmaglim", "isdiffpos", "rb", "drb", "rbversion", "drbversion", "magnr", "sigmagnr",
    "distnr", "chinr", "sharpnr", "fwhm", "elong", "nneg", "nbad", "field", "rcid", "programid",
    "sgscore1", "distpsnr1", "ssdistnr", "ssmagnr", "ssnamenr", "has_stamp", "parent_candid",
}
ISDIFFPOS = {"t": 1, "1": 1, "f": -1, "0": -1}
# The Fink distribution-stream packets rewritten from Spark lost the jd of their history rows
# (all prv_candidates share one jd); the adapter drops the rows whose jd is off their pid's night.
FINK_STREAM_SOURCE = "datasim/basic_alerts/all_distribute_topics/"


# ------------------------------------------------------------------------------ helpers
def _raw(data):
    """Records of a packet read the plain way (independent of the adapter's fast path)."""
    return list(fastavro.reader(io.BytesIO(data)))


def _packets(folder):
    root = require_shared(folder)
    files = sorted(root.glob("*.avro"))
    assert files, f"no .avro packets in ../shared/data/{folder}"
    return [(path.name, path.read_bytes()) for path in files]


@pytest.fixture(scope="module")
def manifest():
    path = require_shared("ztf_alerts_manifest.csv")
    with open(path, newline="") as fh:
        return {(row["dir"], row["file"]): row for row in csv.DictReader(fh)}


def _first_packet(folders, predicate=lambda rec: True):
    """(name, bytes, raw record) of the first packet in ``folders`` (a name or a tuple) matching."""
    for folder in (folders,) if isinstance(folders, str) else folders:
        for name, data in _packets(folder):
            rec = _raw(data)[0]
            if predicate(rec):
                return name, data, rec
    pytest.skip(f"no packet in {folders} matches")


def _no_missing_markers(values, where):
    for key, value in values.items():
        if isinstance(value, float):
            assert not math.isnan(value), f"{where}: NaN left in {key}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert value not in (-999, -99999), f"{where}: sentinel {value} left in {key}"
        assert value != "null", f"{where}: string 'null' left in {key}"


# ------------------------------------------------------------------------------ every real packet
@pytest.mark.parametrize("folder", FOLDERS)
def test_every_packet_parses_with_counts_values_and_manifest(folder, manifest):
    seen_isdiffpos = Counter()
    refused = 0
    for name, data in _packets(folder):
        raw_records = _raw(data)
        if _rewritten_jd(raw_records[0]["candidate"]):
            # issue 27: a rebroadcast alert whose jd is not its exposure's carries a placeholder position
            cand = raw_records[0]["candidate"]
            assert FINK_STREAM_SOURCE in manifest[(folder, name)]["source"], name
            assert any(abs(cand["ra"] - ra) < 1e-3 and abs(cand["dec"] - dec) < 1e-3 for ra, dec in PLACEHOLDERS), name
            with pytest.raises(BadAlert, match="from the exposure time|outside the dark part"):
                parse_packet(data)
            refused += 1
            continue
        alerts = parse_packet(data)
        assert len(alerts) == len(raw_records) == 1, name
        rec, alert = raw_records[0], alerts[0]
        cand = rec["candidate"]
        where = f"{folder}/{name}"
        assert isinstance(alert, ParsedAlert)

        # identity, against the raw record and the manifest
        row = manifest[(folder, name)]
        assert alert.oid == rec["objectId"] == row["objectId"], where
        assert alert.candid == rec["candid"] == int(row["candid"]), where
        assert alert.schemavsn == (row["schemavsn"] or None), where
        assert alert.schemavsn in KNOWN_SCHEMA_VERSIONS
        assert alert.publisher == rec.get("publisher"), where

        # the alert's own detection
        det = alert.detection
        assert set(det) == DETECTION_KEYS, where
        assert det["mjd"] == cand["jd"] - 2400000.5, where
        assert det["mjd"] == float(row["jd"]) - 2400000.5, where
        assert det["fid"] == cand["fid"] == int(row["fid"]), where
        assert det["magpsf"] == cand["magpsf"], where
        assert abs(det["magpsf"] - float(row["magpsf"])) < 1e-6, where
        assert (det["ra"], det["dec"], det["sigmapsf"]) == (cand["ra"], cand["dec"], cand["sigmapsf"]), where
        assert det["isdiffpos"] == ISDIFFPOS[cand["isdiffpos"]], where
        assert det["parent_candid"] == alert.candid and det["candid"] == alert.candid, where
        assert det["oid"] == alert.oid
        _no_missing_markers(det, where)
        seen_isdiffpos[(cand["isdiffpos"], det["isdiffpos"])] += 1

        # history: counted from the raw record
        prv = rec.get("prv_candidates") or []
        assert len(prv) == int(row["n_prv_candidates"]), where
        forced_in_prv = [p for p in prv if "candid" not in p and "forcediffimflux" in p]
        raw_dets = [p for p in prv if p.get("candid") is not None]
        raw_uls = [p for p in prv if "candid" in p and p["candid"] is None]
        assert len(raw_dets) + len(raw_uls) + len(forced_in_prv) == len(prv), where
        assert len(alert.prv_detections) + alert.dropped_detections == len(raw_dets), where
        assert len(alert.non_detections) + alert.dropped_upper_limits == len(raw_uls), where
        fp_hists = rec.get("fp_hists") or []
        if row["n_fp_hists"]:
            assert len(fp_hists) == int(row["n_fp_hists"]), where
        assert len(alert.forced_photometry) == len(forced_in_prv) + len(fp_hists), where
        # 1 + kept earlier detections, in packet order, with exact mjd and the packet's values
        assert len(alert.detections) == 1 + len(alert.prv_detections)
        by_candid = {p["candid"]: p for p in raw_dets}
        for d in alert.prv_detections:
            p = by_candid[d["candid"]]
            assert set(d) == DETECTION_KEYS, where
            assert d["mjd"] == p["jd"] - 2400000.5, where
            assert (d["fid"], d["magpsf"], d["sigmapsf"], d["ra"]) == (p["fid"], p["magpsf"], p["sigmapsf"], p["ra"])
            assert d["isdiffpos"] == ISDIFFPOS[p["isdiffpos"]], where
            assert d["has_stamp"] is False and d["parent_candid"] == alert.candid, where
            assert d["drb"] is None and d["sgscore1"] is None  # prv_candidate has neither
            _no_missing_markers(d, where)
            seen_isdiffpos[(p["isdiffpos"], d["isdiffpos"])] += 1
        kept_uls = [p for p in raw_uls if p["diffmaglim"] is not None]
        if not alert.dropped_upper_limits:
            assert [(u["fid"], u["mjd"], u["diffmaglim"]) for u in alert.non_detections] == [
                (p["fid"], p["jd"] - 2400000.5, p["diffmaglim"]) for p in kept_uls], where
        for u in alert.non_detections:
            assert set(u) == {"oid", "fid", "mjd", "diffmaglim", "parent_candid"}
            assert u["oid"] == alert.oid and u["parent_candid"] == alert.candid
            assert u["diffmaglim"] is not None and u["fid"] in (1, 2, 3)
        # nothing is dropped except in the Fink stream packets known to have broken history jds
        dropped = alert.dropped_detections + alert.dropped_upper_limits
        if FINK_STREAM_SOURCE not in row["source"]:
            assert dropped == 0 and not alert.warnings, where
        if dropped:
            assert alert.warnings, where

        # object and catalogue groups
        obj = alert.object_fields
        assert set(obj) == {"oid", "ndethist", "ncovhist", "mjdstarthist", "mjdendhist", "ra", "dec"}
        assert obj["ndethist"] == cand["ndethist"] and obj["ncovhist"] == cand["ncovhist"], where
        if cand.get("jdstarthist") is not None:
            assert obj["mjdstarthist"] == cand["jdstarthist"] - 2400000.5, where
        for group, keys in ((alert.ps1, ("sgmag1", "srmag1", "distpsnr1", "objectidps1")),
                            (alert.gaia, ("neargaia", "maggaia")), (alert.ss, ("ssdistnr", "ssnamenr"))):
            if group is not None:
                _no_missing_markers(group, where)
                assert group["oid"] == alert.oid and group["candid"] == alert.candid
                for key in keys:
                    expected = cand.get(key)
                    if expected in (-999, -999.0, "null"):
                        expected = None
                    assert group[key] == expected, f"{where}: {key}"
        if cand.get("ssnamenr") in (None, "null") and cand.get("ssdistnr") in (None, -999.0):
            assert alert.ss is None, where

        # cutouts: present as the packet holds them
        n_cutouts = sum(v is not None for v in alert.cutouts.values())
        assert set(alert.cutouts) == {"science", "template", "difference"}
        assert n_cutouts == int(row["n_cutouts"]), where
        for key, field in (("science", "cutoutScience"), ("template", "cutoutTemplate"),
                           ("difference", "cutoutDifference")):
            stamp = rec.get(field)
            assert alert.cutouts[key] == (stamp["stampData"] if stamp else None), where
        assert det["has_stamp"] is (rec.get("cutoutScience") is not None), where

    # the rebroadcast alerts with a rewritten jd and a placeholder position (issue 27)
    assert refused == (74 if folder == "ztf_alerts" else 0)
    if folder != "ztf_alerts_no_cutouts":
        # both signs occur in the data, so a constant mapping would fail above
        assert {v for (_, v) in seen_isdiffpos} == {1, -1}, seen_isdiffpos


@pytest.mark.parametrize("folder", ("ztf_alerts", "ztf_alerts_older_schemas"))
def test_cutouts_decompress_to_2d_fits_images_of_their_header_shape(folder):
    shapes = Counter()
    for name, data in _packets(folder):
        if _rewritten_jd(_raw(data)[0]["candidate"]):
            continue  # refused (issue 27)
        alert = parse_packet(data)[0]
        for key, stamp in alert.cutouts.items():
            assert stamp[:2] == b"\x1f\x8b", f"{name} {key}: stamp is not gzipped"
            with warnings.catch_warnings():  # ZTF's SIMPLE card is off its column
                warnings.simplefilter("ignore", fits.verify.VerifyWarning)
                header = fits.getheader(io.BytesIO(gzip.decompress(stamp)))
            image = cutout_image(stamp)
            assert image.ndim == 2 and header["NAXIS"] == 2, f"{name} {key}"
            assert image.shape == (header["NAXIS2"], header["NAXIS1"]), f"{name} {key}"
            assert image.dtype.isnative and np.isfinite(image).any(), f"{name} {key}"
            shapes[image.shape] += 1
    assert shapes.most_common(1)[0][0] == (63, 63), shapes
    assert all(h <= 63 and w <= 63 for (h, w) in shapes), shapes


def test_cutout_image_accepts_plain_fits_and_refuses_nothing():
    _, data, _ = _first_packet("ztf_alerts")
    stamp = parse_packet(data)[0].cutouts["science"]
    assert np.array_equal(cutout_image(gzip.decompress(stamp)), cutout_image(stamp))
    with pytest.raises(ValueError):
        cutout_image(None)


def test_packets_without_cutouts_have_no_stamp():
    for name, data in _packets("ztf_alerts_no_cutouts"):
        alert = parse_packet(data)[0]
        assert alert.cutouts == {"science": None, "template": None, "difference": None}, name
        assert alert.detection["has_stamp"] is False, name


def test_schema_35_history_is_forced_photometry_not_upper_limits():
    name, data, rec = _first_packet("ztf_alerts_no_cutouts", lambda r: r["schemavsn"] == "3.5" and r["prv_candidates"])
    alert = parse_packet(data)[0]
    assert alert.non_detections == [] and alert.prv_detections == []
    assert len(alert.forced_photometry) == len(rec["prv_candidates"])
    first, raw = alert.forced_photometry[0], rec["prv_candidates"][0]
    assert first["mjd"] == raw["jd"] - 2400000.5
    assert first["forcediffimflux"] == raw["forcediffimflux"]
    assert first["diffmaglim"] == raw["diffmaglim"] and first["parent_candid"] == alert.candid


def test_fp_hists_of_schema_4_become_forced_photometry_with_sentinels_removed():
    name, data, rec = _first_packet("ztf_alerts", lambda r: r.get("fp_hists"))
    alert = parse_packet(data)[0]
    assert len(alert.forced_photometry) == len(rec["fp_hists"])
    for fp, raw in zip(alert.forced_photometry, rec["fp_hists"]):
        assert fp["mjd"] == raw["jd"] - 2400000.5
        if raw["forcediffimflux"] == -99999.0:
            assert fp["forcediffimflux"] is None
        else:
            assert fp["forcediffimflux"] == raw["forcediffimflux"]


def test_sentinels_become_none():
    _, data, rec = _first_packet("ztf_alerts", lambda r: r["candidate"]["sgmag1"] == -999.0)
    alert = parse_packet(data)[0]
    assert alert.ps1["sgmag1"] is None
    # a real value next to it is untouched
    srmag1 = rec["candidate"]["srmag1"]
    assert alert.ps1["srmag1"] == (None if srmag1 == -999.0 else srmag1)
    _, data, rec = _first_packet(FOLDERS, lambda r: r["candidate"]["distnr"] == -999.0)
    det = parse_packet(data)[0].detection
    assert det["distnr"] is None and det["magnr"] is None and det["sigmagnr"] is None
    # the string 'null' in ssnamenr
    _, data, rec = _first_packet("ztf_alerts", lambda r: r["candidate"]["ssnamenr"] == "null")
    alert = parse_packet(data)[0]
    assert alert.detection["ssnamenr"] is None
    assert alert.ss is None or alert.ss["ssdistnr"] is not None
    # and -999 in an earlier detection
    def has_prv_sentinel(r):
        return any(p.get("candid") and p.get("ssdistnr") == -999.0 for p in r.get("prv_candidates") or [])
    _, data, rec = _first_packet(FOLDERS, has_prv_sentinel)
    alert = parse_packet(data)[0]
    raw = {p["candid"]: p for p in rec["prv_candidates"] if p.get("candid")}
    flagged = [d for d in alert.prv_detections if raw[d["candid"]]["ssdistnr"] == -999.0]
    assert flagged and all(d["ssdistnr"] is None and d["ssmagnr"] is None for d in flagged)


def test_early_unversioned_packet_parses_like_20():
    name, data, rec = _first_packet("ztf_alerts_older_schemas", lambda r: "schemavsn" not in r)
    assert None in KNOWN_SCHEMA_VERSIONS
    alert = parse_packet(data)[0]
    assert alert.schemavsn is None and alert.publisher is None
    assert alert.detection["rbversion"] is None and alert.detection["drb"] is None
    assert alert.gaia is None  # no Gaia fields before 3.0
    assert alert.detection["rb"] == rec["candidate"]["rb"]


def test_broken_history_jds_are_dropped_and_counted(manifest):
    root = require_shared("ztf_alerts")
    path = root / "2481114533215015024.avro"
    if not path.exists():
        pytest.skip("reference packet 2481114533215015024 absent")
    data = path.read_bytes()
    # its own candidate's jd is a fill value too (and its position a placeholder): the alert is refused
    with pytest.raises(BadAlert, match="jd 2460236.1042900463 is 42315 s from the exposure time 2460235.614533"):
        parse_packet(data)
    record = decode_container(data)[0]
    record["candidate"]["jd"] = 2460235.614533  # the time its pid encodes: the history is parsed as usual
    alert = parse_record(record)
    # 35 upper limits of 35 different exposures (pid), all stamped jd 2460236.0626233793: 33 lie on
    # other nights, and the 2 whose night it could be carry the same fill value: all are dropped.
    assert len(alert.non_detections) == 0 and alert.dropped_upper_limits == 35
    assert alert.warnings == ["dropped 35 prv_candidates whose jd is shared by rows of different exposures (pid)"]


# ------------------------------------------------------------------------------ container decoding
def test_multi_record_and_deflate_containers_decode():
    _, data, _ = _first_packet("ztf_alerts")
    reader = fastavro.reader(io.BytesIO(data))
    schema, record = reader.writer_schema, next(reader)
    for codec in ("null", "deflate"):
        buf = io.BytesIO()
        fastavro.writer(buf, schema, [record, record, record], codec=codec, sync_interval=1)
        records = decode_container(buf.getvalue())
        assert len(records) == 3 and records[2] == record, codec
        assert [a.candid for a in parse_packet(buf.getvalue())] == [record["candid"]] * 3


def _reason(data):
    with pytest.raises(BadAlert) as info:
        parse_packet(data)
    return info.value.reason


def test_bad_alert_for_empty_and_random_bytes():
    assert "empty" in _reason(b"")
    rng = np.random.default_rng(12345)
    noise = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert not noise.startswith(b"Obj\x01")
    assert _reason(noise).startswith("not an Avro file")
    assert _reason(b"Obj").startswith("not an Avro file")
    with pytest.raises(BadAlert):
        decode_container("a string")


def test_bad_alert_for_truncated_and_corrupt_packets():
    _, data, _ = _first_packet("ztf_alerts")
    assert _reason(data[: len(data) // 2]).startswith("truncated or corrupt Avro container")
    for cut in range(5, len(data), max(1, len(data) // 23)):  # header, schema, block, sync marker
        assert _reason(data[:cut]).startswith("truncated or corrupt Avro container"), cut
    assert _reason(data[:-1]).startswith("truncated or corrupt Avro container")
    flipped = data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:]  # inside the final sync marker
    assert "sync marker" in _reason(flipped)
    assert _reason(data + b"\x00garbage").startswith("truncated or corrupt Avro container")


def test_bad_alert_for_confluent_wire_format():
    _, data, _ = _first_packet("ztf_alerts")
    reader = fastavro.reader(io.BytesIO(data))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, reader.writer_schema, next(reader))
    reason = _reason(b"\x00\x00\x00\x00\x07" + buf.getvalue())
    assert reason.startswith("not an Avro file") and "Confluent" in reason


def test_bad_alert_for_rubin_packets():
    root = require_shared("lsst_alerts")
    files = sorted(root.rglob("*.avro"))
    assert files
    for path in files:
        data = path.read_bytes()
        assert decode_container(data), path.name  # a fine Avro container ...
        assert _reason(data).startswith("unknown schema"), path.name  # ... but not a ZTF alert


# ------------------------------------------------------------------------------ record checks
@pytest.fixture
def record():
    _, data, rec = _first_packet("ztf_alerts")
    return rec


def _record_reason(record):
    with pytest.raises(BadAlert) as info:
        parse_record(record)
    return info.value


def test_missing_magpsf_is_a_bad_alert(record):
    del record["candidate"]["magpsf"]
    err = _record_reason(record)
    assert err.reason == "missing required field candidate.magpsf"
    assert (err.oid, err.candid) == (record["objectId"], record["candid"])


@pytest.mark.parametrize("field", ["ra", "dec", "jd", "sigmapsf"])
def test_nan_in_required_field_is_a_bad_alert(record, field):
    record["candidate"][field] = float("nan")
    assert _record_reason(record).reason == f"NaN in required field candidate.{field}"


def test_null_and_sentinel_in_required_fields_are_bad_alerts(record):
    record["candidate"]["magpsf"] = None
    assert _record_reason(record).reason == "null in required field candidate.magpsf"
    record["candidate"]["magpsf"] = -999.0
    assert "sentinel" in _record_reason(record).reason
    record["candidate"]["magpsf"] = 18.0
    record["candidate"]["fid"] = 7
    assert "candidate.fid" in _record_reason(record).reason


def test_missing_ids_are_bad_alerts(record):
    rec = dict(record, objectId=None)
    assert _record_reason(rec).reason == "missing required field objectId"
    rec = dict(record)
    del rec["candid"]
    assert _record_reason(rec).reason == "missing required field candid"


def test_unknown_schemavsn_is_a_bad_alert(record):
    record["schemavsn"] = "9.99"
    err = _record_reason(record)
    assert err.reason.startswith("unknown schema") and "9.99" in err.reason
    assert err.candid == record["candid"]


def test_optional_nan_becomes_none_and_parse_is_not_in_place(record):
    record["candidate"]["magap"] = float("nan")
    record["candidate"]["rb"] = None
    alert = parse_record(record)
    assert alert.detection["magap"] is None and alert.detection["rb"] is None
    assert math.isnan(record["candidate"]["magap"])  # the input record is left as it was


def test_jd_to_mjd():
    assert jd_to_mjd(2400000.5) == 0.0
    assert jd_to_mjd(2460236.0626233793) == 2460236.0626233793 - 2400000.5
    assert np.array_equal(jd_to_mjd(np.array([2458757.7736574, 2400001.5])),
                          np.array([2458757.7736574 - 2400000.5, 1.0]))
