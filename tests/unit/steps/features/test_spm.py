"""Supernova parametric model: known parameters recovered, missing-value policy, real supernovae."""
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import approx_fprime

from pipeline.steps.features import spm
from pipeline.steps.features.base import FIT_FAILED, NO_DATA, TOO_FEW_POINTS, Missing
from tests.conftest import require_shared

TRUE = dict(SPM_A=0.3, SPM_t0=8.0, SPM_gamma=15.0, SPM_beta=0.3, SPM_tau_rise=3.0, SPM_tau_fall=20.0)


def _flux_to_mag(flux):
    return -2.5 * np.log10(np.abs(flux)) + 16.4  # 16.4 AB = 1 mJy


def _synthetic(n=80, noise=0.002, seed=3):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 100, n))
    flux = spm.model(t, *TRUE.values()) + rng.normal(0, noise, n)
    mag = _flux_to_mag(flux)
    sigma = 2.5 * np.log10(1 + noise / np.abs(flux))
    return 59000.0 + t, mag, sigma, np.sign(flux)


def test_flux_is_in_millijansky():
    assert spm.mag_to_flux(16.4) == pytest.approx(1.0)
    assert spm.mag_to_flux(23.9) == pytest.approx(1e-3)  # 1 uJy


def test_known_parameters_are_recovered():
    out = spm.compute_band(*_synthetic())
    assert out["SPM_A"] == pytest.approx(TRUE["SPM_A"], rel=0.05)
    assert out["SPM_t0"] == pytest.approx(TRUE["SPM_t0"], abs=1.0)
    assert out["SPM_gamma"] == pytest.approx(TRUE["SPM_gamma"], abs=1.5)
    assert out["SPM_beta"] == pytest.approx(TRUE["SPM_beta"], abs=0.05)
    assert out["SPM_tau_rise"] == pytest.approx(TRUE["SPM_tau_rise"], abs=0.5)
    assert out["SPM_tau_fall"] == pytest.approx(TRUE["SPM_tau_fall"], abs=1.5)
    # residuals are noise (0.002 mJy) against ALeRCE's error floor (0.002 + 0.01 mJy)
    assert 0 < out["SPM_chi"] < 0.1


def test_jacobian_matches_finite_differences():
    t = np.linspace(0, 90, 30)
    p = np.array(list(TRUE.values()))
    _, jac = spm._model_and_jacobian(t, *p)
    numeric = np.array([approx_fprime(p, lambda q, ti=ti: spm.model(ti, *q), 1e-7) for ti in t])
    assert jac == pytest.approx(numeric, abs=1e-5)


def test_missing_value_policy():
    mjd, mag, sigma, sign = _synthetic(n=40)
    empty = spm.compute_band([], [], [], [])
    assert all(v == Missing(NO_DATA) for v in empty.values())
    few = spm.compute_band(mjd[:5], mag[:5], sigma[:5], sign[:5])
    assert set(few) == set(spm.FEATURES)
    assert all(v == Missing(TOO_FEW_POINTS) for v in few.values())
    six = spm.compute_band(mjd[10:16], mag[10:16], sigma[10:16], sign[10:16])
    assert np.isfinite(six["SPM_A"]) and six["SPM_chi"] == Missing(TOO_FEW_POINTS)
    negative = spm.compute_band(mjd, mag, sigma, -np.ones_like(mjd))
    assert all(v == Missing(spm.NO_POSITIVE_FLUX) for v in negative.values())


def test_flat_curve_gives_a_finite_flat_model():
    t = np.linspace(59000, 59090, 30)
    out = spm.compute_band(t, np.full(30, 19.0), np.full(30, 0.05), np.ones(30))
    params = [out[name] for name in spm.PARAMETERS]
    assert all(np.isfinite(params))
    model = spm.model(t - t[0], *params)
    assert model == pytest.approx(np.full(30, spm.mag_to_flux(19.0)), rel=0.1)


def test_batch_equals_band_by_band():
    bands = [_synthetic(n=n, seed=seed) for n, seed in ((20, 1), (45, 2), (80, 3))]
    batch = spm.compute_batch(bands)
    for band, result in zip(bands, batch):
        single = spm.compute_band(*band)
        for name in spm.FEATURES:
            assert result[name] == pytest.approx(single[name], rel=1e-9)


def test_real_supernovae_fit():
    folder = require_shared("labeled", "alerce_sne30")
    det = pd.read_csv(folder / "detections.csv",
                      usecols=["objectId", "fid", "mjd", "magpsf", "sigmapsf", "isdiffpos"])
    bands = [(g["mjd"], g["magpsf"], g["sigmapsf"], g["isdiffpos"])
             for _, g in det.groupby(["objectId", "fid"]) if len(g) >= 6]
    results = spm.compute_batch(bands)
    fitted = [r for r in results if not isinstance(r["SPM_A"], Missing)]
    assert not any(r["SPM_A"] == Missing(FIT_FAILED) for r in results)
    assert len(fitted) >= 0.9 * len(bands)
    for r in fitted:
        assert 1.0 <= r["SPM_gamma"] <= 100.0 and 0.0 <= r["SPM_beta"] <= 1.0
        assert r["SPM_chi"] == Missing(TOO_FEW_POINTS) or np.isfinite(r["SPM_chi"])  # 6 points: no dof
    # supernovae rise within days: most fitted rise times are short
    assert np.median([r["SPM_tau_rise"] for r in fitted]) < 15
