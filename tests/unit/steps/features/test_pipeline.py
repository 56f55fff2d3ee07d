"""The feature orchestrator on a small multi-object batch."""
import numpy as np
import pandas as pd
import pytest

import pipeline.steps.features as features
from pipeline.steps.features import FEATURE_NAMES, FeatureResult, compute_features
from pipeline.steps.features.base import NO_DATA, NO_WISE_MATCH, TOO_FEW_POINTS

COLUMNS = ["oid", "candid", "mjd", "fid", "magpsf", "sigmapsf", "magpsf_corr", "sigmapsf_corr",
           "sigmapsf_corr_ext", "isdiffpos", "corrected", "dubious", "rb", "sgscore1", "distpsnr1",
           "ra", "dec"]


def _rows(oid, fid, mjd, magpsf, magpsf_corr, corrected, rb=0.9):
    n = len(mjd)
    return pd.DataFrame({
        "oid": oid, "candid": np.arange(n) + 1000 * fid + hash(oid) % 10 ** 6, "mjd": mjd, "fid": fid,
        "magpsf": magpsf, "sigmapsf": 0.05, "magpsf_corr": magpsf_corr, "sigmapsf_corr": 0.02,
        "sigmapsf_corr_ext": 0.03, "isdiffpos": 1, "corrected": corrected, "dubious": False, "rb": rb,
        "sgscore1": 0.95, "distpsnr1": 0.3, "ra": 120.0, "dec": 10.0})[COLUMNS]


def _batch():
    rng = np.random.default_rng(0)
    parts = []
    # STAR: corrected and stellar, periodic, two bands; two dubious points without a corrected value
    for fid, mean in ((1, 16.0), (2, 15.6)):
        t = 58300 + np.sort(rng.uniform(0, 500, 40))
        corr = mean + 0.3 * np.sin(2 * np.pi * t / 0.8123) + rng.normal(0, 0.02, 40)
        part = _rows("STAR", fid, t, corr + 2.0, corr, True)
        part.loc[part.index[:2], ["magpsf_corr", "dubious"]] = [np.nan, True]
        parts.append(part)
    # SN: not corrected, a rise and fall in both bands
    for fid in (1, 2):
        t = 58600 + np.linspace(0, 60, 15)
        flux = 0.3 * np.exp(-(t - 58615) ** 2 / 300) + 0.01
        parts.append(_rows("SN", fid, t, -2.5 * np.log10(flux) + 16.4, np.nan, False))
    # FEW: three g detections; one bogus detection dropped by the rb cut
    parts.append(_rows("FEW", 1, 58700 + np.arange(3.0), [19.0, 19.1, 19.2], np.nan, False))
    parts.append(_rows("FEW", 1, [58710.0], [18.0], np.nan, False, rb=0.1))
    detections = pd.concat(parts, ignore_index=True)
    non_detections = pd.DataFrame({"oid": ["SN"] * 3 + ["FEW"], "fid": [1, 1, 2, 1],
                                   "mjd": [58590.0, 58595.0, 58596.0, 58690.0],
                                   "diffmaglim": [20.5, 20.7, 20.1, 20.0]})
    objects = pd.DataFrame({"oid": ["STAR", "SN", "FEW", "EMPTY"], "corrected": [True, False, False, False],
                            "stellar": [True, False, False, True], "meanra": [120.0, 121.0, 122.0, 123.0],
                            "meandec": [10.0, 11.0, 12.0, 13.0]})
    allwise = pd.DataFrame({"oid": ["STAR"], "W1mag": [13.0], "W2mag": [12.9], "W3mag": [12.5],
                            "W4mag": [11.0]})
    return detections, non_detections, objects, allwise


@pytest.fixture(scope="module")
def result():
    return compute_features(*_batch())


def test_shape_names_and_types(result):
    assert isinstance(result, FeatureResult)
    assert list(result.values.columns) == list(FEATURE_NAMES)
    assert set(result.values.index) == {"STAR", "SN", "FEW", "EMPTY"}
    assert all(dtype == np.float64 for dtype in result.values.dtypes)
    assert result.version == features.FEATURE_VERSION
    # every NaN has exactly one reason, and nothing else has one
    assert result.values.isna().to_numpy().sum() == len(result.missing)
    assert not result.missing.duplicated(["oid", "feature"]).any()
    counts = result.missing_counts()
    assert counts.to_numpy().sum() == len(result.missing)


def test_corrected_light_curve_for_corrected_stellar_objects(result):
    assert result.lc_used.to_dict() == {"STAR": "corrected", "SN": "uncorrected", "FEW": "uncorrected",
                                        "EMPTY": "uncorrected"}
    detections = _batch()[0]
    star_g = detections[(detections.oid == "STAR") & (detections.fid == 1)].dropna(subset=["magpsf_corr"])
    # g - W2 uses the mean of the light curve used: corrected magnitudes, dubious NaN points dropped
    assert result.values.loc["STAR", "g-W2"] == pytest.approx(star_g.magpsf_corr.mean() - 12.9)
    assert result.values.loc["STAR", "Multiband_period"] == pytest.approx(0.8123, rel=2e-3)
    assert result.values.loc["STAR", "Harmonics_mag_1_1"] == pytest.approx(0.3, rel=0.1)
    sn = detections[(detections.oid == "SN") & (detections.fid == 1)]
    assert result.values.loc["SN", "g-r_mean"] == pytest.approx(0.0, abs=1e-9)
    assert result.values.loc["SN", "SPM_A_1"] > 0
    assert np.isfinite(result.values.loc["SN", "SPM_chi_1"])
    assert "n_det_1" not in FEATURE_NAMES or result.values.loc["SN", "n_det_1"] == len(sn)


def test_missing_reasons(result):
    why = result.missing.set_index(["oid", "feature"])["reason"]
    assert why[("FEW", "Multiband_period")] == TOO_FEW_POINTS
    assert why[("FEW", "SPM_A_1")] == TOO_FEW_POINTS
    assert why[("FEW", "SPM_A_2")] == NO_DATA
    assert why[("SN", "W1-W2")] == NO_WISE_MATCH
    assert why[("EMPTY", "Multiband_period")] == NO_DATA
    assert why[("EMPTY", "rb")] == NO_DATA
    assert np.isfinite(result.values.loc["EMPTY", "gal_b"])  # the position is known without detections
    if "n_det_1" in FEATURE_NAMES:
        assert result.values.loc["FEW", "n_det_1"] == 3  # the rb = 0.1 detection was dropped


def test_an_exception_in_one_object_does_not_stop_the_batch(monkeypatch):
    periodic = features.GROUPS["periodic"]
    original = periodic.compute

    def flaky(bands):
        if any(len(t) == 38 for t, _, _ in bands.values()):  # STAR's bands after the dubious drop
            raise ValueError("boom")
        return original(bands)

    monkeypatch.setattr(periodic, "compute", flaky)
    out = compute_features(*_batch())
    why = out.missing.set_index(["oid", "feature"])["reason"]
    assert why[("STAR", "Multiband_period")].startswith("error: ValueError: boom")
    assert why[("STAR", "Psi_CS_2")].startswith("error:")
    assert np.isfinite(out.values.loc["STAR", "SPM_A_1"])  # other groups of the object still run
    assert np.isfinite(out.values.loc["SN", "Multiband_period"])


def test_benchmark_reports_throughput_and_group_costs():
    detections, non_detections, objects, _ = _batch()
    report = features.benchmark(detections, non_detections, objects, repeat=1)
    assert report["objects"] == 4 and report["objects_per_s"] > 0
    assert {"periodic", "spm", "context"} <= set(report["seconds_per_group"])


def _shuffled(frame, seed):
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def test_values_do_not_depend_on_the_order_of_the_input_rows():
    detections, non_detections, objects, allwise = _batch()
    # two detections of STAR at the same mjd and band with the same rb but different magnitudes
    twin = detections[detections["oid"] == "STAR"].iloc[[10]].copy()
    twin[["candid", "magpsf", "magpsf_corr"]] = [1, twin["magpsf"].iloc[0] + 0.4, twin["magpsf_corr"].iloc[0] + 0.4]
    detections = pd.concat([detections, twin], ignore_index=True)
    first = compute_features(detections, non_detections, objects, allwise).values.sort_index()
    for seed in (1, 2, 3):
        again = compute_features(_shuffled(detections, seed), _shuffled(non_detections, seed),
                                 _shuffled(objects, seed), allwise).values.sort_index()
        pd.testing.assert_frame_equal(first, again, check_exact=True)
    # the lower candid wins the tie: the twin (candid 1) is the point used
    kept = compute_features(detections[detections["candid"] != 1], non_detections, objects, allwise).values
    assert not kept.loc["STAR"].equals(first.loc["STAR"])


def test_values_of_real_light_curves_do_not_depend_on_row_order():
    from tests.conftest import require_shared

    folder = require_shared("labeled", "alerce_extractor_reference")
    detections = pd.read_csv(folder / "detections.csv")
    detections["candid"] = np.arange(len(detections))
    # the same mjd twice in a band, equal rb: the case that made values change between runs
    assert detections.duplicated(["oid", "fid", "mjd"]).any()
    objects = pd.read_csv(folder / "objects.csv")[["oid", "corrected"]].assign(stellar=True)
    non_detections = pd.read_csv(folder / "non_detections.csv")
    first = compute_features(detections, non_detections, objects).values.sort_index()
    again = compute_features(_shuffled(detections, 7), _shuffled(non_detections, 7), objects).values.sort_index()
    pd.testing.assert_frame_equal(first, again, check_exact=True)
