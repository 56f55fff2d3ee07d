"""The simulated ZTF night: valid 4.02 packets, clearly simulated, deterministic, physically sane."""
import collections
import csv
import gzip
import io
import json
import re

import fastavro
import numpy as np
import pytest
from astropy.io import fits
from astropy.timeseries import LombScargle
from fastavro.schema import load_schema_ordered
from fastavro.validation import validate

from pipeline.simulation import night as sim
from tests.conftest import require_shared

REAL_OID = re.compile(r"^ZTF\d{2}[a-z]{7}$")
RECORDS = ["cutout", "candidate", "prv_candidate", "fp_hist", "alert"]
N_OBJECTS = 70


@pytest.fixture(scope="module")
def official():
    folder = require_shared("schemas", "ztf", "4.02")
    # named types live in sibling files named after the short name, so load them in order
    return load_schema_ordered([str(folder / f"{name}.avsc") for name in RECORDS])


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    out = tmp_path_factory.mktemp("night")
    paths = sim.simulate_night(out, N_OBJECTS, seed=7)
    records = []
    for path in paths:
        with open(path, "rb") as fh:
            records.append(next(fastavro.reader(fh)))
    return out, paths, records


def _by_oid(records):
    last = {}
    for rec in records:  # paths come in time order: keep each object's latest alert
        last[rec["objectId"]] = rec
    return last


def _truth(out):
    with open(out / "truth.csv", newline="") as fh:
        return {row["oid"]: row for row in csv.DictReader(fh)}


def _norm(t):
    """A field type with nested records replaced by their full names, for comparison."""
    if isinstance(t, list):
        return [_norm(x) for x in t]
    if isinstance(t, dict):
        if t["type"] == "record":
            return f"{t['namespace']}.{t['name']}"
        if t["type"] == "array":
            return {"type": "array", "items": _norm(t["items"])}
    return t


def _collect(t, out):
    if isinstance(t, list):
        for x in t:
            _collect(x, out)
    elif isinstance(t, dict) and t.get("type") == "array":
        _collect(t["items"], out)
    elif isinstance(t, dict) and t.get("type") == "record":
        out[f"{t['namespace']}.{t['name']}"] = t
        for f in t["fields"]:
            _collect(f["type"], out)


def _fields(record):
    return [(f["name"], _norm(f["type"]), "default" in f, f.get("default")) for f in record["fields"]]


def test_built_schema_matches_official_field_lists():
    folder = require_shared("schemas", "ztf", "4.02")
    ours = {}
    _collect(sim.alert_schema(), ours)
    assert set(ours) == {"ztf.alert", *(f"ztf.alert.{n}" for n in RECORDS[:-1])}
    for name in RECORDS:
        theirs = json.loads((folder / f"{name}.avsc").read_text())
        full = f"{theirs['namespace']}.{theirs['name']}"
        assert _fields(ours[full]) == _fields(theirs), full
        assert ours[full]["version"] == theirs["version"] == "4.02"


def test_packets_are_valid_ztf_402_containers(night, official):
    _, paths, _ = night
    assert len(paths) >= N_OBJECTS
    for path in paths:
        with open(path, "rb") as fh:
            reader = fastavro.reader(fh, reader_schema=official)
            assert reader.codec == "null"
            assert reader.writer_schema["name"] == "ztf.alert"
            recs = list(reader)
        assert len(recs) == 1
        rec = recs[0]
        assert path.name == f"{rec['candid']}.avro"
        assert rec["candidate"]["candid"] == rec["candid"]
        assert validate(rec, official, raise_errors=True)
        assert rec["schemavsn"] == "4.02"


def test_simulated_labels_never_clash_with_real_ztf(night):
    _, paths, records = night
    assert "SIMULATED" in sim.PUBLISHER
    assert all(r["publisher"] == sim.PUBLISHER for r in records)
    assert not any(REAL_OID.match(r["objectId"]) for r in records)
    assert all(sim.is_simulated_oid(r["objectId"]) for r in records)
    assert not sim.is_simulated_oid("ZTF19abegmle")
    candids = [r["candid"] for r in records]
    candids += [p["candid"] for r in records for p in r["prv_candidates"] or [] if p["candid"]]
    assert len(set(r["candid"] for r in records)) == len(records)
    assert all(sim.is_simulated_candid(c) for c in candids)
    with open(require_shared("ztf_alerts_manifest.csv"), newline="") as fh:
        real = [int(row["candid"]) for row in csv.DictReader(fh)]
    assert min(real) >= sim.SIM_CANDID_MAX and not any(sim.is_simulated_candid(c) for c in real)


def test_deterministic_for_a_seed():
    a = list(sim.simulate_packets(12, seed=5))
    assert a == list(sim.simulate_packets(12, seed=5))
    b = list(sim.simulate_packets(12, seed=6))
    assert [x[1] for x in a] != [x[1] for x in b]
    oids = [{r["oid"] for r in sim.truth_table(12, seed=s)} for s in (5, 6)]
    assert len(oids[0]) == 12 and not oids[0] & oids[1]


def _image(cutout):
    with fits.open(io.BytesIO(gzip.decompress(cutout["stampData"]))) as hdul:
        return np.asarray(hdul[0].data, dtype=float)


def test_cutouts_are_consistent_63x63_images(night):
    _, _, records = night
    truth = _truth(night[0])
    for rec in records[:40]:
        sci, ref, diff = (_image(rec[f"cutout{k}"]) for k in ("Science", "Template", "Difference"))
        assert sci.shape == ref.shape == diff.shape == (63, 63)
        assert rec["cutoutScience"]["fileName"].startswith(f"candid{rec['candid']}_")
        # science - template - difference is the background offset, up to quantisation:
        rest = sci - ref - diff
        assert np.ptp(rest) < 0.2 * np.std(diff) + 0.5  # steps are noise/16 per image
        if truth[rec["objectId"]]["class"] != "bogus":  # the source shows with the sign of isdiffpos
            core = diff[29:34, 29:34].sum()
            assert (core > 0) == (rec["candidate"]["isdiffpos"] == "t")


def test_classes_mixed_and_truth_written(night):
    out, _, records = night
    truth = _truth(out)
    assert len(truth) == N_OBJECTS
    assert all(row["simulated"] == "True" for row in truth.values())
    counts = collections.Counter(row["class"] for row in truth.values())
    assert set(counts) == set(sim.CLASSES)
    for cls, w in sim.CLASSES.items():
        assert abs(counts[cls] - w * N_OBJECTS) <= 1
    assert {r["objectId"] for r in records} == set(truth)
    only = sim.truth_table(9, seed=1, classes=["RRL", "AGN", "SNIa"])
    assert collections.Counter(r["class"] for r in only) == {"RRL": 3, "AGN": 3, "SNIa": 3}
    with pytest.raises(ValueError):
        sim.truth_table(3, classes=["Cepheid"])


def test_light_curves_and_photometry_are_physical(night):
    out, _, records = night
    truth = _truth(out)
    per_band, n_det = [], {}
    for oid, rec in _by_oid(records).items():
        cls, cand = truth[oid]["class"], rec["candidate"]
        prv = rec["prv_candidates"] or []
        rows = prv + [cand]
        det = [r for r in rows if r["candid"] is not None]
        lims = [r for r in prv if r["candid"] is None]
        assert all(r["diffmaglim"] and r["magpsf"] is None and r["ra"] is None for r in lims)
        assert all(19.5 <= r["diffmaglim"] <= 21.0 for r in rows)
        assert all(r["magpsf"] < r["diffmaglim"] + 0.3 for r in det)
        assert 0.0 <= cand["ra"] < 360 and -31 < cand["dec"] < 81
        n_det[oid] = len(det)
        per_band.append(min(sum(r["fid"] == f for r in det) for f in (1, 2)))
        if prv:
            assert 20 < cand["jd"] - prv[0]["jd"] < 95
        if cls == "asteroid":
            assert len(det) == 1 and cand["ssnamenr"] != "null" and 0 <= cand["ssdistnr"] < 5
            assert cand["ndethist"] == 1
        else:
            assert cand["ssdistnr"] == -999.0
        if cls == "bogus":
            assert cand["rb"] < 0.4 and cand["drb"] < 0.5
        else:
            assert cand["rb"] > 0.5 and cand["drb"] > 0.7
        if cls in ("SNIa", "SNII"):
            assert all(r["isdiffpos"] == "t" for r in det)
            assert 1.0 <= cand["distnr"] <= 5.0 and cand["sgscore1"] < 0.2
        if cls in ("RRL", "EB"):
            assert cand["distnr"] < 1.0 and cand["sgscore1"] > 0.9 and cand["magnr"] < cand["magpsf"] + 1
        if cls in ("RRL", "EB", "AGN"):
            assert cand["ndethist"] > len(det) and cand["jdstarthist"] < prv[0]["jd"]
    assert max(per_band) >= 6  # well-sampled light curves in both bands ...
    assert sum(1 for oid, n in n_det.items() if n <= 3 and truth[oid]["class"] != "asteroid") >= 3
    variables = [r for r in records if truth[r["objectId"]]["class"] in ("RRL", "EB", "AGN")]
    signs = {r["candidate"]["isdiffpos"] for r in variables}
    assert signs == {"t", "f"}  # variables above and below their reference flux
    mags = np.array([[r["candidate"]["magpsf"], r["candidate"]["sigmapsf"]] for r in records])
    assert mags[:, 1].min() >= 0.009 and np.median(mags[:, 1]) < 0.2
    assert np.corrcoef(mags.T)[0, 1] > 0.3  # errors grow with magnitude


def test_rr_lyrae_period_recovered_by_lomb_scargle():
    night = sim.plan_night(12, seed=11, classes=["RRL"])
    truth = {r["oid"]: r["period"] for r in night.truth()}
    last = {}
    for _, data in night.packets():
        rec = next(fastavro.reader(io.BytesIO(data)))
        last[rec["objectId"]] = rec
    found = []
    for oid, rec in last.items():
        det = [r for r in rec["prv_candidates"] + [rec["candidate"]] if r["candid"] is not None]
        # apparent magnitude = reference flux +/- difference flux (the usual ZTF reconstruction)
        sign = np.array([1.0 if r["isdiffpos"] == "t" else -1.0 for r in det])
        flux = 10 ** (-0.4 * np.array([r["magnr"] for r in det])) + sign * 10 ** (
            -0.4 * np.array([r["magpsf"] for r in det]))
        t, fid = np.array([r["jd"] for r in det]), np.array([r["fid"] for r in det])
        ok = flux > 0
        mag = -2.5 * np.log10(flux[ok])
        t, fid = t[ok], fid[ok]
        for f in (1, 2):
            mag[fid == f] -= np.median(mag[fid == f])
        freq, power = LombScargle(t, mag).autopower(
            minimum_frequency=0.5, maximum_frequency=5.0, samples_per_peak=20)
        found.append(abs(1 / freq[np.argmax(power)] / truth[oid] - 1) < 0.01)
    assert len(found) == 12 and np.mean(found) >= 0.8
