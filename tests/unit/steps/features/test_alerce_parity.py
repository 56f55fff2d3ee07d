"""Parity with ALeRCE's own extractor: every feature not marked "ours" agrees to a stated tolerance.

Reference: ../shared/data/labeled/alerce_extractor_reference (ALeRCE's ``lc_classifier`` 4562196 run
on 42 real light curves, with the exact inputs it was given; see its README). ALeRCE's extractor
cannot be installed here (turbofats and mhps are not on PyPI), so no table of our own is committed:
the test reads that reference and skips where ../shared is absent.

A feature agrees on an object when both are missing or ``|ours - alerce| <= rtol * |alerce| + 1e-9``;
the test requires the stated fraction of the 42 objects. Tolerances below 1e-6 are loosened only
where the reason is known:
- periodogram group: P4J computes in float32 (times rounded to ~4 ms at MJD 59000, the phase to
  ~0.06 cycles at 20 c/d); we compute the same MHAOV in float64. The best period still agrees within
  1% for 38 of 42; PPE and the power ratios read the noisy high-frequency powers and agree less.
  Harmonics and Psi follow the period (a 1e-7 relative change of the period moves ill-conditioned
  7-harmonic fits of short bands).
- MHPS and GP_DRW: a different optimiser / filter implementation (differences of 1e-3 to 1e-2).
"""
import numpy as np
import pandas as pd
import pytest

from pipeline.steps.features import compute_features, registry
from tests.conftest import require_shared

DEFAULT = (1e-6, 0.9)  # rtol, fraction of objects that must agree
TOLERANCE = {
    "MHPS_": (1e-2, 0.9),
    "GP_DRW_sigma": (1e-3, 0.75),
    "GP_DRW_tau": (1e-3, 0.65),
    "Multiband_period": (1e-2, 0.88),
    "Period_band_": (1e-2, 0.85),
    "delta_period_": (1e-2, 0.88),
    "PPE": (0.2, 0.8),
    "Power_rate_": (0.2, 0.55),
    "Harmonics_mse_": (0.2, 0.85),
    "Harmonics_": (0.2, 0.6),
    "Psi_eta_": (0.2, 0.75),
    "Psi_CS_": (1e-6, 0.85),
}


def _tolerance(name):
    for prefix, tolerance in TOLERANCE.items():
        if name.startswith(prefix):
            return tolerance
    return DEFAULT


@pytest.fixture(scope="module")
def both():
    folder = require_shared("labeled", "alerce_extractor_reference")
    detections = pd.read_csv(folder / "detections.csv")
    detections["candid"] = np.arange(len(detections))
    objects_in = pd.read_csv(folder / "objects.csv")
    position = detections.groupby("oid")[["ra", "dec"]].mean().rename(columns={"ra": "meanra", "dec": "meandec"})
    # ALeRCE was given every detection as corrected; its light curve is the corrected one
    objects = pd.DataFrame({"oid": objects_in["oid"], "corrected": objects_in["corrected"],
                            "stellar": objects_in["corrected"]}).join(position, on="oid")
    ours = compute_features(detections, pd.read_csv(folder / "non_detections.csv"), objects,
                            objects_in[["oid", "W1mag", "W2mag", "W3mag"]]).values
    alerce = pd.read_csv(folder / "alerce_features.csv").set_index("oid")
    return ours.loc[alerce.index], alerce


def test_every_alerce_feature_is_in_the_reference_or_marked_ours(both):
    _, alerce = both
    assert set(alerce.columns) == set(registry.ALERCE_FEATURE_ORDER)
    assert len(alerce) == 42


def test_features_not_marked_ours_agree_with_alerce(both):
    ours, alerce = both
    failures = []
    for name in alerce.columns:
        if registry.FEATURES[name].ours:
            continue
        rtol, wanted = _tolerance(name)
        a, b = alerce[name].to_numpy(float), ours[name].to_numpy(float)
        agree = (np.isnan(a) & np.isnan(b)) | (np.abs(a - b) <= rtol * np.abs(a) + 1e-9)
        if agree.mean() < wanted:
            failures.append(f"{name}: {agree.sum()}/{len(a)} within rtol {rtol} (need {wanted:.0%})")
    assert not failures, "\n".join(failures)


def test_the_features_marked_ours_are_the_spm_fit():
    assert set(registry.OURS) == {f"{base}_{band}" for base in registry.GROUPS["spm"].FEATURES for band in (1, 2)}
    assert all(registry.FEATURES[name].definition.startswith("ours, not ALeRCE's: ") for name in registry.OURS)
    assert registry.FEATURES["Multiband_period"].definition == "ALeRCE"
