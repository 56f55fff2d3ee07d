"""Stochastic-variability features of one band: DRW, structure function, IAR and MHPS.

GP_DRW_sigma, GP_DRW_tau  damped random walk (Ornstein-Uhlenbeck) Gaussian process
    k(dt) = sigma exp(-|dt| / tau) plus the photometric variances, fitted by maximum likelihood to
    m - mean(m) (Graham et al. 2017; ALeRCE fits celerite's RealTerm(a, c) and stores a and 1/c).
    As in ALeRCE, GP_DRW_sigma is the kernel amplitude a, i.e. the DRW *variance* [mag^2] (ALeRCE's
    stored values track Std^2), and GP_DRW_tau = 1/c [days]. The O(N) Kalman-filter likelihood
    (Kelly, Bechtold & Siemiginowska 2009) equals celerite's; it is maximised over log a, log c by a
    coarse grid (tau = 1e-3 .. 1e4 d by decades, a = 0.1 and 1 var(m)) followed by Nelder-Mead,
    inside tau in [1e-4, 1e5] d and a in var(m) * [1e-6, 1e2].
SF_ML_amplitude, SF_ML_gamma  structure function SF(tau) = A (tau / 1 yr)^gamma (Schmidt et al.
    2010) as ALeRCE's turbo-fats computes it: pairs with 5 <= dt <= 365 d, log bins of 0.1 dex from
    5 d, SF_bin = sqrt(mean(dm^2 - err_i^2 - err_j^2)) (bins with a negative mean dropped), a
    straight-line fit of log10 SF on log10(tau/yr) over 0.01 < tau/yr <= 0.5; A < 0.005 gives
    A = gamma = 0, A is capped at 15 and gamma clipped to [-0.5, 3].
IAR_phi  irregular autoregressive model x_j = phi^(t_j - t_{j-1}) x_{j-1} + noise (Eyheramendy et
    al. 2018), phi in (0, 1) maximising the Kalman likelihood of the standardised magnitudes, with
    ALeRCE's recursion (whose innovation variance at step i uses the error of point i+1) and
    bounded Brent search (tolerance 1e-12), as in turbo-fats ``IAR_phi``.
MHPS_*  Mexican-hat power spectrum (Arévalo et al. 2012) as ALeRCE's ``mhps`` package: fluxes
    10^(-0.4 (m - 19)), filters of scale 0.225 t / sqrt(2) and twice that for t = 100 d (low) and
    t = 10 d (high), windows of +-6 sigma (at least +-30 d), a point counted only with more than 3
    neighbours within 2/3 of the window. MHPS_low/high: filtered variance / mean flux^2 (low minus
    the photometric-noise power; high minus it only when above it, MHPS_PN_flag = 0, else flag 1),
    MHPS_ratio = low / high, MHPS_non_zero = points counted at the high-frequency scale.

Minimum points: 6 per band for the DRW, SF and IAR features (ALeRCE computes none of them below 6);
MHPS_non_zero and MHPS_PN_flag from 1 point, MHPS_low/high/ratio need at least one point with more
than 3 neighbours at their scale (else Missing(too_few_points); ALeRCE's NaN). Fewer than 2 SF bins
in the fit range -> Missing(too_few_points) where ALeRCE stores its -0.5 sentinel.

The Kalman, Brent, Nelder-Mead and filter loops are compiled with numba (cache=True).
"""
import math

import numpy as np
from numba import njit

from pipeline.steps.features.base import FIT_FAILED, NOT_FINITE, TOO_FEW_POINTS, Missing, all_missing, value_or_missing
from pipeline.steps.features.variability import prepare

GROUP = "stochastic"
PER_BAND = True
MIN_POINTS = 6
FEATURES = {
    "GP_DRW_sigma": "damped-random-walk GP variance (celerite amplitude a, as ALeRCE) [mag^2]",
    "GP_DRW_tau": "damped-random-walk relaxation time [d]",
    "SF_ML_amplitude": "structure-function amplitude A at 1 yr [mag]",
    "SF_ML_gamma": "structure-function power-law index",
    "IAR_phi": "irregular autoregressive coefficient phi (per day)",
    "MHPS_ratio": "MHPS_low / MHPS_high",
    "MHPS_low": "Mexican-hat variance at 100 d, noise subtracted (fractional flux^2)",
    "MHPS_high": "Mexican-hat variance at 10 d (fractional flux^2)",
    "MHPS_non_zero": "number of points used at the 10 d scale",
    "MHPS_PN_flag": "1 if the 10 d variance does not exceed the photometric-noise power",
}

# --- damped random walk -------------------------------------------------------------------------
_LOG_TAU_BOUNDS = (math.log(1e-4), math.log(1e5))
_LOG_A_OFFSETS = (math.log(1e-6), math.log(1e2))
_GRID_LOG_TAU = np.log(10.0 ** np.arange(-3.0, 4.01, 1.0))  # start of the search: 1e-3 .. 1e4 d
_GRID_LOG_A = np.log(np.array([0.1, 1.0]))  # times var(m)


@njit(cache=True)
def _drw_nll(log_a, log_c, t, y, var_err):
    """Negative log-likelihood of y (zero mean) under k = a exp(-c dt) + diag(var_err)."""
    a = math.exp(log_a)
    c = math.exp(log_c)
    n = y.size
    xhat = 0.0
    omega = a
    nll = 0.0
    for i in range(n):
        s = omega + var_err[i]
        v = y[i] - xhat
        nll += 0.5 * (math.log(2.0 * math.pi * s) + v * v / s)
        if i + 1 < n:
            gain = omega / s
            xpost = xhat + gain * v
            opost = omega * (1.0 - gain)
            x = -c * (t[i + 1] - t[i])
            r = math.exp(x)
            xhat = r * xpost
            omega = -a * math.expm1(2.0 * x) + r * r * opost
    return nll


@njit(cache=True)
def _clip(value, low, high):
    return min(max(value, low), high)


@njit(cache=True)
def _drw_fit(t, y, var_err, grid_log_a, grid_log_tau, lo_a, hi_a, lo_c, hi_c):
    """Grid then Nelder-Mead over (log a, log c); returns (log a, log c, nll)."""
    best = np.inf
    bx = 0.0
    by = 0.0
    for log_tau in grid_log_tau:
        for log_a in grid_log_a:
            f = _drw_nll(log_a, -log_tau, t, y, var_err)
            if f < best:
                best, bx, by = f, log_a, -log_tau
    xs = np.empty((3, 2))
    fs = np.empty(3)
    xs[0, 0], xs[0, 1] = bx, by
    xs[1, 0], xs[1, 1] = _clip(bx + 0.6, lo_a, hi_a), by
    xs[2, 0], xs[2, 1] = bx, _clip(by + 0.6, lo_c, hi_c)
    if xs[1, 0] == bx:
        xs[1, 0] = bx - 0.6
    if xs[2, 1] == by:
        xs[2, 1] = by - 0.6
    for k in range(3):
        fs[k] = _drw_nll(xs[k, 0], xs[k, 1], t, y, var_err)
    for _ in range(400):
        order = np.argsort(fs)
        ib, im, iw = order[0], order[1], order[2]
        spread = max(abs(xs[im, 0] - xs[ib, 0]), abs(xs[im, 1] - xs[ib, 1]),
                     abs(xs[iw, 0] - xs[ib, 0]), abs(xs[iw, 1] - xs[ib, 1]))
        if fs[iw] - fs[ib] < 1e-8 and spread < 1e-4:
            break
        ca = 0.5 * (xs[ib, 0] + xs[im, 0])
        cc = 0.5 * (xs[ib, 1] + xs[im, 1])
        ra = _clip(2.0 * ca - xs[iw, 0], lo_a, hi_a)
        rc = _clip(2.0 * cc - xs[iw, 1], lo_c, hi_c)
        fr = _drw_nll(ra, rc, t, y, var_err)
        if fr < fs[ib]:
            ea = _clip(3.0 * ca - 2.0 * xs[iw, 0], lo_a, hi_a)
            ec = _clip(3.0 * cc - 2.0 * xs[iw, 1], lo_c, hi_c)
            fe = _drw_nll(ea, ec, t, y, var_err)
            if fe < fr:
                xs[iw, 0], xs[iw, 1], fs[iw] = ea, ec, fe
            else:
                xs[iw, 0], xs[iw, 1], fs[iw] = ra, rc, fr
        elif fr < fs[im]:
            xs[iw, 0], xs[iw, 1], fs[iw] = ra, rc, fr
        else:
            if fr < fs[iw]:
                ka, kc = ca + 0.5 * (ra - ca), cc + 0.5 * (rc - cc)
            else:
                ka, kc = ca + 0.5 * (xs[iw, 0] - ca), cc + 0.5 * (xs[iw, 1] - cc)
            fk = _drw_nll(ka, kc, t, y, var_err)
            if fk < min(fr, fs[iw]):
                xs[iw, 0], xs[iw, 1], fs[iw] = ka, kc, fk
            else:
                for k in (im, iw):
                    xs[k, 0] = xs[ib, 0] + 0.5 * (xs[k, 0] - xs[ib, 0])
                    xs[k, 1] = xs[ib, 1] + 0.5 * (xs[k, 1] - xs[ib, 1])
                    fs[k] = _drw_nll(xs[k, 0], xs[k, 1], t, y, var_err)
    ib = np.argmin(fs)
    return xs[ib, 0], xs[ib, 1], fs[ib]


def _drw(t, m, e):
    y = m - m.mean()
    variance = max(float(np.dot(y, y) / y.size), 1e-12)
    log_var = math.log(variance)
    lo_a, hi_a = log_var + _LOG_A_OFFSETS[0], log_var + _LOG_A_OFFSETS[1]
    lo_c, hi_c = -_LOG_TAU_BOUNDS[1], -_LOG_TAU_BOUNDS[0]
    log_a, log_c, nll = _drw_fit(t - t[0], y, e * e, log_var + _GRID_LOG_A, _GRID_LOG_TAU,
                                 lo_a, hi_a, lo_c, hi_c)
    if not np.isfinite(nll):
        return Missing(FIT_FAILED), Missing(FIT_FAILED)
    return value_or_missing(math.exp(log_a)), value_or_missing(math.exp(-log_c))


# --- irregular autoregressive model --------------------------------------------------------------
@njit(cache=True)
def _iar_nll(phi, t, y, yerr):
    """ALeRCE's IAR Kalman objective (sum log Lambda + sum innovation^2 / Lambda) / n."""
    n = y.size
    if not abs(phi) < 1.0:
        return 1e10
    sighat = 1.0
    xhat = 0.0
    sum_lambda = 0.0
    sum_error = 0.0
    for i in range(n - 1):
        lam = sighat + yerr[i + 1] ** 2
        if not lam > 0.0:
            return 1e10
        delta = t[i + 1] - t[i]
        f = phi ** delta
        qt = 1.0 - phi ** (2.0 * delta)
        sum_lambda += math.log(lam)
        theta = f * sighat
        innovation = y[i] - xhat
        sum_error += innovation * innovation / lam
        xhat = f * xhat + theta / lam * innovation
        sighat = f * f * sighat + qt - theta * theta / lam
    out = (sum_lambda + sum_error) / n
    return out if np.isfinite(sum_lambda) else 1e10


@njit(cache=True)
def _iar_phi(t, y, yerr, xatol, maxfun):
    """Bounded Brent minimisation of the IAR objective on (0, 1) (the scipy 'bounded' method)."""
    sqrt_eps = math.sqrt(2.2e-16)
    golden_mean = 0.5 * (3.0 - math.sqrt(5.0))
    a, b = 0.0, 1.0
    fulc = a + golden_mean * (b - a)
    nfc, xf = fulc, fulc
    rat = 0.0
    e = 0.0
    x = xf
    fx = _iar_nll(x, t, y, yerr)
    num = 1
    ffulc = fx
    fnfc = fx
    xm = 0.5 * (a + b)
    tol1 = sqrt_eps * abs(xf) + xatol / 3.0
    tol2 = 2.0 * tol1
    while abs(xf - xm) > (tol2 - 0.5 * (b - a)):
        golden = True
        if abs(e) > tol1:
            golden = False
            r = (xf - nfc) * (fx - ffulc)
            q = (xf - fulc) * (fx - fnfc)
            p = (xf - fulc) * q - (xf - nfc) * r
            q = 2.0 * (q - r)
            if q > 0.0:
                p = -p
            q = abs(q)
            r = e
            e = rat
            if abs(p) < abs(0.5 * q * r) and p > q * (a - xf) and p < q * (b - xf):
                rat = p / q
                x = xf + rat
                if (x - a) < tol2 or (b - x) < tol2:
                    si = 1.0 if xm - xf >= 0.0 else -1.0
                    rat = tol1 * si
            else:
                golden = True
        if golden:
            e = a - xf if xf >= xm else b - xf
            rat = golden_mean * e
        si = 1.0 if rat >= 0.0 else -1.0
        x = xf + si * max(abs(rat), tol1)
        fu = _iar_nll(x, t, y, yerr)
        num += 1
        if fu <= fx:
            if x >= xf:
                a = xf
            else:
                b = xf
            fulc, ffulc = nfc, fnfc
            nfc, fnfc = xf, fx
            xf, fx = x, fu
        else:
            if x < xf:
                a = x
            else:
                b = x
            if fu <= fnfc or nfc == xf:
                fulc, ffulc = nfc, fnfc
                nfc, fnfc = x, fu
            elif fu <= ffulc or fulc == xf or fulc == nfc:
                fulc, ffulc = x, fu
        xm = 0.5 * (a + b)
        tol1 = sqrt_eps * abs(xf) + xatol / 3.0
        tol2 = 2.0 * tol1
        if num >= maxfun:
            break
    return xf


def _iar(t, m, e):
    std = float(np.std(m, ddof=1))
    if not std > 0:
        return Missing(NOT_FINITE)
    phi = _iar_phi(t, (m - m.mean()) / std, e / std, 1e-12, 50000)
    return value_or_missing(phi)


# --- structure function --------------------------------------------------------------------------
_SF_EDGES = 10.0 ** np.arange(np.log10(5.0), np.log10(2000.0), 0.1)
_SF_CENTRES = 0.5 * (_SF_EDGES[:-1] + _SF_EDGES[1:])


@njit(cache=True)
def _sf_bins(t, m, e, edges):
    """Sum of dm^2 - err_i^2 - err_j^2 and pair counts in each log bin (5 <= dt <= 365 d)."""
    nbins = edges.size - 1
    sums = np.zeros(nbins)
    counts = np.zeros(nbins, dtype=np.int64)
    n = t.size
    e2 = e * e
    for i in range(n):
        for j in range(i + 1, n):
            dt = t[j] - t[i]
            if dt > 365.0:
                break
            if dt < 5.0:
                continue
            k = np.searchsorted(edges, dt, side="right") - 1
            if 0 <= k < nbins:
                dm = m[i] - m[j]
                sums[k] += dm * dm - e2[i] - e2[j]
                counts[k] += 1
    return sums, counts


def _structure_function(t, m, e):
    sums, counts = _sf_bins(t, m, e, _SF_EDGES)
    filled = counts > 0
    mean_sf = sums[filled] / counts[filled]
    centres = _SF_CENTRES[filled][mean_sf >= 0] / 365.0
    sf = np.sqrt(mean_sf[mean_sf >= 0])
    in_range = (centres <= 0.5) & (centres > 0.01)
    if sf.size < 2 or np.count_nonzero(in_range) < 2:
        return Missing(TOO_FEW_POINTS), Missing(TOO_FEW_POINTS)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log10(centres[in_range])
        y = np.log10(sf[in_range])
        dx = x - x.mean()
        gamma = np.dot(dx, y - y.mean()) / np.dot(dx, dx)
        amplitude = 10.0 ** (y.mean() - gamma * x.mean())
    if not (np.isfinite(gamma) and np.isfinite(amplitude)):
        return Missing(FIT_FAILED), Missing(FIT_FAILED)
    if amplitude < 0.005:
        amplitude = gamma = 0.0
    elif amplitude > 15.0:
        amplitude = 15.0
    return float(amplitude), float(np.clip(gamma, -0.5, 3.0))


# --- Mexican-hat power spectrum ------------------------------------------------------------------
_MHPS_MAG0 = 19.0
_MHPS_EPSILON = 1.0
_MHPS_DT = 5.0
_MHPS_T_LOW = 100.0
_MHPS_T_HIGH = 10.0


def _mhps_scale(timescale):
    """(sigma1, half window, 1/norm1, 1/norm2, normf) of ALeRCE's ``_conv`` for one timescale."""
    sigma1 = 0.225 * timescale / math.sqrt(1.0 + _MHPS_EPSILON)
    sigma2 = (1.0 + _MHPS_EPSILON) * sigma1
    half = max(6.0 * sigma1, 6.0 * _MHPS_DT)
    grid = np.linspace(-half, half, 1001)
    step = grid[1] - grid[0]
    g1 = np.exp(-grid**2 / (2 * sigma1**2))
    g2 = np.exp(-grid**2 / (2 * sigma2**2))
    norm1, norm2 = g1.sum() * step, g2.sum() * step
    normf = np.sum((g1 / norm1 - g2 / norm2) ** 2) * step
    return np.array([sigma1, half, 1.0 / norm1, 1.0 / norm2, normf])


_MHPS_LOW = _mhps_scale(_MHPS_T_LOW)
_MHPS_HIGH = _mhps_scale(_MHPS_T_HIGH)


@njit(cache=True)
def _mhps_filter(t, flux, scale):
    """Mexican-hat filtered values Ik (NaN where fewer than 4 points within 2/3 of the window)."""
    sigma1, half, inv_norm1, inv_norm2 = scale[0], scale[1], scale[2], scale[3]
    n = t.size
    ik = np.full(n, np.nan)
    c2 = 1.0 / (8.0 * sigma1 * sigma1)  # exp(-dt^2 / (2 sigma2^2)), sigma2 = 2 sigma1
    inner = half * 2.0 / 3.0
    for i in range(n):
        mask1 = 0.0
        mask2 = 0.0
        rate1 = 0.0
        rate2 = 0.0
        k = 0
        lo = i
        while lo > 0 and t[i] - t[lo - 1] < half:  # t is sorted: only the window's neighbours
            lo -= 1
        for j in range(lo, n):
            dt = t[j] - t[i]
            if dt >= half:
                break
            g2 = math.exp(-dt * dt * c2)
            g1 = g2 * g2
            g1 = g1 * g1
            w1 = g1 * inv_norm1
            w2 = g2 * inv_norm2
            mask1 += w1
            mask2 += w2
            rate1 += w1 * flux[j]
            rate2 += w2 * flux[j]
            if -inner <= dt <= inner:
                k += 1
        if k > 3:
            ik[i] = rate1 / mask1 - rate2 / mask2
    return ik


def _mhps(t, m, e):
    flux = 10.0 ** (-0.4 * (m - _MHPS_MAG0))
    mean = flux.mean()
    centred = flux - mean
    flux_err = math.log(10.0) * flux * 0.4 * e
    ik_low = _mhps_filter(t, centred, _MHPS_LOW)
    ik_high = _mhps_filter(t, centred, _MHPS_HIGH)
    used_low = np.isfinite(ik_low)
    used_high = np.isfinite(ik_high)
    out = {"MHPS_non_zero": float(np.count_nonzero(used_high))}
    too_few = Missing(TOO_FEW_POINTS)
    if used_low.any():
        noise = flux_err[used_low].mean() ** 2 / mean**2
        low = np.mean(ik_low[used_low] ** 2) / _MHPS_LOW[4] / mean**2 - noise
        out["MHPS_low"] = value_or_missing(low)
    else:
        noise = np.nan
        low = np.nan
        out["MHPS_low"] = too_few
    if used_high.any():
        high = np.mean(ik_high[used_high] ** 2) / _MHPS_HIGH[4] / mean**2
        if high > noise:
            high -= noise
            out["MHPS_PN_flag"] = 0.0
        else:
            out["MHPS_PN_flag"] = 1.0
        out["MHPS_high"] = value_or_missing(high)
    else:
        high = np.nan
        out["MHPS_PN_flag"] = 1.0
        out["MHPS_high"] = too_few
    if np.isfinite(low) and np.isfinite(high) and high != 0:
        out["MHPS_ratio"] = value_or_missing(low / high)
    else:
        out["MHPS_ratio"] = too_few if not (used_low.any() and used_high.any()) else Missing(
            NOT_FINITE)
    return out


def compute_band(t, mag, err):
    """Stochastic features of one band: {base name: float or Missing}."""
    t, m, e = prepare(t, mag, err)
    if m.size == 0:
        return all_missing(FEATURES, TOO_FEW_POINTS)
    out = _mhps(t - t[0], m, e)
    if m.size < MIN_POINTS:
        out.update(all_missing(("GP_DRW_sigma", "GP_DRW_tau", "SF_ML_amplitude", "SF_ML_gamma",
                                "IAR_phi"), TOO_FEW_POINTS))
        return out
    out["GP_DRW_sigma"], out["GP_DRW_tau"] = _drw(t, m, e)
    out["SF_ML_amplitude"], out["SF_ML_gamma"] = _structure_function(t, m, e)
    out["IAR_phi"] = _iar(t, m, e)
    return out
