"""Basic (detection / non-detection) features: hand-computed light curve and ALeRCE's own values."""
import csv

import numpy as np
import pytest

from pipeline.steps.features import basic
from pipeline.steps.features.base import NO_DATA, Missing
from tests.conftest import require_shared

# A hand-made g-band light curve, deliberately out of time order.
DET_MJD = [100.0, 96.0, 104.0, 110.0, 98.0]
DET_MAG = [18.0, 19.2, 18.4, 19.0, 18.6]
DET_ERR = [0.05, 0.10, 0.06, 0.08, 0.07]
DET_POS = ["t", "t", "f", "t", "t"]
ND_MJD = [90.0, 80.0, 95.5, 101.0, 96.0, 120.0]
ND_LIM = [20.1, 19.5, 20.6, 20.9, 20.0, 21.3]


def _hand():
    return basic.compute_band(DET_MJD, DET_MAG, DET_ERR, DET_POS, ND_MJD, ND_LIM)


def test_detection_features_by_hand():
    out = _hand()
    # time order: 96 (19.2, t), 98 (18.6, t), 100 (18.0, t), 104 (18.4, f), 110 (19.0, t)
    assert out["n_det"] == 5
    assert out["n_pos"] == 4
    assert out["n_neg"] == 1
    assert out["positive_fraction"] == pytest.approx(0.8)
    assert out["first_mag"] == pytest.approx(19.2)
    assert out["mean_mag"] == pytest.approx(93.2 / 5)
    assert out["min_mag"] == pytest.approx(18.0)
    assert out["delta_mag_fid"] == pytest.approx(1.2)
    assert out["delta_mjd_fid"] == pytest.approx(14.0)
    # sorted mags 18.0 18.4 18.6 19.0 19.2: p25 = 18.4, p75 = 19.0
    assert out["iqr"] == pytest.approx(0.6)


def test_non_detection_features_by_hand():
    out = _hand()
    # before 96: 80 (19.5), 90 (20.1), 95.5 (20.6); at/after: 96 (20.0), 101 (20.9), 120 (21.3)
    assert out["n_non_det_before_fid"] == 3
    assert out["n_non_det_after_fid"] == 3
    assert out["last_mjd_before_fid"] == pytest.approx(95.5)
    assert out["last_diffmaglim_before_fid"] == pytest.approx(20.6)
    assert out["max_diffmaglim_before_fid"] == pytest.approx(20.6)
    assert out["median_diffmaglim_before_fid"] == pytest.approx(20.1)
    assert out["max_diffmaglim_after_fid"] == pytest.approx(21.3)
    assert out["median_diffmaglim_after_fid"] == pytest.approx(20.9)
    assert out["dmag_first_det_fid"] == pytest.approx(20.6 - 19.2)
    assert out["dmag_non_det_fid"] == pytest.approx(20.1 - 18.0)


def test_returns_exactly_the_declared_features():
    assert set(_hand()) == set(basic.FEATURES)
    assert basic.GROUP == "basic" and basic.PER_BAND is True


@pytest.mark.parametrize("flags", [
    ["t", "t", "f", "t", "t"],
    ["1", "1", "0", "1", "1"],
    [1, 1, -1, 1, 1],
    [True, True, False, True, True],
    np.array([1.0, 1.0, -1.0, 1.0, 1.0]),
    np.array(["t", "t", "f", "t", "t"], dtype=object),
])
def test_isdiffpos_encodings(flags):
    out = basic.compute_band(DET_MJD, DET_MAG, DET_ERR, flags, ND_MJD, ND_LIM)
    assert (out["n_pos"], out["n_neg"]) == (4, 1)


def test_without_non_detections():
    out = basic.compute_band(DET_MJD, DET_MAG, DET_ERR, DET_POS, [], [])
    assert out["n_non_det_before_fid"] == 0 and out["n_non_det_after_fid"] == 0
    for name in ("last_diffmaglim_before_fid", "last_mjd_before_fid", "max_diffmaglim_before_fid",
                 "median_diffmaglim_before_fid", "dmag_first_det_fid", "dmag_non_det_fid",
                 "max_diffmaglim_after_fid", "median_diffmaglim_after_fid"):
        assert out[name] == Missing(NO_DATA), name
    assert out["n_det"] == 5


def test_single_detection_and_no_detection():
    one = basic.compute_band([50.0], [19.0], [0.1], ["t"], [40.0], [20.5])
    assert one["delta_mag_fid"] == 0 and one["delta_mjd_fid"] == 0 and one["iqr"] == 0
    assert one["dmag_first_det_fid"] == pytest.approx(1.5)
    none = basic.compute_band([], [], [], [], [40.0], [20.5])
    assert all(value == Missing(NO_DATA) for value in none.values())


def _alerce_rows():
    path = require_shared("labeled", "alerce_features150", "features.csv")
    with path.open() as handle:
        yield from csv.DictReader(handle)
    path = require_shared("labeled", "alerce_objects98", "features.csv")
    with path.open() as handle:
        yield from csv.DictReader(handle)


def test_sign_conventions_reproduce_alerce_values():
    """Rebuild light curves with ALeRCE's summary numbers and recover its derived features."""
    checked = 0
    for row in _alerce_rows():
        for band in (1, 2):
            value = row.get(f"n_non_det_before_fid_{band}", "")
            if value == "" or float(value) != 1.0:
                continue
            n_pos, n_neg = int(float(row[f"n_pos_{band}"])), int(float(row[f"n_neg_{band}"]))
            first, low = float(row[f"first_mag_{band}"]), float(row[f"min_mag_{band}"])
            high = low + float(row[f"delta_mag_fid_{band}"])
            limit = float(row[f"last_diffmaglim_before_fid_{band}"])
            t0 = float(row[f"last_mjd_before_fid_{band}"]) + 1.0
            n = n_pos + n_neg
            mags = np.full(n, low)
            mags[0] = first
            if n >= 3:
                mags[-1] = high
            flags = np.r_[np.ones(n_pos), -np.ones(n_neg)]
            out = basic.compute_band(t0 + np.arange(n), mags, np.full(n, 0.1), flags,
                                     [t0 - 1.0], [limit])
            for name in ("dmag_first_det_fid", "dmag_non_det_fid", "positive_fraction",
                         "median_diffmaglim_before_fid", "n_det", "first_mag", "min_mag"):
                assert out[name] == pytest.approx(float(row[f"{name}_{band}"]), abs=1e-6), name
            checked += 1
    assert checked >= 10


def test_real_supernova_alerts():
    folder = require_shared("labeled", "alerce_sne30")
    with (folder / "detections.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    with (folder / "non_detections.csv").open() as handle:
        limits = list(csv.DictReader(handle))
    computed = 0
    for oid in sorted({row["objectId"] for row in rows}):
        for fid in ("1", "2"):
            band = [r for r in rows if r["objectId"] == oid and r["fid"] == fid]
            if not band:
                continue
            mjd = [float(r["mjd"]) for r in band]
            nd = [r for r in limits if r["objectId"] == oid and r["fid"] == fid]
            out = basic.compute_band(mjd, [float(r["magpsf"]) for r in band],
                                     [float(r["sigmapsf"]) for r in band],
                                     [float(r["isdiffpos"]) for r in band],
                                     [float(r["jd"]) - 2400000.5 for r in nd],
                                     [float(r["diffmaglim"]) for r in nd])
            assert out["n_det"] == len(band)
            assert out["n_non_det_before_fid"] + out["n_non_det_after_fid"] == len(nd)
            assert out["min_mag"] <= out["first_mag"] <= out["min_mag"] + out["delta_mag_fid"]
            if not isinstance(out["last_mjd_before_fid"], Missing):
                assert out["last_mjd_before_fid"] < min(mjd)
                assert out["dmag_first_det_fid"] == pytest.approx(
                    out["last_diffmaglim_before_fid"] - out["first_mag"])
            computed += 1
    assert computed > 10
