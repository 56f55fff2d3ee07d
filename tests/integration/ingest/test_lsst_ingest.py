"""Rubin/LSST packets through the same ingest, archive and canvas as ZTF ones (SQLite, eager)."""
import copy
import math

import fastavro
import pytest

from pipeline.backends import archive
from pipeline.ingest.runner import ingest_paths
from pipeline.ingest.storage import alert_key
from pipeline.models import Detection, Feature, ForcedPhotometry, MagStats, Object, Quarantine, RawAlert, SolarSystem
from tests.conftest import require_shared

pytestmark = pytest.mark.django_db(transaction=True)

RUBIN = ("rubin_v7_4", "rubin_v9_0", "rubin_v10_0", "elasticc_v0_9")


def _expected(folders):
    """Distinct diaSources, forced-source epochs and objects, straight from the packets."""
    candids, forced, oids = set(), set(), set()
    for folder in folders:
        for path in sorted(folder.glob("*.avro")):
            with open(path, "rb") as fh:
                for record in fastavro.reader(fh):
                    source = record["diaSource"]
                    obj = source.get("diaObjectId") or (record.get("diaObject") or {}).get("diaObjectId")
                    oid = str(obj) if obj else f"ss{source['ssObjectId']}"
                    oids.add(oid)
                    for row in [source, *(record.get("prvDiaSources") or [])]:
                        candids.add(row["diaSourceId"])
                    for row in record.get("prvDiaForcedSources") or []:
                        forced.add((oid, row["band"], row["midpointMjdTai"]))
    return candids, forced, oids


def test_rubin_and_ztf_packets_in_one_run(broker_env):
    folders = [require_shared("lsst_alerts", name) for name in RUBIN]
    ztf = require_shared("ztf_alerts_older_schemas")
    first = ingest_paths([*folders, ztf], batch_size=40, progress=False)
    assert first.quarantined == 0 and not first.step_failures, first.report()
    counts = {m.__name__: m.objects.count() for m in (Object, Detection, ForcedPhotometry, RawAlert, MagStats)}

    candids, forced, oids = _expected(folders)
    lsst = Detection.objects.filter(survey="lsst")
    assert lsst.count() == len(candids)
    assert set(lsst.values_list("candid", flat=True)) == candids
    assert ForcedPhotometry.objects.filter(survey="lsst").count() == len(forced)
    assert set(Object.objects.filter(survey="lsst").values_list("oid", flat=True)) == oids
    assert Object.objects.filter(survey="lsst", simulated=True).count() == 20  # the ELAsTiCC objects
    assert not Detection.objects.filter(survey="lsst").exclude(oid__survey="lsst").exists()
    assert set(Detection.objects.filter(survey="lsst").values_list("fid", flat=True)) <= set(range(10, 16))
    assert set(Detection.objects.filter(survey="ztf").values_list("fid", flat=True)) <= {1, 2, 3}
    # Magnitudes and fluxes agree row by row; the negative fluxes are there with isdiffpos -1.
    for flux, mag, isdiffpos in lsst.values_list("psf_flux", "magpsf", "isdiffpos"):
        assert mag == pytest.approx(31.4 - 2.5 * math.log10(abs(flux)))
        assert isdiffpos == (1 if flux >= 0 else -1)
    assert lsst.filter(isdiffpos=-1).exists()
    # Raw packets archived under their diaSourceId, byte for byte.
    some = RawAlert.objects.filter(schemavsn="10.0").first()
    assert archive().load(alert_key(some.candid, "lsst")) == (folders[2] / f"{some.candid}.avro").read_bytes()
    assert SolarSystem.objects.filter(oid__oid__startswith="ss").count() == 2
    # Correction is ZTF-only: Rubin detections are left uncorrected (null), ZTF ones are not.
    assert not lsst.filter(corrected__isnull=False).exists()
    assert not Detection.objects.filter(survey="ztf", corrected__isnull=True).exists()
    # Magstats for every band of every Rubin object; features for Rubin objects from their g/r.
    assert MagStats.objects.filter(oid__survey="lsst").values("oid").distinct().count() == len(oids)
    assert MagStats.objects.filter(oid__survey="lsst", fid=13).exists()
    with_gr = Object.objects.filter(survey="lsst", detections__fid=11).distinct()
    assert Feature.objects.filter(oid__in=with_gr, name="n_det_1", value__gt=0).exists()

    second = ingest_paths([*folders, ztf], batch_size=40, progress=False)
    assert (second.new_objects, second.detections, second.forced_photometry) == (0, 0, 0)
    assert counts == {m.__name__: m.objects.count() for m in (Object, Detection, ForcedPhotometry, RawAlert, MagStats)}


def test_bad_rubin_packets_are_quarantined_with_reason(broker_env, tmp_path):
    source = sorted(require_shared("lsst_alerts", "rubin_v10_0").glob("*.avro"))[0]
    with open(source, "rb") as fh:
        reader = fastavro.reader(fh)
        schema, record = reader.writer_schema, next(reader)
    bad = tmp_path / "bad"
    bad.mkdir()
    record["diaSource"]["psfFluxErr"] = None
    with open(bad / "no_flux_error.avro", "wb") as fh:
        fastavro.writer(fh, schema, [record])
    (bad / "truncated.avro").write_bytes(source.read_bytes()[:3000])
    (bad / "wire_unknown.avro").write_bytes(b"\x00\x00\x00\x04\x4c" + b"\x02" * 50)  # schema id 1100, none configured
    summary = ingest_paths([bad], batch_size=10, progress=False)
    assert summary.quarantined == 3 and summary.new_objects == 0
    reasons = dict(Quarantine.objects.values_list("source", "reason"))
    reasons = {k.rsplit("/", 1)[-1]: v for k, v in reasons.items()}
    assert "diaSource.psfFlux/psfFluxErr" in reasons["no_flux_error.avro"]
    assert "truncated or corrupt" in reasons["truncated.avro"]
    assert "schema id 1100" in reasons["wire_unknown.avro"]
    assert Quarantine.objects.get(source__endswith="no_flux_error.avro").candid == record["diaSource"]["diaSourceId"]


def test_status_page_shows_rubin_objects_skip_ztf_steps(broker_env, client):
    ingest_paths([require_shared("lsst_alerts", "rubin_v9_0")], batch_size=50, progress=False)
    page = client.get("/").content.decode()
    assert "19</strong> lsst objects" in page
    assert page.count("ZTF-only step, skipped") == 19


def _write(folder, name, schema, record):
    with open(folder / name, "wb") as fh:
        fastavro.writer(fh, schema, [record])


def _real(path):
    with open(path, "rb") as fh:
        reader = fastavro.reader(fh)
        return reader.writer_schema, next(reader)


def test_rubin_values_out_of_range_are_quarantined_and_nothing_of_them_stored(broker_env, tmp_path):
    """ra 720, dec -95, a time of 1e300, a negative diaSourceId, a 40-character reliabilityVersion or
    designation: each packet is quarantined with its reason and none of its rows reaches the database."""
    v10 = sorted(require_shared("lsst_alerts", "rubin_v10_0").glob("*.avro"))
    schema, plain = _real(v10[0])
    ss_schema, with_ss = next((s, r) for s, r in map(_real, v10) if r.get("ssSource"))
    v11_schema, v11 = _real(require_shared("lsst_alerts", "samples", "v11_1_fakeAlert.avro"))
    bad = tmp_path / "bad"
    bad.mkdir()
    cases = {
        "ra_720.avro": (schema, plain, lambda r: r["diaSource"].update(ra=720.0), "off the sky: ra 720.0"),
        "dec_minus_95.avro": (schema, plain, lambda r: r["diaSource"].update(dec=-95.0), "off the sky"),
        "mjd_1e300.avro": (schema, plain, lambda r: r["diaSource"].update(midpointMjdTai=1e300),
                           "midpointMjdTai = 1e+300 is not an MJD"),
        "negative_id.avro": (schema, plain, lambda r: r["diaSource"].update(diaSourceId=-plain["diaSource"]["diaSourceId"]),
                             "is not a positive 64-bit integer"),
        "long_version.avro": (v11_schema, v11, lambda r: r["diaSource"].update(reliabilityVersion="v" * 40),
                              "reliabilityVersion is 40 characters long"),
        "long_designation.avro": (ss_schema, with_ss, lambda r: r["ssSource"].update(designation="K" * 40),
                                  "designation is 40 characters long"),
    }
    for name, (writer_schema, record, change, _) in cases.items():
        record = copy.deepcopy(record)
        change(record)
        _write(bad, name, writer_schema, record)
    summary = ingest_paths([bad], batch_size=10, progress=False)
    assert summary.quarantined == len(cases) and summary.new_objects == 0, summary.report()
    reasons = {k.rsplit("/", 1)[-1]: v for k, v in Quarantine.objects.values_list("source", "reason")}
    for name, (*_, reason) in cases.items():
        assert reason in reasons[name], (name, reasons[name])
    for model in (Object, Detection, ForcedPhotometry, RawAlert, SolarSystem, MagStats):
        assert model.objects.count() == 0, model.__name__


def test_a_bad_rubin_history_row_is_dropped_and_the_rest_of_the_packet_stored(broker_env, tmp_path):
    path = next(p for p in sorted(require_shared("lsst_alerts", "rubin_v10_0").glob("*.avro"))
                if len(_real(p)[1].get("prvDiaSources") or []) >= 2)
    schema, record = _real(path)
    prv = record["prvDiaSources"]
    bad_candid = prv[0]["diaSourceId"]
    prv[0]["ra"] = 720.0
    folder = tmp_path / "in"
    folder.mkdir()
    _write(folder, path.name, schema, record)
    summary = ingest_paths([folder], batch_size=10, progress=False)
    assert summary.new_objects == 1 and summary.rows_dropped == 1, summary.report()
    # the alert is stored; the dropped row is reported in the quarantine with its reason (not the packet)
    assert summary.quarantined == 1
    assert "1 ra/dec" in Quarantine.objects.get().reason
    stored = set(Detection.objects.values_list("candid", flat=True))
    assert stored == {record["diaSource"]["diaSourceId"], *(row["diaSourceId"] for row in prv[1:])}
    assert bad_candid not in stored
    assert not Detection.objects.filter(ra__gte=360).exists()


def test_rubin_packets_are_archived_under_lsst_keys(broker_env):
    folder = require_shared("lsst_alerts", "rubin_v10_0")
    summary = ingest_paths([folder], batch_size=50, progress=False)
    assert summary.quarantined == 0, summary.report()
    keys = dict(RawAlert.objects.values_list("candid", "archive_key"))
    assert keys and all(key == f"lsst/{candid}.avro" for candid, key in keys.items())
    candid = min(keys)
    assert archive().load(keys[candid]) == (folder / f"{candid}.avro").read_bytes()
    assert not list(archive().keys("ztf/"))


def _rubin_packet_with_id(tmp_path, candid):
    """A real Rubin packet whose diaSourceId is ``candid`` (written with its own writer schema)."""
    schema, record = _real(sorted(require_shared("lsst_alerts", "rubin_v10_0").glob("*.avro"))[0])
    record["diaSource"]["diaSourceId"] = record["diaSourceId"] = candid
    folder = tmp_path / "rubin"
    folder.mkdir(exist_ok=True)
    _write(folder, "clash.avro", schema, record)
    return folder / "clash.avro", str(record["diaObject"]["diaObjectId"])


def _tables():
    return {model.__name__: sorted(map(repr, model.objects.values_list()))
            for model in (Object, Detection, ForcedPhotometry, RawAlert, SolarSystem)}


@pytest.mark.parametrize("order", ["rubin first", "ztf first", "same batch"])
def test_a_rubin_id_equal_to_a_ztf_candid_is_stored_for_both_surveys(broker_env, client, tmp_path, order):
    """Keys are (survey, id): a Rubin diaSourceId equal to a ZTF candid is another detection, in any order."""
    ztf_path = sorted(require_shared("ztf_alerts").glob("*.avro"))[0]
    _, ztf_record = _real(ztf_path)
    candid = ztf_record["candid"]
    rubin_path, rubin_oid = _rubin_packet_with_id(tmp_path, candid)
    _, rubin_record = _real(rubin_path)
    runs = {"rubin first": [[rubin_path], [ztf_path]], "ztf first": [[ztf_path], [rubin_path]],
            "same batch": [[rubin_path, ztf_path]]}[order]
    for paths in runs:
        summary = ingest_paths(paths, batch_size=10, progress=False)
        assert summary.quarantined == 0 and summary.conflicts == 0, summary.report()
    assert not Quarantine.objects.exists()
    ztf_oid = ztf_record["objectId"]
    expected = {
        ztf_oid: {candid} | {p["candid"] for p in ztf_record["prv_candidates"] or [] if p.get("candid")},
        rubin_oid: {candid} | {p["diaSourceId"] for p in rubin_record.get("prvDiaSources") or []},
    }
    for oid, candids in expected.items():
        assert set(Detection.objects.filter(oid=oid).values_list("candid", flat=True)) == candids, oid
    assert sorted(Detection.objects.filter(candid=candid).values_list("survey", "oid")) == [
        ("lsst", rubin_oid), ("ztf", ztf_oid)]
    keys = sorted(RawAlert.objects.filter(candid=candid).values_list("oid", "archive_key"))
    assert keys == sorted([(ztf_oid, alert_key(candid, "ztf")), (rubin_oid, alert_key(candid, "lsst"))])
    assert archive().load(alert_key(candid, "ztf")) == ztf_path.read_bytes()
    assert archive().load(alert_key(candid, "lsst")) == rubin_path.read_bytes()
    # The ZTF routes mean ZTF's alert (or the named object's); the multisurvey routes Rubin's.
    ztf_bytes, rubin_bytes = ztf_path.read_bytes(), rubin_path.read_bytes()
    assert client.get(f"/alerts/{candid}.avro").content == ztf_bytes
    assert client.get(f"/alerts/{candid}.avro", {"survey": "lsst"}).content == rubin_bytes
    assert client.get("/get_avro", {"candid": candid}).content == ztf_bytes
    assert client.get("/get_avro", {"candid": candid, "oid": rubin_oid}).content == rubin_bytes
    assert client.get("/multisurvey/stamps_api/get_avro", {"measurement_id": candid}).content == rubin_bytes
    assert client.get("/multisurvey/stamps_api/get_avro",
                      {"measurement_id": candid, "survey_id": "ztf"}).content == ztf_bytes
    # Re-ingesting both changes nothing.
    before = _tables()
    again = ingest_paths([ztf_path, rubin_path], batch_size=10, progress=False)
    assert again.detections == 0 and again.new_objects == 0 and again.quarantined == 0, again.report()
    assert _tables() == before
