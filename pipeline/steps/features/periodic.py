"""Periodogram features: multiband period, its significance, power ratios, harmonic fit, folded shape.

ALeRCE's definitions (``lc_classifier`` ``PeriodExtractor``, ``PowerRateExtractor``,
``HarmonicsExtractor``, ``FoldedKimExtractor``; Sánchez-Sáez et al. 2021, AJ 161 141, sect. 3.2.2):

* Periodogram: P4J's multiband MHAOV with one harmonic (Schwarzenberg-Czerny 1996, ApJ 460 L107)
  over the bands with more than five detections. For band ``b`` and frequency ``f``, ``aov_b(f)`` is
  the weighted (``1 / sigma^2``) sum of squares that a fit of ``c + a cos(2 pi f t) + s sin(2 pi f t)``
  explains beyond the weighted mean, ``wvar_b`` the weighted sum of squares about the mean and
  ``d2_b = N_b - 3``. Multiband: ``per(f) = sum d2_b * sum aov_b / (2 * (sum wvar_b - sum aov_b))``;
  band ``b``: ``d2_b * aov_b / (2 * (wvar_b - aov_b))``.
* Grid (P4J ``frequency_grid_evaluation(fmin=1e-3, fmax=20, fresolution=1e-3)``): ``f = j * 1e-3``
  c/d, ``j = 1..19999``. Refinement (``finetune_best_frequencies(n_local_optima=10,
  fresolution=1e-4)`` of ALeRCE's P4J): each of the ten highest strict local maxima is re-evaluated
  at 20 frequencies spaced evenly from its left to its right grid neighbour; where the fine maximum
  is higher it replaces that grid point (frequency, multiband and band powers). Fewer than ten local maxima: no period (P4J then fails and ALeRCE gives NaN).
* ``Multiband_period``: ``1 / f`` of the highest refined maximum. ``Period_band_b``: ``1 / f`` at the
  maximum of band ``b``'s power over the same (refined) array; ``delta_period_b`` their difference.
* ``PPE``: ``1 - H / log 100`` with ``H`` the entropy of the 100 highest powers ``+ 0.01``,
  normalised to sum 1. ``Power_rate_X``: power at the grid point nearest to ``1 / (X * period)``
  over the power at the period.
* ``Harmonics_*_b`` (every band with a detection, once there is a period): weighted least squares,
  through the pseudo-inverse as ALeRCE (the minimum-norm solution below 15 points), of
  ``c + sum_k a_k cos(k w t) + b_k sin(k w t)``, k = 1..7, ``w = 2 pi / period``, ``t`` the MJD,
  weights ``1 / (sigma + 0.01)``; amplitude ``sqrt(a_k^2 + b_k^2)``, phase
  ``phi_k - k phi_1 mod 2 pi`` (``phi_k = atan2(b_k, a_k)``), ``mse`` the unweighted mean squared residual.
* ``Psi_CS_b``, ``Psi_eta_b`` (every band with a detection, once there is a period): range of the
  cumulative sum and von Neumann eta of the magnitudes sorted by phase folded at twice the period
  (Kim et al. 2014, UPSILoN).

Where we differ from P4J on purpose: P4J evaluates in float32, which at MJD ~ 59000 rounds the
times to ~4 ms and the phase ``mjd * f`` to ~0.06 cycles at 20 c/d; we work in float64 on times
relative to the first detection. The result is the same periodogram without that noise (the parity
test measures how often the best period still agrees). A band with constant magnitudes adds its
``d2`` but no power (P4J's band power is then 0/0) and has no band period.

Speed: a numba kernel evaluates the whole grid; on the uniform grid
``exp(2 pi i j df t) = exp(2 pi i a B df t) exp(2 pi i b df t)`` (``j = a B + b``), so it needs
~(N/B + B) sines per point instead of N, then the sums ``Σ w z``, ``Σ w y z``, ``Σ w z²`` and the
closed-form weighted sinusoid fit (Zechmeister & Kürster 2009) per frequency.
"""
import math

import numba
import numpy as np

from pipeline.steps.features.base import NO_DATA, NO_PERIOD, TOO_FEW_POINTS, Missing, all_missing

GROUP = "periodic"
PER_BAND = False  # names below already carry their band suffix; BAND_OF says which band

BANDS = (1, 2)
F_STEP = 1e-3  # c/d, coarse grid step and lowest frequency (P4J fmin = fresolution = 1e-3)
FMAX = 20.0  # c/d, exclusive
FINE_STEP = 1e-4
N_LOCAL_OPTIMA = 10
MIN_POINTS_BAND = 6  # ALeRCE: a band enters the periodogram with more than five detections
N_HARMONICS = 7
ERROR_FLOOR = 0.01  # mag, added to the errors of the harmonic fit (ALeRCE)
PPE_TOP = 100
POWER_RATE_FACTORS = (("1/4", 0.25), ("1/3", 1 / 3), ("1/2", 0.5), ("2", 2.0), ("3", 3.0), ("4", 4.0))

_MULTIBAND = {
    "Multiband_period": "best period of the multiband periodogram [d]",
    "PPE": "periodogram pseudo entropy: 1 - entropy of the 100 highest powers / log 100",
}
for _band in BANDS:
    _MULTIBAND[f"Period_band_{_band}"] = f"best period of the band-{_band} periodogram [d]"
    _MULTIBAND[f"delta_period_{_band}"] = f"|Multiband_period - Period_band_{_band}| [d]"
for _label, _ in POWER_RATE_FACTORS:
    _MULTIBAND[f"Power_rate_{_label}"] = f"periodogram power at {_label} x period / power at the period"

_PER_BAND = {f"Harmonics_mag_{k}": f"amplitude of harmonic {k} of a 7-harmonic fit at the period [mag]"
             for k in range(1, N_HARMONICS + 1)}
_PER_BAND.update({f"Harmonics_phase_{k}": f"phase of harmonic {k} minus {k} x phase of harmonic 1 [rad]"
                  for k in range(2, N_HARMONICS + 1)})
_PER_BAND["Harmonics_mse"] = "mean squared residual of the 7-harmonic fit [mag^2]"
_PER_BAND["Psi_CS"] = "range of the cumulative sum of magnitudes folded at twice the period"
_PER_BAND["Psi_eta"] = "von Neumann eta of magnitudes folded at twice the period"

FEATURES = dict(_MULTIBAND)
BAND_OF = {name: None for name in _MULTIBAND}
BAND_OF.update({f"Period_band_{b}": b for b in BANDS})
BAND_OF.update({f"delta_period_{b}": b for b in BANDS})
for _band in BANDS:
    for _name, _meaning in _PER_BAND.items():
        FEATURES[f"{_name}_{_band}"] = _meaning
        BAND_OF[f"{_name}_{_band}"] = _band

N_GRID = len(np.arange(F_STEP, FMAX, F_STEP, dtype=np.float32))  # 19999, as P4J's grid
GRID_FREQ = F_STEP * np.arange(1, N_GRID + 1)  # c/d
_BLOCK = 128  # j = a * _BLOCK + b
_N_FINE = 2 * int(np.ceil(F_STEP / FINE_STEP))  # 20 points from the left to the right neighbour
_FINE_OFFSETS = np.linspace(-F_STEP, F_STEP, _N_FINE)


class _Band:
    """One band's data for the periodogram: times (relative), centred magnitudes, weights."""

    def __init__(self, t, mag, err):
        inv_var = 1.0 / err ** 2
        self.total_weight = float(inv_var.sum())
        self.w = inv_var / self.total_weight
        self.y = mag - float(self.w @ mag) if np.ptp(mag) > 0 else np.zeros_like(mag)
        self.wvar = float(inv_var @ (self.y * self.y))
        self.t = t
        self.d2 = len(t) - 3.0


@numba.njit(cache=True, fastmath=True)
def _grid_aov_kernel(t, w, wy, total_weight, wvar, step, n_grid, block):
    """``aov`` at ``j * step``, ``j = 1..n_grid``.

    Phasors as (outer block) x (inner offset) products; from the sums ``Σ w z``, ``Σ w y z`` and
    ``Σ w z²`` (``w`` summing to 1, ``y`` of zero weighted mean) the weighted offset + sinusoid fit in
    closed form (Zechmeister & Kürster 2009, eq. 5-13).
    """
    n = t.shape[0]
    n_outer = (n_grid + block) // block
    inner_cos = np.empty((n, block))
    inner_sin = np.empty((n, block))
    for i in range(n):
        for b in range(block):
            angle = 2.0 * math.pi * step * b * t[i]
            inner_cos[i, b] = math.cos(angle)
            inner_sin[i, b] = math.sin(angle)
    s1r, s1i = np.empty(block), np.empty(block)  # Σ w z
    s2r, s2i = np.empty(block), np.empty(block)  # Σ w y z
    s3r, s3i = np.empty(block), np.empty(block)  # Σ w z²
    out = np.empty(n_grid)
    for a in range(n_outer):
        s1r[:] = 0.0
        s1i[:] = 0.0
        s2r[:] = 0.0
        s2i[:] = 0.0
        s3r[:] = 0.0
        s3i[:] = 0.0
        for i in range(n):
            angle = 2.0 * math.pi * step * (a * block) * t[i]
            oc, os = math.cos(angle), math.sin(angle)
            wi, wyi = w[i], wy[i]
            ic, is_ = inner_cos[i], inner_sin[i]
            for b in range(block):
                zr = oc * ic[b] - os * is_[b]
                zi = oc * is_[b] + os * ic[b]
                s1r[b] += wi * zr
                s1i[b] += wi * zi
                s2r[b] += wyi * zr
                s2i[b] += wyi * zi
                s3r[b] += wi * (zr * zr - zi * zi)
                s3i[b] += wi * (2.0 * zr * zi)
        for b in range(block):
            j = a * block + b
            if j < 1 or j > n_grid:
                continue
            c, s = s1r[b], s1i[b]
            cc = 0.5 * (1.0 + s3r[b]) - c * c
            ss = 0.5 * (1.0 - s3r[b]) - s * s
            cs = 0.5 * s3i[b] - c * s
            yc, ys = s2r[b], s2i[b]
            det = cc * ss - cs * cs
            value = 0.0
            if det > 1e-12:
                value = (ss * yc * yc + cc * ys * ys - 2.0 * cs * yc * ys) / det * total_weight
                value = min(max(value, 0.0), wvar)
            out[j - 1] = value
    return out


def _grid_aov(band):
    """``aov`` of one band on the whole coarse grid."""
    return _grid_aov_kernel(band.t, band.w, band.w * band.y, band.total_weight, band.wvar,
                            F_STEP, N_GRID, _BLOCK)


@numba.njit(cache=True, fastmath=True)
def _aov_at_kernel(t, w, wy, total_weight, wvar, freq):
    """``aov`` at arbitrary frequencies (direct sums)."""
    out = np.empty(freq.shape[0])
    for k in range(freq.shape[0]):
        s1r = s1i = s2r = s2i = s3r = s3i = 0.0
        for i in range(t.shape[0]):
            angle = 2.0 * math.pi * freq[k] * t[i]
            zr, zi = math.cos(angle), math.sin(angle)
            s1r += w[i] * zr
            s1i += w[i] * zi
            s2r += wy[i] * zr
            s2i += wy[i] * zi
            s3r += w[i] * (zr * zr - zi * zi)
            s3i += w[i] * (2.0 * zr * zi)
        cc = 0.5 * (1.0 + s3r) - s1r * s1r
        ss = 0.5 * (1.0 - s3r) - s1i * s1i
        cs = 0.5 * s3i - s1r * s1i
        det = cc * ss - cs * cs
        value = 0.0
        if det > 1e-12:
            value = (ss * s2r * s2r + cc * s2i * s2i - 2.0 * cs * s2r * s2i) / det * total_weight
            value = min(max(value, 0.0), wvar)
        out[k] = value
    return out


def _aov_at(band, freq):
    """``aov`` of one band at arbitrary frequencies."""
    freq = np.asarray(freq, dtype=float)
    return _aov_at_kernel(band.t, band.w, band.w * band.y, band.total_weight, band.wvar, freq.ravel()).reshape(freq.shape)


def f_statistic(explained, bands):
    """P4J's multiband MHAOV power from ``explained`` = the bands' summed ``aov`` (any shape)."""
    total = sum(b.wvar for b in bands)
    d2 = sum(b.d2 for b in bands)
    return d2 * explained / (2.0 * np.maximum(total - explained, 1e-12 * total))


@numba.njit(cache=True)
def _top_local_maxima(x, k):
    """Indices of the ``k`` highest strict local maxima of ``x``, highest first (fewer if there are fewer)."""
    top = np.empty(k, dtype=np.int64)
    n = 0
    for i in range(1, x.shape[0] - 1):
        if not (x[i] > x[i - 1] and x[i] > x[i + 1]):
            continue
        if n == k and not x[i] > x[top[k - 1]]:
            continue
        j = n if n < k else k - 1  # insert, keeping the list sorted by value (earlier index first on ties)
        while j > 0 and x[i] > x[top[j - 1]]:
            top[j] = top[j - 1]
            j -= 1
        top[j] = i
        n = min(n + 1, k)
    return top[:n]


def mhaov_periodogram(bands):
    """ALeRCE's refined multiband MHAOV periodogram of ``bands`` (list of ``_Band``).

    Returns (freq, explained, band_aov, best_index), or None where there are fewer than ten local
    maxima. ``explained`` is the bands' summed ``aov``: P4J's multiband power is
    ``f_statistic(explained)`` and a band's power increases with its ``aov`` (None for a constant
    band), so maxima, refinement and ranking are done on them and the F statistic only where a
    feature reads its value.
    """
    varying = [b for b in bands if b.wvar > 0]
    aov = [_grid_aov(b) for b in varying]
    explained = aov[0] + aov[1] if len(aov) == 2 else aov[0].copy()
    top = _top_local_maxima(explained, N_LOCAL_OPTIMA)
    if len(top) < N_LOCAL_OPTIMA:
        return None
    freq = GRID_FREQ.copy()
    fine = freq[top][:, None] + _FINE_OFFSETS  # (10, 20)
    fine_aov = [_aov_at(b, fine) for b in varying]
    fine_explained = sum(fine_aov)
    rows = np.arange(len(top))
    best_fine = np.argmax(fine_explained, axis=1)
    better = fine_explained[rows, best_fine] > explained[top]
    replaced = top[better]
    freq[replaced] = fine[rows, best_fine][better]
    explained[replaced] = fine_explained[rows, best_fine][better]
    for band_aov, band_fine in zip(aov, fine_aov):
        band_aov[replaced] = band_fine[rows, best_fine][better]
    band_aov = [aov[varying.index(b)] if b.wvar > 0 else None for b in bands]
    best = top[int(np.argmax(explained[top]))]
    return freq, explained, band_aov, best


@numba.njit(cache=True)
def _top_values(values, k):
    """The ``k`` largest of ``values`` (any order), in one pass."""
    top = values[:k].copy()
    low = int(np.argmin(top))
    for x in values[k:]:
        if x > top[low]:
            top[low] = x
            low = int(np.argmin(top))
    return top


def _ppe(per_top):
    """ALeRCE's significance: 1 - entropy of the top 100 powers (+ 0.01, normalised) / log(100)."""
    top = per_top + 1e-2
    top = top / top.sum()
    return float(1 - (-top * np.log(top)).sum() / np.log(PPE_TOP))


def _power_rates(freq, power_at, best):
    """Power at the grid point nearest 1 / (factor x period) over the power at the period (ALeRCE).

    ``freq`` stays sorted: a refined frequency lies between its grid neighbours.
    """
    out = {}
    at_period = power_at(best)
    for label, factor in POWER_RATE_FACTORS:
        wanted = freq[best] / factor
        i = int(np.searchsorted(freq, wanted))
        if i >= len(freq):
            i = len(freq) - 1
        elif i > 0 and wanted <= 0.5 * (freq[i - 1] + freq[i]):
            i -= 1
        out[f"Power_rate_{label}"] = float(power_at(i) / at_period) if at_period > 0 else Missing(NO_PERIOD)
    return out


@numba.njit(cache=True)
def _harmonics_kernel(t, mag, err, period, n_harmonics, error_floor):
    n = t.shape[0]
    n_coeffs = 2 * n_harmonics + 1
    design = np.empty((n, n_coeffs))
    weighted = np.empty((n, n_coeffs))
    target = np.empty(n)
    omega = 2.0 * math.pi / period
    for i in range(n):
        design[i, 0] = 1.0
        for k in range(1, n_harmonics + 1):
            design[i, k] = math.cos(omega * k * t[i])
            design[i, n_harmonics + k] = math.sin(omega * k * t[i])
        inv_err = 1.0 / (err[i] + error_floor)
        for c in range(n_coeffs):
            weighted[i, c] = design[i, c] * inv_err
        target[i] = mag[i] * inv_err
    rcond = np.finfo(np.float64).eps * max(n, n_coeffs)  # numpy's lstsq default
    coeffs = np.linalg.lstsq(weighted, target, rcond)[0]
    mse = 0.0
    for i in range(n):
        fitted = 0.0
        for c in range(n_coeffs):
            fitted += design[i, c] * coeffs[c]
        mse += (fitted - mag[i]) ** 2
    return coeffs, mse / n


def harmonics(t, mag, err, period):
    """ALeRCE's 7-harmonic weighted fit: (magnitudes[7], relative phases[6], mse).

    Minimum-norm least squares (as ALeRCE's pseudo-inverse) where there are fewer than 15 points.
    """
    coeffs, mse = _harmonics_kernel(np.ascontiguousarray(t, dtype=float), np.ascontiguousarray(mag, dtype=float),
                                    np.ascontiguousarray(err, dtype=float), float(period), N_HARMONICS, ERROR_FLOOR)
    k = np.arange(1, N_HARMONICS + 1)
    a, b = coeffs[1:N_HARMONICS + 1], coeffs[N_HARMONICS + 1:]
    amplitude = np.sqrt(a ** 2 + b ** 2)
    phase = np.arctan2(b, a)
    phase = (phase - phase[0] * k)[1:] % (2 * np.pi)
    return amplitude, phase, float(mse)


@numba.njit(cache=True)
def _folded_kim_kernel(t, mag, period):
    folded = np.mod(t, 2 * period) / (2 * period)
    sorted_mags = mag[np.argsort(folded, kind="mergesort")]
    n = sorted_mags.shape[0]
    mean = sorted_mags.mean()
    sigma = np.sqrt(np.mean((sorted_mags - mean) ** 2))
    if not sigma > 0:
        return np.nan, np.nan
    s = np.cumsum(sorted_mags - mean) / (n * sigma)
    eta = np.sum(np.diff(sorted_mags) ** 2) / ((n - 1) * sigma ** 2)
    return s.max() - s.min(), eta


def folded_kim(t, mag, period):
    """Psi_CS, Psi_eta of the light curve folded at twice the period (UPSILoN, Kim et al. 2014)."""
    psi_cs, psi_eta = _folded_kim_kernel(np.asarray(t, dtype=float), np.asarray(mag, dtype=float), float(period))
    if np.isnan(psi_cs):
        return Missing(NO_PERIOD), Missing(NO_PERIOD)
    return float(psi_cs), float(psi_eta)


def _band_missing(band, reason):
    return all_missing([f"{name}_{band}" for name in _PER_BAND], reason)


def compute(bands):
    """Periodic features of one object.

    ``bands``: {fid: (t, mag, err)} (MJD, magnitude, error arrays; any order). Returns
    {feature name (suffixed where per band): float or Missing}.
    """
    data = {}
    for fid, (t, mag, err) in bands.items():
        t, mag, err = (np.asarray(a, dtype=float) for a in (t, mag, err))
        ok = np.isfinite(t) & np.isfinite(mag) & np.isfinite(err) & (err > 0)
        t, mag, err = t[ok], mag[ok], err[ok]
        order = np.argsort(t, kind="stable")
        data[fid] = (t[order], mag[order], err[order])
    used = [fid for fid in BANDS if len(data.get(fid, ((),))[0]) >= MIN_POINTS_BAND]
    if not used:
        return all_missing(FEATURES, TOO_FEW_POINTS)
    t_ref = min(data[fid][0][0] for fid in used)
    prepared = [_Band(data[fid][0] - t_ref, data[fid][1], data[fid][2]) for fid in used]
    if not any(b.wvar > 0 for b in prepared):
        return all_missing(FEATURES, NO_PERIOD)
    periodogram = mhaov_periodogram(prepared)
    if periodogram is None:
        return all_missing(FEATURES, NO_PERIOD)
    freq, explained, band_aov, best = periodogram
    period = 1.0 / freq[best]

    out = {"Multiband_period": period,
           "PPE": _ppe(f_statistic(_top_values(explained, PPE_TOP), prepared))}
    for fid in BANDS:
        n = len(data.get(fid, ((),))[0])
        power = band_aov[used.index(fid)] if fid in used else None
        if power is None:
            reason = NO_DATA if n == 0 else (TOO_FEW_POINTS if n < MIN_POINTS_BAND else NO_PERIOD)
            out[f"Period_band_{fid}"] = out[f"delta_period_{fid}"] = Missing(reason)
            continue
        band_period = 1.0 / freq[int(np.argmax(power))]
        out[f"Period_band_{fid}"] = band_period
        out[f"delta_period_{fid}"] = abs(period - band_period)
    out.update(_power_rates(freq, lambda i: f_statistic(explained[i], prepared), best))

    for fid in BANDS:
        if fid not in data or len(data[fid][0]) == 0:
            out.update(_band_missing(fid, NO_DATA))
            continue
        t, mag, err = data[fid]
        amplitude, phase, mse = harmonics(t, mag, err, period)
        for k in range(1, N_HARMONICS + 1):
            out[f"Harmonics_mag_{k}_{fid}"] = float(amplitude[k - 1])
        for k in range(2, N_HARMONICS + 1):
            out[f"Harmonics_phase_{k}_{fid}"] = float(phase[k - 2])
        out[f"Harmonics_mse_{fid}"] = mse
        psi_cs, psi_eta = folded_kim(t, mag, period)
        out[f"Psi_CS_{fid}"] = psi_cs
        out[f"Psi_eta_{fid}"] = psi_eta
    return out
