"""Periodogram features: multiband period, its significance, power ratios, harmonic fit, folded shape.

Follows ALeRCE's ``lc_classifier`` (Sánchez-Sáez et al. 2021, AJ 161 141, sect. 3.2.2):

* ``Multiband_period``: best period of a multiband periodogram over the bands with more than five
  detections. ALeRCE used P4J's MHAOV (one harmonic); we use a Lomb-Scargle periodogram per band
  (light-curve's Rust FFT implementation, ``fast=True``) combined as a chi-squared reduction,
  ``P(f) = sum_b W_b P_b(f) / sum_b W_b`` with ``W_b = sum((m - <m>)^2 / sigma^2)`` (the weighting of
  light-curve's own multiband ``'chi2'`` normalisation; ``P_b`` is the "standard" normalised power,
  the fraction of the band's variance explained by a sinusoid). This is the one-harmonic, shared
  frequency, independent per-band mean and amplitude model that MHAOV(nharmonics=1) also scores.
* Grid: frequencies ``j * 20 / 2**GRID_LOG2`` c/d, ``j >= 1`` (periods 0.05 d to 1/step), step
  ``20 / 2**14 = 1.2e-3`` c/d, close to ALeRCE's ``fmin=1e-3, fmax=20, fresolution=1e-3``. Like
  ALeRCE (``finetune_best_frequencies(n_local_optima=10)``) the ten highest local maxima of the
  combined spectrum, and the three highest of each band's, are refined on a grid five times finer
  (direct evaluation, all candidates in one vectorised call) and a parabola through the best fine point.
* ``PPE``: ALeRCE's "periodogram pseudo entropy": ``1 - H / log(100)`` with ``H`` the entropy of the
  100 highest (coarse-grid) powers ``+ 0.01``, normalised to sum 1.
* ``Period_band_b``: best period of band ``b``'s own periodogram; ``delta_period_b`` =
  ``|Multiband_period - Period_band_b|``.
* ``Power_rate_X``: combined power at period ``X * Multiband_period`` over the power at the period,
  evaluated directly at that frequency (ALeRCE took the nearest coarse-grid value and clamped to
  the grid edge).
* ``Harmonics_mag_k_b``, ``Harmonics_phase_k_b``, ``Harmonics_mse_b``: weighted least-squares fit of
  ``c + sum_k a_k cos(k w t) + b_k sin(k w t)``, k = 1..7, at ``w = 2 pi / Multiband_period``, weights
  ``1 / (sigma + 0.01)``; magnitude ``sqrt(a_k^2 + b_k^2)``, phase ``phi_k - k phi_1 mod 2 pi`` with
  ``phi_k = atan2(b_k, a_k)`` (phases relative to the first harmonic), ``mse`` the unweighted mean
  squared residual. ALeRCE used a pseudo-inverse also when the fit is underdetermined; we need
  ``2 * 7 + 1 = 15`` points, else the harmonics are missing (too few points).
* ``Psi_CS_b``, ``Psi_eta_b``: range of the cumulative sum and von Neumann eta of the magnitudes
  sorted by phase folded at twice the period (Kim et al. 2014, UPSILoN; ALeRCE ``FoldedKimExtractor``).
"""
import numpy as np
import light_curve as lc

from .base import NO_DATA, NO_PERIOD, TOO_FEW_POINTS, Missing, all_missing

GROUP = "periodic"
PER_BAND = False  # names below already carry their band suffix; BAND_OF says which band

BANDS = (1, 2)
FMAX = 20.0  # cycles/day: shortest period 0.05 d
GRID_LOG2 = 14  # coarse grid: 2**14 steps of 1.2e-3 c/d
N_PEAKS = 10  # local maxima of the combined spectrum that are refined (ALeRCE: 10)
N_PEAKS_BAND = 3  # local maxima of each band's spectrum that are refined
FINE_FACTOR = 5  # fine grid: step = coarse step / 5, over +-1 coarse step
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

_COARSE_FREQ = np.linspace(0.0, FMAX, 2 ** GRID_LOG2 + 1)  # c/d
_COARSE_STEP = _COARSE_FREQ[1]
_periodogram = None


def _coarse_periodogram():
    """light-curve's FFT periodogram on the fixed grid (built once: building it costs milliseconds)."""
    global _periodogram
    if _periodogram is None:
        _periodogram = lc.Periodogram(peaks=1, fast=True, freqs=2 * np.pi * _COARSE_FREQ,
                                      normalization="standard")
    return _periodogram


def lomb_scargle(t, y, freq):
    """Classical Lomb-Scargle power, standard normalisation (fraction of variance), at ``freq`` (c/d).

    The same quantity as light-curve's ``Periodogram(normalization='standard')`` (Scargle 1982).
    """
    y = y - y.mean()
    yy = y @ y
    if yy <= 0:
        return np.zeros(len(freq))
    wt = 2 * np.pi * np.asarray(freq, dtype=float)[:, None] * t
    cos_wt, sin_wt = np.cos(wt), np.sin(wt)  # the only trigonometric calls: the rest are identities
    tau = np.arctan2(2 * (cos_wt * sin_wt).sum(axis=1), (cos_wt * cos_wt - sin_wt * sin_wt).sum(axis=1)) / 2
    cos_tau, sin_tau = np.cos(tau)[:, None], np.sin(tau)[:, None]
    c = cos_wt * cos_tau + sin_wt * sin_tau  # cos(wt - tau)
    s = sin_wt * cos_tau - cos_wt * sin_tau  # sin(wt - tau)
    cc, ss = (c * c).sum(axis=1), (s * s).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        power = ((c @ y) ** 2 / cc + np.where(ss > 0, (s @ y) ** 2 / ss, 0.0)) / yy
    return np.nan_to_num(power)


def _local_maxima(power, n):
    """Indices of the ``n`` highest local maxima of ``power`` (index 0, f = 0, excluded)."""
    inner = power[1:-1]
    idx = np.flatnonzero((inner >= power[:-2]) & (inner > power[2:])) + 1
    if idx.size > n:
        idx = idx[np.argpartition(power[idx], -n)[-n:]]
    return idx


def _refine(freq, power):
    """Best frequency of a fine grid, with a parabola through the maximum and its neighbours."""
    i = int(np.argmax(power))
    best_f, best_p = freq[i], power[i]
    if 0 < i < len(freq) - 1:
        y0, y1, y2 = power[i - 1], power[i], power[i + 1]
        den = y0 - 2 * y1 + y2
        if den < 0:
            shift = 0.5 * (y0 - y2) / den
            best_f = freq[i] + shift * (freq[i + 1] - freq[i])
            best_p = y1 - 0.25 * (y0 - y2) * shift
    return best_f, best_p


def _ppe(power):
    """ALeRCE's significance: 1 - entropy of the top 100 powers / log(100)."""
    top = np.partition(power, -PPE_TOP)[-PPE_TOP:] + 1e-2 if len(power) > PPE_TOP else power + 1e-2
    top = top / top.sum()
    return float(1 - (-top * np.log(top)).sum() / np.log(PPE_TOP))


def harmonics(t, mag, err, period):
    """ALeRCE's 7-harmonic weighted fit: (magnitudes[7], relative phases[6], mse)."""
    k = np.arange(1, N_HARMONICS + 1)
    wt = (2 * np.pi / period) * k[:, None] * t  # (7, n)
    design = np.vstack([np.ones_like(t), np.cos(wt), np.sin(wt)]).T  # (n, 15)
    inv_err = 1.0 / (err + ERROR_FLOOR)
    coeffs = np.linalg.lstsq(design * inv_err[:, None], mag * inv_err, rcond=None)[0]
    mse = float(np.mean((design @ coeffs - mag) ** 2))
    a, b = coeffs[1:N_HARMONICS + 1], coeffs[N_HARMONICS + 1:]
    amplitude = np.sqrt(a ** 2 + b ** 2)
    phase = np.arctan2(b, a)
    phase = (phase - phase[0] * k)[1:] % (2 * np.pi)
    return amplitude, phase, mse


def folded_kim(t, mag, period):
    """Psi_CS, Psi_eta of the light curve folded at twice the period (UPSILoN, Kim et al. 2014)."""
    folded = np.mod(t, 2 * period) / (2 * period)
    sorted_mags = mag[np.argsort(folded, kind="stable")]
    sigma = np.std(sorted_mags)
    n = len(sorted_mags)
    if not sigma > 0:
        return Missing(NO_PERIOD), Missing(NO_PERIOD)
    s = np.cumsum(sorted_mags - sorted_mags.mean()) / (n * sigma)
    eta = np.sum(np.diff(sorted_mags) ** 2) / ((n - 1) * sigma ** 2)
    return float(s.max() - s.min()), float(eta)


def _band_missing(band, n):
    reason = NO_DATA if n == 0 else TOO_FEW_POINTS
    return all_missing([f"{name}_{band}" for name in _PER_BAND], reason)


def compute(bands):
    """Periodic features of one object.

    ``bands``: {fid: (t, mag, err)} (MJD, magnitude, error arrays; any order). Returns
    {feature name (suffixed where per band): float or Missing}.
    """
    data = {}
    for fid, (t, mag, err) in bands.items():
        t, mag, err = (np.asarray(a, dtype=float) for a in (t, mag, err))
        ok = np.isfinite(t) & np.isfinite(mag) & np.isfinite(err)
        t, mag, err = t[ok], mag[ok], err[ok]
        order = np.argsort(t, kind="stable")
        data[fid] = (t[order], mag[order], err[order])
    used = {fid: lc_ for fid, lc_ in data.items() if len(lc_[0]) >= MIN_POINTS_BAND}
    if not used:
        return all_missing(FEATURES, TOO_FEW_POINTS)

    t_ref = min(lc_[0][0] for lc_ in used.values())
    pgram = _coarse_periodogram()
    band_power, weight, series = {}, {}, {}
    for fid, (t, mag, err) in used.items():
        tr = t - t_ref
        variance = float(np.sum((mag - mag.mean()) ** 2))
        if not variance > 0:
            continue  # a constant band carries no period
        _, power = pgram.freq_power(tr, mag)
        band_power[fid] = np.nan_to_num(np.asarray(power, dtype=float))
        with np.errstate(divide="ignore"):
            weight[fid] = float(np.sum((mag - mag.mean()) ** 2 / np.maximum(err, 1e-6) ** 2))
        series[fid] = (tr, mag)
    if not band_power:
        return all_missing(FEATURES, NO_PERIOD)

    total_weight = sum(weight.values())
    combined = sum(weight[fid] * band_power[fid] for fid in band_power) / total_weight

    # candidates: highest local maxima of the combined and of each band's spectrum
    candidates = [_local_maxima(combined, N_PEAKS)]
    candidates += [_local_maxima(band_power[fid], N_PEAKS_BAND) for fid in band_power]
    centres = _COARSE_FREQ[np.unique(np.concatenate(candidates))]
    fine_step = _COARSE_STEP / FINE_FACTOR
    start = np.maximum(centres - FINE_FACTOR * fine_step, fine_step)
    fine = start[:, None] + np.arange(2 * FINE_FACTOR + 1) * fine_step
    fine_band = {fid: lomb_scargle(tr, mag, fine.ravel()).reshape(fine.shape) for fid, (tr, mag) in series.items()}
    fine_comb = sum(weight[fid] * fine_band[fid] for fid in fine_band) / total_weight

    row = int(np.argmax(fine_comb.max(axis=1)))
    best_f, best_p = _refine(fine[row], fine_comb[row])
    period = 1.0 / best_f

    out = {"Multiband_period": period, "PPE": _ppe(combined[1:])}
    for fid in BANDS:
        if fid not in fine_band:
            n = len(data.get(fid, ((),))[0])
            reason = NO_DATA if n == 0 else (TOO_FEW_POINTS if n < MIN_POINTS_BAND else NO_PERIOD)
            out[f"Period_band_{fid}"] = Missing(reason)
            out[f"delta_period_{fid}"] = Missing(reason)
            continue
        row_b = int(np.argmax(fine_band[fid].max(axis=1)))
        f_b, _ = _refine(fine[row_b], fine_band[fid][row_b])
        out[f"Period_band_{fid}"] = 1.0 / f_b
        out[f"delta_period_{fid}"] = abs(period - 1.0 / f_b)

    # power ratios, evaluated directly at the multiple periods
    ratio_freq = np.array([best_f / factor for _, factor in POWER_RATE_FACTORS] + [best_f])
    ratio_power = sum(weight[fid] * lomb_scargle(tr, mag, ratio_freq)
                      for fid, (tr, mag) in series.items()) / total_weight
    at_period = ratio_power[-1]
    for (label, _), power in zip(POWER_RATE_FACTORS, ratio_power[:-1]):
        out[f"Power_rate_{label}"] = float(power / at_period) if at_period > 0 else Missing(NO_PERIOD)

    for fid in BANDS:
        t, mag, err = data.get(fid, (np.empty(0),) * 3)
        n = len(t)
        if n < MIN_POINTS_BAND:
            out.update(_band_missing(fid, n))
            continue
        if n >= 2 * N_HARMONICS + 1:
            amplitude, phase, mse = harmonics(t - t_ref, mag, err, period)
            for k in range(1, N_HARMONICS + 1):
                out[f"Harmonics_mag_{k}_{fid}"] = float(amplitude[k - 1])
            for k in range(2, N_HARMONICS + 1):
                out[f"Harmonics_phase_{k}_{fid}"] = float(phase[k - 2])
            out[f"Harmonics_mse_{fid}"] = mse
        else:
            out.update({f"{name}_{fid}": Missing(TOO_FEW_POINTS)
                        for name in _PER_BAND if name.startswith("Harmonics")})
        psi_cs, psi_eta = folded_kim(t, mag, period)
        out[f"Psi_CS_{fid}"] = psi_cs
        out[f"Psi_eta_{fid}"] = psi_eta
    return out
