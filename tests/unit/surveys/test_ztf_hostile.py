"""Hostile and out-of-physics input to the ZTF adapter, built from real packets of ../shared/data:
bounded decoding, id and string checks at parse time, values off the sky, the tightened night check."""
import copy
import io
import math
import tracemalloc

import fastavro
import pytest

from pipeline.surveys import ztf
from pipeline.surveys.base import BadAlert
from pipeline.surveys.ztf import decode_container, is_valid_oid, parse_packet, parse_record
from tests.conftest import require_shared


def _real(predicate=lambda rec: True):
    for path in sorted(require_shared("ztf_alerts").glob("*.avro")):
        with open(path, "rb") as fh:
            reader = fastavro.reader(fh)
            schema, rec = reader.writer_schema, next(reader)
        if predicate(rec):
            return schema, rec
    pytest.skip("no real packet matches")


@pytest.fixture
def real():
    """(writer schema, record) of a real packet with earlier detections and upper limits."""
    return _real(lambda r: sum(p["candid"] is not None for p in r["prv_candidates"] or []) >= 2
                 and any(p["candid"] is None for p in r["prv_candidates"] or []))


def _container(schema, records, codec="null"):
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(schema), records, codec=codec)
    return out.getvalue()


def _reason(record):
    with pytest.raises(BadAlert) as info:
        parse_record(record)
    return info.value


def _peak_bytes(func, *args):
    tracemalloc.start()
    try:
        func(*args)
    except BadAlert as exc:
        reason = exc.reason
    else:
        reason = None
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return reason, peak


# ------------------------------------------------------------------ bounded decoding
def test_a_million_one_byte_records_are_refused_whole_without_decoding_them():
    data = _container({"type": "int"}, [0] * 1_000_000, codec="deflate")
    assert len(data) < 8000  # a few KB of deflate
    reason, peak = _peak_bytes(decode_container, data)
    assert reason.startswith("Avro container holds more than 100 records"), reason
    assert peak < 2 * 2**20, peak  # nothing close to the million records was built


def test_a_deflate_block_that_inflates_past_the_bound_is_refused():
    schema = {"type": "record", "name": "x", "fields": [{"name": "s", "type": "string"}]}
    data = _container(schema, [{"s": "a" * (64 * 2**20)}], codec="deflate")
    assert len(data) < 200_000
    reason, peak = _peak_bytes(decode_container, data)
    assert "decompresses to more than 4194304 bytes" in reason, reason
    assert peak < 16 * 2**20, peak  # bounded by the cap, not by the 64 MiB the block holds


def test_arrays_of_items_that_encode_in_nothing_are_refused_before_decoding():
    # An array of nulls: one varint could ask for 2**62 items.
    schema = {"type": "record", "name": "x", "fields": [{"name": "a", "type": {"type": "array", "items": "null"}}]}
    data = _container(schema, [{"a": [None] * 10}])
    with pytest.raises(BadAlert, match="array of items that encode in under 8 bytes"):
        decode_container(data)
    empty = {"type": "record", "name": "e", "fields": []}
    schema = {"type": "record", "name": "y", "fields": [{"name": "a", "type": {"type": "array", "items": empty}}]}
    with pytest.raises(BadAlert, match="array of items"):
        decode_container(_container(schema, [{"a": [{}] * 3}]))


def test_codecs_other_than_null_and_deflate_are_refused(real):
    schema, rec = real
    with pytest.raises(BadAlert, match="codec 'bzip2' is not supported"):
        decode_container(_container(schema, [rec], codec="bzip2"))


def test_a_real_packet_decodes_with_deflate_within_the_bounds(real):
    schema, rec = real
    assert decode_container(_container(schema, [rec], codec="deflate")) == [rec]


# ------------------------------------------------------------------ ids and strings
@pytest.mark.parametrize("oid", [
    "ZTF20abcdefgh", "ZTF20abcdef", "ZTF2Oabcdefg", "ZTF20ABCDEFG", "ZTF\u0662\u0660abcdefg", "ZTF20abcdefg\n",
    "ZTF20abcdefg' OR 1=1", "x" * 2**20, "ZTF20abcdefg" + "a" * 40, "",
])
def test_ids_that_are_not_ztf_ids_are_refused(real, oid):
    _, rec = real
    err = _reason(dict(rec, objectId=oid))
    assert err.oid is None and err.candid == rec["candid"]
    assert len(err.reason) < 200  # a 1 MB id is not copied into the reason
    assert "objectId" in err.reason


def test_real_and_simulated_ids_are_valid():
    assert is_valid_oid("ZTF18abkiswh") and is_valid_oid("ZTFSIM25aabcdef")
    assert not is_valid_oid("ZTFSIM25aabcdefg") and not is_valid_oid(None) and not is_valid_oid(b"ZTF18abkiswh")


@pytest.mark.parametrize("candid", [-1, 0, -(2**63)])
def test_candids_that_are_not_positive_are_refused(real, candid):
    _, rec = real
    rec = dict(rec, candid=candid, candidate=dict(rec["candidate"], candid=candid))
    err = _reason(rec)
    assert "not a positive 64-bit integer" in err.reason and err.candid is None


@pytest.mark.parametrize("where,field,value,words", [
    ("candidate", "rbversion", "t" * 17, "rbversion is 17 characters long; its column holds at most 16"),
    ("candidate", "ssnamenr", "n" * 33, "ssnamenr is 33 characters long"),
    ("candidate", "field", 2**31, "does not fit a 32-bit integer"),
    ("candidate", "magap", "18.5", "magap is text"),
    ("candidate", "nneg", 1.5, "nneg is a float"),
    ("top", "publisher", "p" * 129, "publisher"),
])
def test_values_their_column_cannot_hold_are_refused_at_parse_time(real, where, field, value, words):
    _, rec = real
    rec = copy.deepcopy(rec)
    (rec if where == "top" else rec["candidate"])[field] = value
    assert words in _reason(rec).reason


def test_a_long_string_in_a_history_row_refuses_the_packet(real):
    _, rec = real
    rec = copy.deepcopy(rec)
    row = next(p for p in rec["prv_candidates"] if p["candid"] is not None)
    row["rbversion"] = "v" * 100
    assert "prv_candidates[" in _reason(rec).reason


def test_a_mistyped_writer_schema_is_refused_through_the_container(real):
    schema, rec = real
    schema = copy.deepcopy(schema)
    cand = next(f for f in schema["fields"] if f["name"] == "candidate")["type"]
    next(f for f in cand["fields"] if f["name"] == "magap")["type"] = ["null", "string"]
    rec = copy.deepcopy(rec)
    rec["candidate"]["magap"] = "<script>"
    with pytest.raises(BadAlert, match="magap is text"):
        parse_packet(_container(schema, [rec]))


# ------------------------------------------------------------------ physics
@pytest.mark.parametrize("field,value,words", [
    ("ra", 360.0, "off the sky"), ("ra", -0.001, "off the sky"), ("dec", 90.5, "off the sky"),
    ("dec", -91.0, "off the sky"), ("ra", math.inf, "infinite value in required field candidate.ra"),
    ("dec", -math.inf, "infinite"), ("jd", math.inf, "infinite"), ("magpsf", -math.inf, "infinite"),
    ("sigmapsf", math.inf, "infinite"), ("isdiffpos", "x", "isdiffpos"),
])
def test_values_outside_physics_are_refused(real, field, value, words):
    _, rec = real
    rec = copy.deepcopy(rec)
    rec["candidate"][field] = value
    assert words in _reason(rec).reason


def test_edges_of_the_sky_are_accepted_and_optional_infinities_hold_no_value(real):
    _, rec = real
    rec = copy.deepcopy(rec)
    rec["candidate"].update(ra=0.0, dec=-90.0, magap=math.inf, distnr=-math.inf)
    alert = parse_record(rec)
    assert (alert.detection["ra"], alert.detection["dec"]) == (0.0, -90.0)
    assert alert.detection["magap"] is None and alert.detection["distnr"] is None


def test_history_rows_off_the_sky_or_with_bad_candids_are_dropped_and_counted(real):
    _, rec = real
    rec = copy.deepcopy(rec)
    dets = [p for p in rec["prv_candidates"] if p["candid"] is not None]
    kept_before = len(parse_record(rec).prv_detections)
    dets[0]["ra"] = math.inf
    dets[1]["candid"] = -dets[1]["candid"]
    alert = parse_record(rec)
    assert len(alert.prv_detections) == kept_before - 2
    assert alert.dropped_detections == 2
    assert any("off the sky" in w or "lacking" in w for w in alert.warnings)
    assert any("not a positive 64-bit integer" in w for w in alert.warnings)


# ------------------------------------------------------------------ the night check (issue 13)
def _night_offset(row):
    return row["jd"] - (ztf.NID_JD0 + row["pid"] // 10**9)


def test_history_rows_must_lie_in_the_dark_part_of_their_night(real):
    _, rec = real
    rec = copy.deepcopy(rec)
    dets = [p for p in rec["prv_candidates"] if p["candid"] is not None]
    assert all(0.0 <= _night_offset(p) < 0.65 for p in dets)
    base = ztf.NID_JD0 + dets[0]["pid"] // 10**9
    dets[0]["jd"] = base + 0.7  # the night's UTC day, but 16:48 UTC: daylight at Palomar
    dets[1]["jd"] = base - 0.01  # the evening before the night began
    alert = parse_record(rec)
    assert {d["candid"] for d in alert.prv_detections}.isdisjoint({dets[0]["candid"], dets[1]["candid"]})
    assert any("outside the night" in w for w in alert.warnings)
    # issue 27: in the dark part of its night but not at the time of day its pid encodes: dropped too
    exposure = base + dets[0]["pid"] % 10**9 // 1000 / 1e6
    dets[0]["jd"] = exposure + 0.3 if exposure + 0.3 < base + 0.65 else exposure - 0.3
    alert = parse_record(rec)
    assert dets[0]["candid"] not in {d["candid"] for d in alert.prv_detections}
    assert any("s from the exposure time" in d["why"] and d["candid"] == dets[0]["candid"] for d in alert.dropped)
    dets[0]["jd"] = exposure + 30 / 86400  # within a minute of it: kept
    assert dets[0]["candid"] in {d["candid"] for d in parse_record(rec).prv_detections}


def test_a_candidate_whose_jd_is_not_its_exposures_refuses_the_alert(real):
    """Issue 27: rebroadcast alerts with a rewritten jd carry placeholder positions."""
    _, rec = real
    rec = copy.deepcopy(rec)
    cand = rec["candidate"]
    exposure = ztf.NID_JD0 + cand["pid"] // 10**9 + cand["pid"] % 10**9 // 1000 / 1e6
    assert abs(cand["jd"] - exposure) * 86400 < 1
    cand["jd"] = exposure + 0.04  # an hour later, still at night
    with pytest.raises(BadAlert, match="3456 s from the exposure time"):
        parse_record(rec)
    cand["jd"] = exposure + 20 / 86400
    assert parse_record(rec).candid == rec["candid"]


def test_history_detections_far_from_the_candidate_are_dropped_with_the_reason(real):
    """Issue 27: another object's history copied into a packet (or a placeholder position) is not kept."""
    _, rec = real
    rec = copy.deepcopy(rec)
    dets = [p for p in rec["prv_candidates"] if p["candid"] is not None]
    kept = len(parse_record(rec).prv_detections)
    dets[0]["dec"] += 6 / 3600  # 6 arcsec north
    dets[1]["dec"] += 4 / 3600  # 4 arcsec: still ZTF's scatter and association, with margin
    alert = parse_record(rec)
    assert [d["candid"] for d in alert.dropped] == [dets[0]["candid"]]
    assert "arcsec from the alert's candidate" in alert.dropped[0]["why"] and alert.dropped_detections == 1
    assert len(alert.prv_detections) == kept - 1 and any("more than 5 arcsec" in w for w in alert.warnings)


def test_a_history_longer_than_ztf_sends_refuses_the_alert(real):
    """Issue 12: ZTF sends 30 days of history; 10,000 rows is a fabricated packet."""
    _, rec = real
    rec = copy.deepcopy(rec)
    row = next(p for p in rec["prv_candidates"] if p["candid"] is None)
    rec["prv_candidates"] = [dict(row) for _ in range(10_000)]
    with pytest.raises(BadAlert, match="prv_candidates holds 10000 rows.*more than 2000 is refused"):
        parse_record(rec)
    rec["prv_candidates"] = [dict(row) for _ in range(ztf.MAX_HISTORY_ROWS)]
    assert parse_record(rec).candid == rec["candid"]


def test_a_jd_shared_by_different_exposures_is_a_fill_value(real):
    _, rec = real
    rec = copy.deepcopy(rec)
    dets = [p for p in rec["prv_candidates"] if p["candid"] is not None]
    assert dets[0]["pid"] != dets[1]["pid"]
    # Both stamped with the first row's jd, which lies in the first row's night.
    dets[1]["jd"] = dets[0]["jd"]
    alert = parse_record(rec)
    gone = {dets[0]["candid"], dets[1]["candid"]}
    assert gone.isdisjoint(d["candid"] for d in alert.prv_detections)
    assert "shared by rows of different exposures" in alert.warnings[0]
    # Two detections of one exposure (same pid) may share its jd.
    dets[1]["pid"], dets[1]["nid"] = dets[0]["pid"], dets[0].get("nid")
    assert gone <= {d["candid"] for d in parse_record(rec).prv_detections}


def test_odd_types_from_a_crafted_schema_are_bad_alerts_not_crashes(real):
    _, rec = real
    for where, field, value in (("candidate", "isdiffpos", ["t"]), ("candidate", "jdstarthist", "x"),
                                ("prv", "fid", [1]), ("prv", "isdiffpos", {"t": 1}), ("prv", "jd", [1.0])):
        bad = copy.deepcopy(rec)
        target = bad["candidate"] if where == "candidate" else next(p for p in bad["prv_candidates"] if p["candid"])
        target[field] = value
        try:
            alert = parse_record(bad)
        except BadAlert as exc:
            assert exc.reason, (where, field)
        else:  # a history row it cannot use is dropped and counted
            assert where == "prv" and alert.dropped_detections >= 1, (where, field)
