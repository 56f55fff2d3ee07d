"""The Rubin/LSST adapter on the real packets of ../shared/data/lsst_alerts (every schema version)."""
import copy
import io
import math

import fastavro
import fastavro.schema
import pytest

from pipeline.surveys import dispatch, lsst
from pipeline.surveys.base import BadAlert
from tests.conftest import require_shared

FOLDERS = {"rubin_v7_4": "7.4", "rubin_v9_0": "9.0", "rubin_v10_0": "10.0", "elasticc_v0_9": "elasticc-0.9"}
SAMPLES = {"v7_4": "7.4", "v9_0": "9.0", "v10_0": "10.0", "v11_0": "11.0", "v11_1": "11.1"}


def _records(path):
    with open(path, "rb") as fh:
        return list(fastavro.reader(fh))


def _decode(path):
    return dispatch.decode_packet(path.read_bytes())


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_every_real_packet_of_each_version_parses(folder):
    files = sorted(require_shared("lsst_alerts", folder).glob("*.avro"))
    assert files
    for path in files:
        records, version = _decode(path)
        assert version == FOLDERS[folder]
        raw = _records(path)[0]
        alert = dispatch.parse_record(records[0], version)
        source = raw["diaSource"]
        assert alert.candid == source["diaSourceId"]
        assert alert.object_fields["survey"] == "lsst"
        assert alert.object_fields["simulated"] is (folder == "elasticc_v0_9")
        # every history row of the packet is kept (none of the real ones lacks a required value)
        assert len(alert.prv_detections) == len(raw.get("prvDiaSources") or [])
        assert len(alert.forced_photometry) == len(raw.get("prvDiaForcedSources") or [])
        assert alert.dropped_detections == 0
        flux = source.get("psfFlux", source.get("psFlux"))
        assert alert.detection["psf_flux"] == flux
        assert alert.detection["isdiffpos"] == (1 if flux >= 0 else -1)
        assert alert.detection["magpsf"] == pytest.approx(31.4 - 2.5 * math.log10(abs(flux)))


@pytest.mark.parametrize("sample", sorted(set(SAMPLES) - {"v7_4"}))
def test_rubin_sample_packet_of_each_schema_parses(sample):
    path = require_shared("lsst_alerts", "samples", f"{sample}_fakeAlert.avro")
    records, version = _decode(path)
    assert version == SAMPLES[sample]
    alert = dispatch.parse_record(records[0], version)
    assert alert.schemavsn == SAMPLES[sample]
    # the samples have no diaObjectId on the diaSource: the diaObject's is the oid
    assert alert.oid == "281323062375219201"
    assert alert.candid == 281323062375219200
    assert alert.detection["fid"] == lsst.BAND_FID["r"] == 12
    assert [d["candid"] for d in alert.prv_detections] == [281323062375219198, 281323062375219199]
    assert any("differs" in note for note in alert.warnings)  # the samples' top-level diaSourceId disagrees


def test_rubin_v7_4_sample_with_a_unix_time_is_refused():
    """The 7.4 sample's midpointMjdTai is 1480360995.0 (Unix seconds, not an MJD): not a time to store."""
    records, version = _decode(require_shared("lsst_alerts", "samples", "v7_4_fakeAlert.avro"))
    assert records[0]["diaSource"]["midpointMjdTai"] == 1480360995.0
    with pytest.raises(BadAlert, match="midpointMjdTai = 1480360995.0 is not an MJD"):
        dispatch.parse_record(records[0], version)


def test_magnitudes_from_flux_hand_computed():
    # 1 nJy -> 31.4; 3631 Jy = 3.631e12 nJy -> 0.0 (the AB zero point); errors 1.0857 * df / |f|
    assert lsst.flux_to_mag(1.0, 0.1) == pytest.approx((31.4, 0.10857362))
    mag, err = lsst.flux_to_mag(-1000.0, 100.0)
    assert mag == pytest.approx(31.4 - 7.5) and err == pytest.approx(0.10857362)
    assert lsst.flux_to_mag(0.0, 5.0) == (None, None)


def _real_v10():
    folder = require_shared("lsst_alerts", "rubin_v10_0")
    path = sorted(folder.glob("*.avro"))[0]
    return _records(path)[0]


def test_negative_and_zero_fluxes_are_kept_with_their_fluxes():
    record = _real_v10()
    record["diaSource"]["psfFlux"] = -2000.0
    alert = lsst.parse_record(record, "10.0")
    assert alert.detection["isdiffpos"] == -1
    assert alert.detection["magpsf"] == pytest.approx(31.4 - 2.5 * math.log10(2000.0))
    record["diaSource"]["psfFlux"] = 0.0
    alert = lsst.parse_record(record, "10.0")
    assert alert.detection["magpsf"] is None and alert.detection["sigmapsf"] is None
    assert alert.detection["psf_flux"] == 0.0 and alert.detection["psf_flux_err"] is not None


def test_solar_system_source_gets_ss_oid_and_row():
    folder = require_shared("lsst_alerts", "rubin_v10_0")
    with_ss = [r for p in sorted(folder.glob("*.avro")) for r in _records(p) if r.get("ssSource")]
    assert len(with_ss) == 2
    for record in with_ss:
        alert = lsst.parse_record(record, "10.0")
        assert alert.oid == f"ss{record['ssSource']['ssObjectId']}"
        assert alert.ss["ssnamenr"] == record["ssSource"]["designation"]
        assert alert.ss["ssdistnr"] == pytest.approx(record["ssSource"]["ephOffset"])


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda r: r["diaSource"].update(psfFlux=None), "psfFlux"),
        (lambda r: r["diaSource"].update(ra=float("nan")), "diaSource.ra"),
        (lambda r: r["diaSource"].update(band="w"), "band 'w'"),
        (lambda r: (r["diaSource"].update(diaObjectId=0, ssObjectId=0), r.update(diaObject=None)), "diaObjectId"),
    ],
)
def test_bad_rubin_records_raise_with_reason(change, reason):
    record = _real_v10()
    change(record)
    with pytest.raises(BadAlert) as info:
        lsst.parse_record(record, "10.0")
    assert reason in info.value.reason


def test_unknown_version_is_refused():
    with pytest.raises(BadAlert, match="unknown schema"):
        lsst.parse_record(_real_v10(), "12.0")


def test_prv_source_without_flux_is_dropped_and_counted():
    record = copy.deepcopy(_real_v10())
    record["prvDiaSources"] = [dict(record["diaSource"], diaSourceId=1, psfFlux=None),
                               dict(record["diaSource"], diaSourceId=2)]
    alert = lsst.parse_record(record, "10.0")
    assert [d["candid"] for d in alert.prv_detections] == [2]
    assert alert.dropped_detections == 1 and alert.warnings


def test_confluent_wire_format_round_trip():
    schemas = require_shared("schemas", "lsst")
    record = _real_v10()
    data = lsst.encode_wire(record, schemas / "10.0" / "lsst.v10_0.alert.avsc", 1000)
    assert data[:5] == b"\x00\x00\x00\x03\xe8"
    records, version = dispatch.decode_packet(data, lsst_schemas=schemas)
    assert version == "10.0"
    assert records[0]["diaSource"] == record["diaSource"]
    with pytest.raises(BadAlert, match="no schema for it"):
        dispatch.decode_packet(data, lsst_schemas=None)
    with pytest.raises(BadAlert, match="corrupt"):
        dispatch.decode_packet(data[:-40], lsst_schemas=schemas)


def test_ztf_packets_still_reach_the_ztf_adapter():
    folder = require_shared("ztf_alerts_older_schemas")
    path = sorted(folder.glob("*.avro"))[0]
    records, version = _decode(path)
    assert version is None
    alert = dispatch.parse_record(records[0], version)
    assert alert.oid.startswith("ZTF") and alert.detection["fid"] in (1, 2, 3)


def test_container_version_reads_the_writer_schema_name():
    buffer = io.BytesIO()
    fastavro.writer(buffer, {"type": "record", "name": "lsst.v11_1.alert", "fields": [{"name": "a", "type": "int"}]},
                    [{"a": 1}])
    assert lsst.container_version(buffer.getvalue()) == "11.1"


def test_rubin_g_and_r_fill_the_feature_bands_and_other_rubin_bands_are_left_out():
    import pandas as pd

    from pipeline.store.loaders import feature_bands

    rows = pd.DataFrame({"oid": ["Z", "Z", "L", "L", "L", "L"], "fid": [1, 2, 11, 12, 13, 10],
                         "mjd": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    out = feature_bands(rows)
    assert list(zip(out["oid"], out["fid"], out["mjd"])) == [("Z", 1, 1.0), ("Z", 2, 2.0), ("L", 1, 3.0), ("L", 2, 4.0)]
    ztf_only = rows.iloc[:2]
    assert feature_bands(ztf_only) is ztf_only


def test_wire_format_schema_from_a_schema_registry():
    """A local stand-in of the Confluent schema-registry API (GET /schemas/ids/<id>) over real HTTP."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    schemas = require_shared("schemas", "lsst")
    path = schemas / "10.0" / "lsst.v10_0.alert.avsc"
    body = json.dumps({"schema": json.dumps(fastavro.schema.load_schema(str(path), _write_hint=False))}).encode()
    asked = []

    class Registry(BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            found = self.path == "/schemas/ids/1000"
            self.send_response(200 if found else 404)
            self.end_headers()
            self.wfile.write(body if found else b'{"error_code": 40403}')

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        record = _real_v10()
        records, version = dispatch.decode_packet(lsst.encode_wire(record, path, 1000), lsst_schemas=url)
        assert version == "10.0" and records[0]["diaSource"] == record["diaSource"]
        with pytest.raises(BadAlert, match="schema id 1101"):
            dispatch.decode_packet(b"\x00\x00\x00\x04\x4d" + b"\x00" * 20, lsst_schemas=url)
        assert asked == ["/schemas/ids/1000", "/schemas/ids/1101"]
    finally:
        server.shutdown()


# ---------------------------------------------------------------------- values checked as ZTF's are
def _real_with_ss():
    folder = require_shared("lsst_alerts", "rubin_v10_0")
    return next(r for p in sorted(folder.glob("*.avro")) for r in _records(p) if r.get("ssSource"))


def _sample_v11_1():
    records, _ = _decode(require_shared("lsst_alerts", "samples", "v11_1_fakeAlert.avro"))
    return records[0]


@pytest.mark.parametrize(
    "record, change, reason",
    [
        (_real_v10, lambda r: r["diaSource"].update(ra=720.0), "off the sky: ra 720.0"),
        (_real_v10, lambda r: r["diaSource"].update(dec=-95.0), "off the sky"),
        (_real_v10, lambda r: r["diaSource"].update(midpointMjdTai=1e300), "midpointMjdTai = 1e+300 is not an MJD"),
        (_real_v10, lambda r: r["diaSource"].update(midpointMjdTai=-5.0), "is not an MJD"),
        (_real_v10, lambda r: r["diaSource"].update(diaSourceId=-7), "diaSourceId: -7 is not a positive 64-bit"),
        (_real_v10, lambda r: r["diaSource"].update(diaSourceId=0), "diaSourceId: 0 is not a positive 64-bit"),
        (_real_v10, lambda r: r["diaObject"].update(diaObjectId=-3), "diaObjectId -3 is not a positive 64-bit"),
        (_real_v10, lambda r: r["diaSource"].update(visit=2**64), "visit = 18446744073709551616 does not fit"),
        (_real_v10, lambda r: r["diaSource"].update(reliability="high"), "reliability has type str"),
        (_real_v10, lambda r: r["diaObject"].update(ra=720.0), "diaObject position off the sky"),
        (_real_v10, lambda r: r["diaObject"].update(nDiaSources=2**40), "nDiaSources = 1099511627776 does not fit a 32-bit"),
        (_real_v10, lambda r: r["diaObject"].update(firstDiaSourceMjdTai=1e300), "firstDiaSourceMjdTai = 1e+300"),
        (_real_v10, lambda r: r["diaSource"].update(ra="12.5"), "diaSource.ra"),
        (_sample_v11_1, lambda r: r["diaSource"].update(reliabilityVersion="v" * 40),
         "reliabilityVersion is 40 characters long; its column holds at most 16"),
        (_real_with_ss, lambda r: r["ssSource"].update(designation="K" * 40),
         "designation is 40 characters long; its column holds at most 32"),
    ],
)
def test_bad_value_of_the_triggering_source_is_a_bad_alert(record, change, reason):
    """ra 720, dec -95, a time of 1e300, a negative id, over-long text: refused, never stored or cut."""
    record = copy.deepcopy(record())
    change(record)
    with pytest.raises(BadAlert) as info:
        dispatch.parse_record(record)
    assert reason in info.value.reason, info.value.reason
    assert info.value.candid in (None, record["diaSource"]["diaSourceId"])


def test_text_at_its_column_limit_is_kept_whole():
    record = copy.deepcopy(_sample_v11_1())
    record["diaSource"]["reliabilityVersion"] = "v" * 16
    assert dispatch.parse_record(record).detection["rbversion"] == "v" * 16
    record = copy.deepcopy(_real_with_ss())
    record["ssSource"]["designation"] = "K" * 32
    assert dispatch.parse_record(record).ss["ssnamenr"] == "K" * 32


def test_bad_history_rows_are_dropped_and_counted_with_their_reasons():
    record = copy.deepcopy(_real_v10())
    good = dict(record["diaSource"], diaSourceId=11, midpointMjdTai=record["diaSource"]["midpointMjdTai"] - 1)
    record["prvDiaSources"] = [
        good,
        dict(good, diaSourceId=12, ra=720.0),
        dict(good, diaSourceId=13, dec=-95.0),
        dict(good, diaSourceId=14, midpointMjdTai=1e300),
        dict(good, diaSourceId=-15),
        dict(good, diaSourceId=16, reliabilityVersion="v" * 40),
    ]
    forced = dict(record["diaSource"], midpointMjdTai=good["midpointMjdTai"])
    record["prvDiaForcedSources"] = [forced, dict(forced, midpointMjdTai=1e300)]
    alert = lsst.parse_record(record, "10.0")
    assert [d["candid"] for d in alert.prv_detections] == [11]
    assert alert.dropped_detections == 5
    assert len(alert.forced_photometry) == 1
    note = next(n for n in alert.warnings if "prvDiaSources" in n)
    assert "dropped 5 prvDiaSources" in note
    assert "2 ra/dec" in note and "1 midpointMjdTai" in note and "1 diaSourceId" in note and "1 reliabilityVersion" in note
    assert any("dropped 1 prvDiaForcedSources" in n for n in alert.warnings)


def test_every_real_rubin_packet_passes_the_checks_with_no_row_dropped():
    for folder in FOLDERS:
        for path in sorted(require_shared("lsst_alerts", folder).glob("*.avro")):
            records, version = _decode(path)
            alert = dispatch.parse_record(records[0], version)
            assert alert.dropped_detections == 0 and not any("dropped" in n for n in alert.warnings), path.name
