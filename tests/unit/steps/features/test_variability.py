"""FATS variability features: an independent FATS-style implementation and known answers."""
import math

import numpy as np
import pytest
from scipy import stats

from pipeline.steps.features import variability
from pipeline.steps.features.base import NOT_FINITE, TOO_FEW_POINTS, Missing


def _fats_reference(t, m, e):
    """Straightforward transcription of the turbo-fats formulas (loops, scipy.stats)."""
    n = len(m)
    mean, std = np.mean(m), np.std(m)
    srt = np.sort(m)
    k = int(math.ceil(0.05 * n))
    acf = [np.sum((m[:n - lag] - mean) * (m[lag:] - mean)) / n for lag in range(n)]
    autocor = next((lag for lag in range(n) if acf[lag] / acf[0] < np.exp(-1)), n)
    wmean = np.average(m, weights=1 / e**2)
    wstd = np.sqrt(np.sum((m - wmean) ** 2) / (n - 1))
    con = 0
    for i in range(n - 2):
        if all(m[i + j] > mean + 2 * std or m[i + j] < mean - 2 * std for j in range(3)):
            con += 1
    w = 1.0 / np.diff(t) ** 2
    median = np.median(m)
    p3, p97 = np.percentile(m, (3, 97))
    last = m[-30:]
    sigmap = np.sqrt(n / (n - 1)) * (m - np.sum(m / e**2) / np.sum(1 / e**2)) / e
    s = np.cumsum(m - mean) / (n * std)
    kurt = (n * (n + 1) / ((n - 1) * (n - 2) * (n - 3)) * np.sum(((m - mean) / std) ** 4)
            - 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))
    a2 = stats.anderson(m, method="interpolate").statistic
    return {
        "Amplitude": (np.median(srt[-k:]) - np.median(srt[:k])) / 2,
        "AndersonDarling": 1 / (1 + np.exp(-10 * (a2 - 0.3))),
        "Autocor_length": autocor,
        "Beyond1Std": np.sum((m > wmean + wstd) | (m < wmean - wstd)) / n,
        "Con": con / (n - 2),
        "Eta_e": np.sum(w * np.diff(m) ** 2) / np.sum(w) / np.var(m),
        "Gskew": np.median(m[m <= p3]) + np.median(m[m >= p97]) - 2 * median,
        "MaxSlope": np.max(np.abs(np.diff(m) / np.diff(t))),
        "Mean": mean,
        "Meanvariance": std / mean,
        "MedianAbsDev": np.median(np.abs(m - median)),
        "MedianBRP": np.sum((m < median + (m.max() - m.min()) / 10)
                            & (m > median - (m.max() - m.min()) / 10)) / n,
        "PairSlopeTrend": (np.sum(np.diff(last) > 0) - np.sum(np.diff(last) <= 0)) / 30,
        "PercentAmplitude": np.max(np.abs(m - median)) / median,
        "Q31": np.percentile(m, 75) - np.percentile(m, 25),
        "Rcs": s.max() - s.min(),
        "Skew": stats.skew(m),
        "SmallKurtosis": kurt,
        "Std": std,
        "StetsonK": np.sum(np.abs(sigmap)) / np.sqrt(n) / np.sqrt(np.sum(sigmap**2)),
        "Pvar": stats.chi2.cdf(np.sum((m - mean) ** 2 / e**2), n - 1),
        "ExcessVar": np.sum((m - mean) ** 2 - e**2) / (n * mean**2),
        "LinearTrend": stats.linregress(t, m).slope,
    }


def _irregular(n, seed):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(58000, 58600, n))
    m = 17.5 + 0.4 * np.sin(2 * np.pi * t / 37.0) + rng.normal(0, 0.08, n) + 0.0005 * (t - t[0])
    m[n // 3] += 0.9  # an outlier, so that Con, Gskew and Beyond1Std see something
    return t, m, rng.uniform(0.03, 0.12, n)


@pytest.mark.parametrize("n,seed", [(6, 1), (13, 2), (45, 3), (180, 4)])
def test_matches_independent_fats_implementation(n, seed):
    t, m, e = _irregular(n, seed)
    out = variability.compute_band(t, m, e)
    ref = _fats_reference(t, m, e)
    assert set(out) == set(variability.FEATURES) == set(ref)
    for name, expected in ref.items():
        assert out[name] == pytest.approx(expected, rel=1e-7, abs=1e-10), name


def test_too_few_points():
    t, m, e = _irregular(5, 0)
    out = variability.compute_band(t, m, e)
    assert all(value == Missing(TOO_FEW_POINTS) for value in out.values())
    assert not any(isinstance(v, Missing) for v in variability.compute_band(
        *_irregular(6, 0)).values())


def test_constant_light_curve():
    t = np.linspace(0, 100, 30)
    out = variability.compute_band(t, np.full(30, 18.0), np.full(30, 0.1))
    for name in ("Std", "Amplitude", "MedianAbsDev", "Q31", "Gskew", "MaxSlope", "Con",
                 "Meanvariance", "PercentAmplitude", "LinearTrend", "Pvar", "MedianBRP"):
        assert out[name] == pytest.approx(0.0, abs=1e-12), name
    assert out["Mean"] == pytest.approx(18.0)
    assert out["ExcessVar"] == pytest.approx(-0.01 / 18.0**2)
    for name in ("Skew", "SmallKurtosis", "Eta_e", "Rcs", "StetsonK", "AndersonDarling"):
        assert out[name] == Missing(NOT_FINITE), name


def test_dense_sinusoid():
    amplitude = 0.5
    t = np.linspace(0.0, 1000.0, 4001)
    m = 17.0 + amplitude * np.sin(2 * np.pi * t / 9.7531)  # phases fill the cycle evenly
    out = variability.compute_band(t, m, np.full(t.size, 0.01))
    assert out["Std"] == pytest.approx(amplitude / np.sqrt(2), rel=1e-3)
    # median of the top 5% of a sine: sin(pi/2 - pi/40)
    assert out["Amplitude"] == pytest.approx(amplitude * np.cos(np.pi / 40), rel=1e-3)
    assert out["Mean"] == pytest.approx(17.0, abs=3e-3)  # not a whole number of cycles
    assert out["MedianAbsDev"] == pytest.approx(amplitude / np.sqrt(2), rel=1e-2)
    assert out["Q31"] == pytest.approx(amplitude * np.sqrt(2), rel=1e-2)
    assert out["Beyond1Std"] == pytest.approx(0.5, abs=0.01)
    assert out["SmallKurtosis"] == pytest.approx(-1.5, abs=0.01)
    assert out["Skew"] == pytest.approx(0.0, abs=1e-2)
    assert out["PercentAmplitude"] == pytest.approx(amplitude / 17.0, rel=1e-2)
    assert out["MaxSlope"] == pytest.approx(2 * np.pi * amplitude / 9.7531, rel=1e-2)
    assert out["AndersonDarling"] > 0.999  # a sine is far from Gaussian


def test_gaussian_white_noise():
    rng = np.random.default_rng(42)
    n = 3000
    t = np.arange(n, dtype=float)
    sigma = 0.1
    m = 18.0 + rng.normal(0, sigma, n)
    out = variability.compute_band(t, m, np.full(n, sigma))
    assert out["StetsonK"] == pytest.approx(np.sqrt(2 / np.pi), abs=0.01)
    assert out["AndersonDarling"] < 0.9
    assert out["Beyond1Std"] == pytest.approx(0.3173, abs=0.02)
    assert out["Eta_e"] == pytest.approx(2.0, abs=0.1)  # von Neumann ratio of white noise
    assert out["Autocor_length"] == 1
    assert out["Con"] < 0.002
    assert 0.001 < out["Pvar"] < 0.999
    assert abs(out["ExcessVar"]) < 5 * sigma**2 * np.sqrt(2 / n) / 18.0**2
    assert abs(out["LinearTrend"]) < 1e-5
    uniform = 18.0 + rng.uniform(-0.3, 0.3, n)
    assert variability.compute_band(t, uniform, np.full(n, sigma))["AndersonDarling"] > 0.999


def test_linear_trend():
    t = np.linspace(58000, 58300, 60)
    m = 19.0 - 0.004 * (t - t[0])
    out = variability.compute_band(t, m, np.full(60, 0.05))
    assert out["LinearTrend"] == pytest.approx(-0.004, rel=1e-9)
    assert out["MaxSlope"] == pytest.approx(0.004, rel=1e-6)
    assert out["PairSlopeTrend"] == pytest.approx(-29 / 30)
    assert out["Autocor_length"] > 10


def test_median_brp_is_strict_like_fats():
    t = np.arange(6.0)
    out = variability.compute_band(t, np.array([1.0, 2, 3, 4, 5, 6]), np.full(6, 0.1))
    assert out["MedianBRP"] == 0.0  # 3 and 4 sit exactly on median +- range/10


def test_order_and_repeated_times():
    t, m, e = _irregular(40, 7)
    ordered = variability.compute_band(t, m, e)
    shuffled = np.random.default_rng(0).permutation(40)
    assert variability.compute_band(t[shuffled], m[shuffled], e[shuffled]) == ordered
    repeated = variability.compute_band(np.r_[t, t[5]], np.r_[m, m[5] + 1], np.r_[e, e[5]])
    assert repeated == ordered
