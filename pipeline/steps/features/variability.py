"""FATS variability statistics of one band, as ALeRCE computes them.

Definitions follow FATS (Nun et al. 2015, arXiv:1506.00010) in the form of ALeRCE's turbo-fats
(``lc_classifier/features/turbofats/FeatureFunctionLib.py``; Sánchez-Sáez et al. 2021, AJ 161, 141),
including its choices of population (ddof=0) standard deviation and strict inequalities:

Amplitude         half of (median of the brightest ceil(5% N) - median of the faintest ceil(5% N))
AndersonDarling   1 / (1 + exp(-10 (A2 - 0.3))), A2 the Anderson-Darling normality statistic
Autocor_length    first lag k with ACF(k) < 1/e (ACF over the index, statsmodels ``acf``), else N
Beyond1Std        fraction of points beyond one (ddof=1) std around the 1/err^2-weighted mean
Con               fraction of 3-point runs all beyond mean +- 2 std
Eta_e             sum(w dm^2) / sum(w) / var(m), w = 1 / dt^2 (ALeRCE's normalisation)
Gskew             median(m <= p3) + median(m >= p97) - 2 median(m)
MaxSlope          max |dm/dt| between consecutive points
Meanvariance      std / mean;  MedianBRP: fraction within (max-min)/10 of the median
PairSlopeTrend    (#rising - #non-rising of the last 29 differences) / 30
PercentAmplitude  max |m - median| / median;  Q31: p75 - p25 (linear percentiles)
Rcs               range of cumsum(m - mean) / (N std);  Skew: biased g1;  SmallKurtosis: FATS form
StetsonK          sum|d| / sqrt(N sum d^2), d = (m - weighted mean) / err
Pvar              chi2 CDF of sum((m - mean)^2 / err^2) with N-1 dof (Sánchez-Sáez 2021 eq. 1)
ExcessVar         (sum((m - mean)^2 - err^2) / N) / mean^2 (Sánchez-Sáez 2021 eq. 2)
LinearTrend       least-squares slope of m(t) [mag/d]

Mean, MedianAbsDev, MaxSlope, StetsonK, LinearTrend and AndersonDarling's A2 come from the Rust
``light-curve`` package (same definitions; its Anderson-Darling value carries the (1 + 4/N - 25/N^2)
small-sample factor, divided out here); the rest is numpy.

Minimum points: 6 per band for every feature (turbo-fats returns nothing for N <= 5); fewer ->
Missing(too_few_points). Input is sorted by time; non-finite rows and repeated times (after the
first) are dropped, as ALeRCE drops duplicate epochs. A feature undefined on the data (e.g. the
kurtosis of a flat light curve) is Missing(not_finite).
"""
import math

import light_curve as lc
import numpy as np
from scipy.special import chdtr

from pipeline.steps.features.base import TOO_FEW_POINTS, all_missing, value_or_missing

GROUP = "variability"
PER_BAND = True
MIN_POINTS = 6
FEATURES = {
    "Amplitude": "half the difference of the medians of the top and bottom 5% magnitudes [mag]",
    "AndersonDarling": "logistic transform of the Anderson-Darling normality statistic",
    "Autocor_length": "first lag (in points) where the autocorrelation falls below 1/e",
    "Beyond1Std": "fraction of points beyond 1 std of the weighted mean",
    "Con": "fraction of 3 consecutive points beyond 2 std of the mean",
    "Eta_e": "time-weighted von Neumann ratio (ALeRCE normalisation)",
    "Gskew": "median-based skewness: med(m<=p3) + med(m>=p97) - 2 med(m) [mag]",
    "MaxSlope": "maximum |dm/dt| between consecutive points [mag/d]",
    "Mean": "mean magnitude [mag]",
    "Meanvariance": "std / mean of the magnitudes",
    "MedianAbsDev": "median absolute deviation from the median [mag]",
    "MedianBRP": "fraction of points within (max-min)/10 of the median",
    "PairSlopeTrend": "rising minus non-rising fraction of the last 30 points",
    "PercentAmplitude": "max |m - median| / median",
    "Q31": "inter-quartile range p75 - p25 [mag]",
    "Rcs": "range of the cumulative sum of deviations",
    "Skew": "skewness (biased g1)",
    "SmallKurtosis": "small-sample kurtosis",
    "Std": "standard deviation (ddof=0) [mag]",
    "StetsonK": "Stetson K robust kurtosis index",
    "Pvar": "probability that the source is variable (chi2 CDF)",
    "ExcessVar": "normalised excess variance",
    "LinearTrend": "slope of a straight-line fit m(t) [mag/d]",
}

_LC_EXTRACTOR = lc.Extractor(
    lc.Mean(),
    lc.MedianAbsoluteDeviation(),
    lc.MaximumSlope(),
    lc.StetsonK(),
    lc.LinearTrend(),  # -> slope, slope sigma, noise
    lc.AndersonDarlingNormal(),
)
_INV_E = math.exp(-1.0)


def prepare(t, mag, err):
    """float64 arrays sorted by time, without non-finite rows nor repeated times."""
    t = np.asarray(t, dtype=float)
    mag = np.asarray(mag, dtype=float)
    err = np.asarray(err, dtype=float)
    keep = np.isfinite(t) & np.isfinite(mag) & np.isfinite(err)
    if not keep.all():
        t, mag, err = t[keep], mag[keep], err[keep]
    if t.size > 1 and not np.all(np.diff(t) > 0):
        order = np.argsort(t, kind="stable")
        t, mag, err = t[order], mag[order], err[order]
        new = np.empty(t.size, dtype=bool)
        new[0] = True
        np.greater(t[1:], t[:-1], out=new[1:])
        t, mag, err = t[new], mag[new], err[new]
    return np.ascontiguousarray(t), np.ascontiguousarray(mag), np.ascontiguousarray(err)


def _autocor_length(dev, n):
    """statsmodels ``acf(fft=False)`` on the index: first lag below 1/e, else N."""
    acov = np.correlate(dev, dev, mode="full")[n - 1:]
    if not acov[0] > 0:
        return float(n)
    below = np.flatnonzero(acov < _INV_E * acov[0])
    return float(below[0]) if below.size else float(n)


def compute_band(t, mag, err):
    """FATS/ALeRCE variability features of one band: {base name: float or Missing}."""
    t, m, e = prepare(t, mag, err)
    if m.size < MIN_POINTS:
        return all_missing(FEATURES, TOO_FEW_POINTS)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        values = _compute(t, m, e)
    return {name: value_or_missing(value) for name, value in values.items()}


def _median_sorted(values, start, stop):
    """Median of the already sorted values[start:stop] (as np.median)."""
    k = stop - start
    mid = start + k // 2
    return values[mid] if k % 2 else 0.5 * (values[mid - 1] + values[mid])


def _percentile_sorted(values, q):
    """np.percentile(values, q) (linear interpolation) of already sorted values."""
    position = q / 100.0 * (values.size - 1)
    low = int(position)
    frac = position - low
    if frac == 0.0 or low + 1 >= values.size:
        return values[low]
    return values[low] + (values[low + 1] - values[low]) * frac


def _compute(t, m, e):
    n = m.size

    (mean, mad, max_slope, stetson_k, slope, _slope_sigma, _noise,
     ad_unbiased) = _LC_EXTRACTOR(t, m, e, fill_value=np.nan)

    dev = m - mean
    var = np.dot(dev, dev) / n
    std = math.sqrt(var)
    ordered = np.sort(m)
    median = _median_sorted(ordered, 0, n)
    p3, p25, p75, p97 = (_percentile_sorted(ordered, q) for q in (3.0, 25.0, 75.0, 97.0))
    k5 = int(math.ceil(0.05 * n))
    amplitude = (_median_sorted(ordered, n - k5, n) - _median_sorted(ordered, 0, k5)) / 2.0

    a2 = ad_unbiased / (1.0 + 4.0 / n - 25.0 / n**2)
    anderson = 1.0 / (1.0 + math.exp(-10.0 * (a2 - 0.3))) if np.isfinite(a2) else np.nan

    inv_var = 1.0 / (e * e)
    weighted_mean = np.dot(inv_var, m) / inv_var.sum()
    wstd = math.sqrt(np.sum((m - weighted_mean) ** 2) / (n - 1))
    beyond = np.count_nonzero(np.abs(m - weighted_mean) > wstd) / n

    outside = np.abs(dev) > 2.0 * std
    con = np.count_nonzero(outside[:-2] & outside[1:-1] & outside[2:]) / (n - 2)

    dt2 = np.diff(t) ** 2
    dm2 = np.diff(m) ** 2
    w = 1.0 / dt2
    eta_e = (np.dot(w, dm2) / w.sum()) / var if var > 0 else np.nan

    n_low = int(np.searchsorted(ordered, p3, side="right"))  # ordered <= p3 is a prefix
    high_start = int(np.searchsorted(ordered, p97, side="left"))  # ordered >= p97 a suffix
    gskew = (_median_sorted(ordered, 0, n_low) + _median_sorted(ordered, high_start, n)
             - 2.0 * median)
    half_range = (ordered[-1] - ordered[0]) / 10.0
    median_brp = np.count_nonzero(np.abs(m - median) < half_range) / n
    last = np.diff(m[-30:])
    pair_slope = (np.count_nonzero(last > 0) - np.count_nonzero(last <= 0)) / 30.0
    percent_amplitude = np.max(np.abs(m - median)) / median
    if std > 0:
        cumsum = np.cumsum(dev) / (n * std)
        rcs = cumsum.max() - cumsum.min()
        z = dev / std
        z2 = z * z
        skew = np.dot(z2, z) / n
        fourth = np.dot(z2, z2)
        kurtosis = (n * (n + 1) / ((n - 1) * (n - 2) * (n - 3)) * fourth
                    - 3.0 * (n - 1) ** 2 / ((n - 2) * (n - 3)))
    else:
        rcs = skew = kurtosis = np.nan
    chi2 = np.dot(dev * dev, inv_var)
    pvar = chdtr(n - 1, chi2)
    excess_var = (var - np.mean(e * e)) / mean**2

    return {
        "Amplitude": amplitude,
        "AndersonDarling": anderson,
        "Autocor_length": _autocor_length(dev, n),
        "Beyond1Std": beyond,
        "Con": con,
        "Eta_e": eta_e,
        "Gskew": gskew,
        "MaxSlope": max_slope,
        "Mean": mean,
        "Meanvariance": std / mean,
        "MedianAbsDev": mad,
        "MedianBRP": median_brp,
        "PairSlopeTrend": pair_slope,
        "PercentAmplitude": percent_amplitude,
        "Q31": p75 - p25,
        "Rcs": rcs,
        "Skew": skew,
        "SmallKurtosis": kurtosis,
        "Std": std,
        "StetsonK": stetson_k,
        "Pvar": pvar,
        "ExcessVar": excess_var,
        "LinearTrend": slope,
    }
