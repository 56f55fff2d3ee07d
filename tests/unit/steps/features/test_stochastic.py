"""Stochastic features: DRW, IAR, structure function, MHPS against simulations and references."""
import csv
import math

import numpy as np
import pytest
from scipy import linalg, optimize

from pipeline.steps.features import stochastic
from pipeline.steps.features.base import TOO_FEW_POINTS, Missing
from tests.conftest import require_shared


def _drw_light_curve(n, tau, variance, err, seed, span=2000.0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(58000.0, 58000.0 + span, n))
    x = np.empty(n)
    x[0] = rng.normal(0.0, math.sqrt(variance))
    for i in range(1, n):
        r = math.exp(-(t[i] - t[i - 1]) / tau)
        x[i] = r * x[i - 1] + rng.normal(0.0, math.sqrt(variance * (1 - r * r)))
    return t, 18.0 + x + rng.normal(0.0, err, n), np.full(n, err)


# --- damped random walk --------------------------------------------------------------------------
def test_drw_kalman_likelihood_equals_dense_gaussian_process():
    rng = np.random.default_rng(3)
    t = np.sort(rng.uniform(0, 300, 40))
    y = rng.normal(0, 0.2, 40)
    var_err = rng.uniform(0.01, 0.05, 40) ** 2
    for a, tau in [(0.04, 30.0), (0.5, 0.3), (1e-4, 2000.0)]:
        cov = a * np.exp(-np.abs(t[:, None] - t[None, :]) / tau) + np.diag(var_err)
        chol = linalg.cho_factor(cov, lower=True)
        dense = 0.5 * (y @ linalg.cho_solve(chol, y) + 2 * np.log(np.diag(chol[0])).sum()
                       + 40 * math.log(2 * math.pi))
        kalman = stochastic._drw_nll(math.log(a), -math.log(tau), t, y, var_err)
        assert kalman == pytest.approx(dense, rel=1e-9)


def test_drw_fit_is_the_likelihood_maximum():
    t, m, e = _drw_light_curve(80, 40.0, 0.05, 0.03, seed=5, span=800.0)
    out = stochastic.compute_band(t, m, e)
    y = m - m.mean()
    best = stochastic._drw_nll(math.log(out["GP_DRW_sigma"]), -math.log(out["GP_DRW_tau"]),
                               t - t[0], y, e * e)
    grid = [stochastic._drw_nll(la, -lt, t - t[0], y, e * e)
            for la in np.linspace(math.log(1e-3), math.log(1.0), 60)
            for lt in np.linspace(math.log(0.1), math.log(5000.0), 60)]
    assert best <= min(grid) + 1e-9


def test_drw_recovers_known_tau_and_variance():
    taus, variances = [], []
    for seed in range(4):
        t, m, e = _drw_light_curve(300, 50.0, 0.04, 0.02, seed=seed)
        out = stochastic.compute_band(t, m, e)
        taus.append(out["GP_DRW_tau"])
        variances.append(out["GP_DRW_sigma"])
    assert np.exp(np.mean(np.log(taus))) == pytest.approx(50.0, rel=0.3)
    # GP_DRW_sigma is the DRW variance (ALeRCE's celerite amplitude), in mag^2
    assert np.exp(np.mean(np.log(variances))) == pytest.approx(0.04, rel=0.3)


def test_alerce_gp_drw_sigma_is_a_variance():
    """ALeRCE's stored GP_DRW_sigma tracks Std^2, not Std: the reason we store a variance."""
    path = require_shared("labeled", "alerce_objects98", "features.csv")
    with path.open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["GP_DRW_sigma_1"] and r["Std_1"]]
    ratios = [float(r["GP_DRW_sigma_1"]) / float(r["Std_1"]) ** 2 for r in rows]
    assert 0.5 < np.median(ratios) < 2.0


# --- irregular autoregressive model --------------------------------------------------------------
def _iar_reference(phi, t, y, yerr):
    """ALeRCE's turbo-fats ``IAR_phi_kalman`` written out in Python."""
    n = len(y)
    sighat, xhat, sum_lambda, sum_error = 1.0, 0.0, 0.0, 0.0
    for i in range(n - 1):
        lam = sighat + yerr[i + 1] ** 2
        delta = t[i + 1] - t[i]
        f = phi ** delta
        qt = 1 - phi ** (2 * delta)
        sum_lambda += math.log(lam)
        theta = f * sighat
        sum_error += (y[i] - xhat) ** 2 / lam
        xhat = f * xhat + theta / lam * (y[i] - xhat)
        sighat = f * sighat * f + qt - theta * theta / lam
    return (sum_lambda + sum_error) / n


def _iar_light_curve(n, phi, seed):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.uniform(0.2, 2.0, n))
    x = np.empty(n)
    x[0] = rng.normal()
    for i in range(1, n):
        f = phi ** (t[i] - t[i - 1])
        x[i] = f * x[i - 1] + math.sqrt(1 - f * f) * rng.normal()
    return t, 17.0 + 0.2 * x, np.full(n, 0.002)


def test_iar_objective_and_search_match_alerce_reference():
    t, m, e = _iar_light_curve(60, 0.6, seed=11)
    e = e * np.random.default_rng(12).uniform(1, 40, e.size)  # uneven errors: index matters
    std = np.std(m, ddof=1)
    y, yerr = (m - m.mean()) / std, e / std
    for phi in (0.05, 0.5, 0.93):
        assert stochastic._iar_nll(phi, t, y, yerr) == pytest.approx(
            _iar_reference(phi, t, y, yerr), rel=1e-12)
    expected = optimize.minimize_scalar(_iar_reference, args=(t, y, yerr), bounds=(0, 1),
                                        method="bounded", options={"xatol": 1e-12}).x
    assert stochastic.compute_band(t, m, e)["IAR_phi"] == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("phi", [0.3, 0.8, 0.97])
def test_iar_recovers_known_phi(phi):
    estimates = [stochastic.compute_band(*_iar_light_curve(300, phi, seed))["IAR_phi"]
                 for seed in range(5)]
    assert np.mean(estimates) == pytest.approx(phi, abs=0.05)


# --- structure function --------------------------------------------------------------------------
def _sf_reference(t, m, e):
    """turbo-fats ``SF_ML_amplitude`` / ``SF_ML_gamma`` written out with loops and np.polyfit."""
    pairs = [(t[j] - t[i], abs(m[i] - m[j]), e[i] ** 2 + e[j] ** 2)
             for i in range(len(m)) for j in range(i + 1, len(m))]
    pairs = [p for p in pairs if 5 <= p[0] <= 365]
    bins = 10 ** np.arange(np.log10(5), np.log10(2000), 0.1)
    taus, sfs = [], []
    for lo, hi in zip(bins[:-1], bins[1:]):
        inside = [dm**2 - err for dt, dm, err in pairs if lo <= dt < hi]
        if inside and np.mean(inside) >= 0:
            sfs.append(np.sqrt(np.mean(inside)))
            taus.append((lo + hi) / 2 / 365.0)
    taus, sfs = np.array(taus), np.array(sfs)
    keep = (taus <= 0.5) & (taus > 0.01)
    gamma, intercept = np.polyfit(np.log10(taus[keep]), np.log10(sfs[keep]), 1)
    amplitude = 10**intercept
    if amplitude < 0.005:
        return 0.0, 0.0
    return min(amplitude, 15.0), float(np.clip(gamma, -0.5, 3.0))


def test_structure_function_matches_reference():
    t, m, e = _drw_light_curve(70, 30.0, 0.05, 0.03, seed=8, span=600.0)
    out = stochastic.compute_band(t, m, e)
    amplitude, gamma = _sf_reference(t, m, e)
    assert out["SF_ML_amplitude"] == pytest.approx(amplitude, rel=1e-9)
    assert out["SF_ML_gamma"] == pytest.approx(gamma, rel=1e-9, abs=1e-12)


def test_structure_function_of_a_random_walk():
    """A random walk with step variance D per day has SF = sqrt(D dt): gamma 1/2, A sqrt(365 D)."""
    rng = np.random.default_rng(21)
    t = np.sort(rng.uniform(0, 1500, 600))
    diffusion = 1e-4
    m = 18 + np.cumsum(np.r_[0, rng.normal(0, np.sqrt(diffusion * np.diff(t)))])
    out = stochastic.compute_band(t, m, np.full(600, 1e-3))
    assert out["SF_ML_gamma"] == pytest.approx(0.5, abs=0.12)
    assert out["SF_ML_amplitude"] == pytest.approx(math.sqrt(365 * diffusion), rel=0.3)


def test_structure_function_needs_two_bins():
    t = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 4.5])  # every pair closer than 5 d
    out = stochastic.compute_band(t, 18 + 0.1 * np.sin(t), np.full(6, 0.01))
    assert out["SF_ML_amplitude"] == Missing(TOO_FEW_POINTS)
    assert out["SF_ML_gamma"] == Missing(TOO_FEW_POINTS)


# --- Mexican-hat power spectrum ------------------------------------------------------------------
def _mhps_reference(mag, magerr, time, t1=100.0, t2=10.0, mag0=19.0, epsilon=1.0, dt=5.0):
    """ALeRCE's ``mhps`` C code (``_conv`` and ``_statistics``) transcribed with loops."""
    n = len(mag)
    flux = 10 ** (-0.4 * (mag - mag0))
    mean = flux.mean()
    flux = flux - mean

    def conv(a, c1, c2):
        half = max(6 * c1, 6 * dt)
        grid = np.linspace(-half, half, 1001)
        step = grid[1] - grid[0]
        norm1 = np.exp(-grid**2 / (2 * c1 * c1)).sum() * step
        norm2 = np.exp(-grid**2 / (2 * c2 * c2)).sum() * step
        normf = ((np.exp(-grid**2 / (2 * c1 * c1)) / norm1
                  - np.exp(-grid**2 / (2 * c2 * c2)) / norm2) ** 2).sum() * step
        b1, b2 = np.zeros(n), np.zeros(n)
        for i in range(n):
            k = 0
            for j in range(n):
                d = time[j] - time[i]
                if -half < d < half:
                    b1[i] += a[j] * math.exp(-d * d / (2 * c1 * c1)) / norm1
                    b2[i] += a[j] * math.exp(-d * d / (2 * c2 * c2)) / norm2
                    if -half * 2 / 3 <= d <= half * 2 / 3:
                        k += 1
            if k <= 3:
                b1[i] = b2[i] = -1.0
        return normf, b1, b2

    def power(timescale):
        sigma1 = 0.225 * timescale / math.sqrt(1 + epsilon)
        norm, mask1, mask2 = conv(np.ones(n), sigma1, (1 + epsilon) * sigma1)
        _, rate1, rate2 = conv(flux, sigma1, (1 + epsilon) * sigma1)
        used = mask1 > 0
        ik = rate1[used] / mask1[used] - rate2[used] / mask2[used]
        return np.mean(ik**2) / norm / mean**2, used

    low, used = power(t1)
    noise = np.mean(math.log(10) * 10 ** (-0.4 * (mag[used] - mag0)) * 0.4 * magerr[used]) ** 2
    low -= noise / mean**2
    high, used_high = power(t2)
    flag = 0.0 if high > noise / mean**2 else 1.0
    if flag == 0.0:
        high -= noise / mean**2
    return low / high, low, high, float(used_high.sum()), flag


@pytest.mark.parametrize("n", [90, 30])
def test_mhps_matches_transcribed_alerce_code(n):
    rng = np.random.default_rng(4)
    t = np.sort(rng.uniform(58000, 58400, n))
    m = 18 + 0.5 * np.sin(2 * np.pi * t / 150) + 0.1 * np.sin(2 * np.pi * t / 7) \
        + rng.normal(0, 0.03, n)
    e = rng.uniform(0.02, 0.05, n)
    out = stochastic.compute_band(t, m, e)
    ref = _mhps_reference(m, e, t - t[0])
    names = ("MHPS_ratio", "MHPS_low", "MHPS_high", "MHPS_non_zero", "MHPS_PN_flag")
    for name, expected in zip(names, ref):
        assert out[name] == pytest.approx(expected, rel=1e-9), name


def test_mhps_constant_light_curve_is_pure_noise():
    t = np.linspace(0, 200, 100)
    e = 0.05
    out = stochastic.compute_band(t, np.full(100, 18.0), np.full(100, e))
    assert out["MHPS_low"] == pytest.approx(-(0.4 * math.log(10) * e) ** 2, rel=1e-9)
    assert out["MHPS_high"] == pytest.approx(0.0, abs=1e-15)
    assert out["MHPS_PN_flag"] == 1.0
    assert out["MHPS_non_zero"] == 100
    assert isinstance(out["MHPS_ratio"], Missing)


def test_mhps_separates_slow_from_fast_variability():
    t = np.linspace(58000, 58700, 350)
    e = np.full(350, 0.01)
    slow = stochastic.compute_band(t, 18 + 0.3 * np.sin(2 * np.pi * t / 300), e)
    fast = stochastic.compute_band(t, 18 + 0.3 * np.sin(2 * np.pi * t / 15), e)
    assert slow["MHPS_ratio"] > 10 * fast["MHPS_ratio"]
    assert fast["MHPS_high"] > slow["MHPS_high"]


# --- minimum points ------------------------------------------------------------------------------
def test_minimum_points():
    t, m, e = _drw_light_curve(5, 20.0, 0.05, 0.03, seed=1, span=10.0)
    out = stochastic.compute_band(t, m, e)
    assert set(out) == set(stochastic.FEATURES)
    for name in ("GP_DRW_sigma", "GP_DRW_tau", "SF_ML_amplitude", "SF_ML_gamma", "IAR_phi"):
        assert out[name] == Missing(TOO_FEW_POINTS), name
    assert out["MHPS_non_zero"] == 5  # ALeRCE computes MHPS at any length
    empty = stochastic.compute_band([], [], [])
    assert all(value == Missing(TOO_FEW_POINTS) for value in empty.values())
    two = stochastic.compute_band([1.0, 3.0], [18.0, 18.2], [0.1, 0.1])
    assert two["MHPS_non_zero"] == 0 and two["MHPS_PN_flag"] == 1.0
    assert two["MHPS_low"] == Missing(TOO_FEW_POINTS)


def test_real_periodic_light_curves():
    path = require_shared("labeled", "alerce_periodic25", "detections.csv")
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    done = 0
    for oid in sorted({r["oid"] for r in rows}):
        band = [r for r in rows if r["oid"] == oid and r["fid"] == "1"]
        if len(band) < 20:
            continue
        out = stochastic.compute_band([float(r["mjd"]) for r in band],
                                      [float(r["magpsf"]) for r in band],
                                      [float(r["sigmapsf"]) for r in band])
        assert 0 < out["IAR_phi"] < 1
        assert out["GP_DRW_sigma"] > 0 and out["GP_DRW_tau"] > 0
        done += 1
    assert done >= 5
