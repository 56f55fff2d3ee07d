"""SIMULATED ZTF-like light curves of variable-star and stochastic classes, for classifier training.

Every object made here is simulated and says so: its oid starts with :data:`OID_PREFIX` (never a
real ZTF id, which matches ``^ZTF\\d{2}[a-z]{7}$``) and ``label_source`` is ``"simulated"``.

Survey model (ZTF public survey, Bellm et al. 2019, PASP 131, 018002):

- 300-900 days of survey per object; each field is observable about 240 days a year (seasonal gap
  of the rest), visited on a night with probability ~0.2-0.45 (weather, 2-4 night cadence), g and/or r;
- per-epoch 5-sigma limiting magnitude ~ N(20.3, 0.35), clipped to [19.3, 21.0] (g 0.1 mag deeper);
- difference-image photometry: ``diff = F(t) - F_ref`` with flux noise ``F(lim) / 5`` plus a 1.5 %
  calibration floor; a detection needs ``|diff| >= 5 sigma``, the other epochs are upper limits;
  ``magpsf = -2.5 log10 |diff| + 25`` with ``isdiffpos`` its sign; the corrected magnitude
  ``magpsf_corr`` is that of ``F_ref + diff`` (ALeRCE's correction of a source on a reference star).

Classes (Sánchez-Sáez et al. 2021 taxonomy; typical periods/amplitudes from the literature):

- AGN, QSO, Blazar, YSO: damped random walks (Kelly et al. 2009, ApJ 698, 895) with class-typical
  timescale ``tau`` and asymptotic structure function ``SF_inf`` (MacLeod et al. 2010, ApJ 721, 1014;
  blazars faster and larger; YSOs fast, red, with extinction dips);
- CV/Nova: dwarf-nova outbursts (2-5 mag, 3-20 d, every 20-300 d) on a faint quiescent star;
- CEP (1-60 d, 0.3-1.0 mag in g), RRL (ab 0.45-0.8 d, c 0.25-0.42 d), DSCT (0.03-0.25 d), E (EA
  eclipses and EW contact binaries, 0.25-10 d), LPV (Mira and semi-regular, 80-600 d, up to 5 mag),
  Periodic-Other (rotational/spotted and other low-amplitude periodic stars, 0.5-60 d).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

OID_PREFIX = "SIMLC"
SIMULATED = "simulated"
SURVEY_DAYS = 900.0
MJD0 = 58300.0

STOCHASTIC = ("AGN", "QSO", "Blazar", "CV/Nova", "YSO")
PERIODIC = ("CEP", "DSCT", "E", "LPV", "RRL", "Periodic-Other")
CLASSES = STOCHASTIC + PERIODIC


def _flux(m):
    return 10.0 ** (-0.4 * (np.asarray(m, dtype=float) - 25.0))


def _mag(f):
    return 25.0 - 2.5 * np.log10(f)


def schedule(rng):
    """Epochs (mjd, fid) of one field: seasons, weather, g and/or r per visited night."""
    season_start = rng.uniform(0.0, 365.0)
    nights = np.arange(0.0, rng.uniform(300.0, SURVEY_DAYS))
    in_season = ((nights - season_start) % 365.25) < rng.uniform(200.0, 260.0)
    visited = nights[in_season & (rng.random(len(nights)) < rng.uniform(0.2, 0.45))]
    bands = rng.random((len(visited), 2)) < 0.8
    t = np.concatenate([visited[bands[:, 0]], visited[bands[:, 1]]])
    f = np.concatenate([np.full(bands[:, 0].sum(), 1), np.full(bands[:, 1].sum(), 2)])
    t = MJD0 + t + rng.uniform(0.15, 0.45, len(t))
    order = np.argsort(t, kind="stable")
    return t[order], f[order]


def _drw(rng, t, tau, sf_inf):
    """Damped random walk at times t (exact Ornstein-Uhlenbeck update), variance sf_inf**2 / 2."""
    x = np.empty(len(t))
    sigma = sf_inf / np.sqrt(2.0)
    value = sigma * rng.standard_normal()
    prev = None
    for i in np.argsort(t, kind="stable"):
        if prev is not None:
            a = np.exp(-(t[i] - prev) / tau)
            value = a * value + sigma * np.sqrt(1.0 - a * a) * rng.standard_normal()
        x[i], prev = value, t[i]
    return x


def _stochastic(rng, t, f, mag_r, color, tau, sf_inf, g_boost):
    x = _drw(rng, t, tau, sf_inf)
    return mag_r + np.where(f == 1, color + g_boost * x, x)


def _agn(rng, t, f):
    return _stochastic(rng, t, f, rng.uniform(17.5, 20.0), rng.uniform(0.2, 0.7),
                       rng.uniform(100.0, 600.0), rng.uniform(0.15, 0.4), 1.2)


def _qso(rng, t, f):
    return _stochastic(rng, t, f, rng.uniform(18.0, 20.3), rng.uniform(-0.1, 0.3),
                       rng.uniform(200.0, 1000.0), rng.uniform(0.15, 0.35), 1.25)


def _blazar(rng, t, f):
    mag = _stochastic(rng, t, f, rng.uniform(16.5, 19.5), rng.uniform(0.2, 0.6),
                      rng.uniform(10.0, 150.0), rng.uniform(0.4, 1.2), 1.05)
    for _ in range(rng.poisson(2)):  # flares
        t0, width, amp = rng.uniform(t.min(), t.max()), rng.uniform(3.0, 30.0), rng.uniform(0.5, 2.0)
        mag = mag - amp * np.exp(-0.5 * ((t - t0) / width) ** 2)
    return mag


def _yso(rng, t, f):
    mag = _stochastic(rng, t, f, rng.uniform(14.5, 18.5), rng.uniform(1.0, 1.8),
                      rng.uniform(2.0, 40.0), rng.uniform(0.2, 0.8), 1.3)
    if rng.random() < 0.5:  # dipper: extinction dips, deeper in g
        for _ in range(rng.poisson(4) + 1):
            t0, width, depth = rng.uniform(t.min(), t.max()), rng.uniform(1.0, 10.0), rng.uniform(0.3, 1.5)
            mag = mag + depth * np.where(f == 1, 1.4, 1.0) * np.exp(-0.5 * ((t - t0) / width) ** 2)
    return mag


def _cv(rng, t, f):
    quiet = rng.uniform(19.5, 22.0)
    mag = np.full(len(t), quiet) + np.where(f == 1, -0.1, 0.0)
    recurrence = rng.uniform(20.0, 300.0)
    start = t.min() - rng.uniform(0.0, recurrence)
    while start < t.max():
        amp, rise, decay = rng.uniform(2.0, 5.0), rng.uniform(0.5, 2.0), rng.uniform(2.0, 10.0)
        length = rng.uniform(2.0, 12.0)
        dt = t - start
        shape = np.where(dt < 0, 0.0, np.where(dt < rise, dt / rise, np.where(
            dt < rise + length, 1.0, np.exp(-(dt - rise - length) / decay))))
        mag = np.minimum(mag, quiet - amp * shape + np.where(f == 1, -0.15, 0.0) * shape)
        start += recurrence * rng.uniform(0.6, 1.4)
    return mag + 0.05 * rng.standard_normal(len(t))


def _phase(rng, t, period):
    return ((t - rng.uniform(0.0, period)) / period) % 1.0


def _sawtooth(p, rise):
    """Magnitude offset in [-0.5, 0.5]: quick brightening over ``rise``, slow fading."""
    return np.where(p < rise, 0.5 - p / rise, -0.5 + (p - rise) / (1.0 - rise))


def _pulsator(rng, t, f, period, amp_g, r_ratio, shape, mag_r, color):
    amp = np.where(f == 1, amp_g, amp_g * r_ratio)
    return mag_r + np.where(f == 1, color, 0.0) + amp * shape(_phase(rng, t, period))


def _cep(rng, t, f):
    period = float(np.exp(rng.uniform(np.log(1.0), np.log(60.0))))
    rise = rng.uniform(0.25, 0.4)
    return _pulsator(rng, t, f, period, rng.uniform(0.3, 1.0), 0.65, lambda p: _sawtooth(p, rise),
                     rng.uniform(12.5, 17.0), rng.uniform(0.4, 1.1))


def _rrl(rng, t, f):
    if rng.random() < 0.7:  # RRab
        period, rise = rng.uniform(0.45, 0.8), rng.uniform(0.1, 0.2)
        shape, amp = (lambda p: _sawtooth(p, rise)), rng.uniform(0.5, 1.2)
    else:  # RRc: nearly sinusoidal
        period, amp = rng.uniform(0.25, 0.42), rng.uniform(0.3, 0.55)
        shape = lambda p: 0.5 * np.cos(2 * np.pi * p) + 0.08 * np.cos(4 * np.pi * p)  # noqa: E731
    return _pulsator(rng, t, f, period, amp, 0.72, shape, rng.uniform(14.5, 18.8), rng.uniform(0.1, 0.4))


def _dsct(rng, t, f):
    period = float(np.exp(rng.uniform(np.log(0.03), np.log(0.25))))
    amp, second = rng.uniform(0.15, 0.8), rng.uniform(0.0, 0.3)
    ratio = rng.uniform(0.75, 0.8)
    phase2 = rng.uniform(0, 1)

    def shape(p):
        return 0.5 * np.sin(2 * np.pi * p) + second * 0.5 * np.sin(2 * np.pi * (p / ratio + phase2))

    return _pulsator(rng, t, f, period, amp, 0.8, shape, rng.uniform(13.5, 18.0), rng.uniform(0.0, 0.3))


def _eclipsing(rng, t, f):
    period = float(np.exp(rng.uniform(np.log(0.25), np.log(10.0))))
    if rng.random() < 0.5:  # EA: detached, two eclipses
        d1 = rng.uniform(0.3, 1.2)
        d2, width, ell = d1 * rng.uniform(0.05, 0.8), rng.uniform(0.02, 0.07), rng.uniform(0.0, 0.05)

        def shape(p):
            return (d1 * np.exp(-0.5 * (np.minimum(p, 1 - p) / width) ** 2)
                    + d2 * np.exp(-0.5 * (np.abs(p - 0.5) / width) ** 2)
                    + ell * 0.5 * (1 - np.cos(4 * np.pi * p)))
    else:  # EW: contact binary, continuous light variation at half the period
        period = min(period, rng.uniform(0.25, 1.0))
        amp, unequal = rng.uniform(0.2, 0.8), rng.uniform(0.0, 0.15)

        def shape(p):
            return amp * 0.5 * (1 - np.cos(4 * np.pi * p)) + unequal * np.exp(-0.5 * (np.minimum(p, 1 - p) / 0.08) ** 2)
    return _pulsator(rng, t, f, period, 1.0, rng.uniform(0.9, 1.0), shape,
                     rng.uniform(13.5, 18.5), rng.uniform(0.1, 0.8))


def _lpv(rng, t, f):
    period = float(np.exp(rng.uniform(np.log(80.0), np.log(600.0))))
    if rng.random() < 0.5:  # Mira
        amp = rng.uniform(2.0, 5.0)
        shape = lambda p: 0.5 * np.cos(2 * np.pi * p) + 0.1 * np.cos(4 * np.pi * p)  # noqa: E731
    else:  # semi-regular: smaller, with a random-walk wander of the mean
        amp = rng.uniform(0.3, 1.5)
        shape = lambda p: 0.5 * np.cos(2 * np.pi * p)  # noqa: E731
    mag = _pulsator(rng, t, f, period, amp, 0.7, shape, rng.uniform(12.0, 17.0), rng.uniform(1.2, 2.5))
    return mag + _drw(rng, t, period, 0.2 * amp)


def _periodic_other(rng, t, f):
    period = float(np.exp(rng.uniform(np.log(0.5), np.log(60.0))))
    amp = rng.uniform(0.05, 0.4)
    spots = rng.uniform(0.0, 0.5)

    def shape(p):
        return 0.5 * np.sin(2 * np.pi * p) + spots * 0.5 * np.sin(4 * np.pi * p + 1.0)

    mag = _pulsator(rng, t, f, period, amp, 0.85, shape, rng.uniform(13.0, 18.0), rng.uniform(0.5, 1.4))
    return mag + _drw(rng, t, 30.0 * period, 0.3 * amp)  # evolving spot pattern


GENERATORS = {
    "AGN": _agn, "QSO": _qso, "Blazar": _blazar, "YSO": _yso, "CV/Nova": _cv,
    "CEP": _cep, "RRL": _rrl, "DSCT": _dsct, "E": _eclipsing, "LPV": _lpv, "Periodic-Other": _periodic_other,
}


def observe(rng, t, f, true_mag):
    """ZTF-like difference photometry of a source of magnitudes ``true_mag`` at epochs (t, f).

    Returns (detections, non_detections) DataFrames without the oid column.
    """
    lim = np.clip(rng.normal(20.3, 0.35, len(t)) + 0.1 * (f == 1), 19.3, 21.0)
    sigma = _flux(lim) / 5.0
    source = _flux(true_mag)
    reference = {fid: np.median(source[f == fid]) if np.any(f == fid) else 0.0 for fid in (1, 2)}
    f_ref = np.where(f == 1, reference[1], reference[2])
    error = np.sqrt(sigma ** 2 + (0.015 * source) ** 2)
    diff = source - f_ref + error * rng.standard_normal(len(t))
    detected = np.abs(diff) >= 5.0 * sigma
    d = detected
    magpsf = _mag(np.abs(diff[d]))
    total = np.maximum(f_ref[d] + diff[d], 1e-3 * f_ref[d])
    detections = pd.DataFrame({
        "mjd": t[d], "fid": f[d], "magpsf": magpsf,
        "sigmapsf": 1.0857 * error[d] / np.abs(diff[d]),
        "isdiffpos": np.where(diff[d] > 0, "t", "f"),
        "magpsf_corr": _mag(total), "sigmapsf_corr": 1.0857 * error[d] / total,
        "sigmapsf_corr_ext": 1.0857 * error[d] / total,
        "rb": np.clip(rng.normal(0.85, 0.08, d.sum()), 0.56, 1.0),
    })
    non_detections = pd.DataFrame({"mjd": t[~d], "fid": f[~d], "diffmaglim": lim[~d]})
    return detections, non_detections


def simulate_class(cls, n, seed, min_detections=6, max_tries=20):
    """``n`` simulated objects of ``cls`` that pass the classifier's gate (>= ``min_detections`` in g
    or r): (detections, non_detections, objects) with oid ``SIMLC<class><i>``; objects carry
    ``corrected``/``stellar`` True (the corrected light curve is used, as for a variable star) and
    ``label_source = 'simulated'``."""
    rng = np.random.default_rng([seed, CLASSES.index(cls)])
    name = cls.replace("/", "").replace("-", "")
    dets, nds, objs = [], [], []
    made = tries = 0
    while made < n and tries < n * max_tries:
        tries += 1
        t, f = schedule(rng)
        det, nd = observe(rng, t, f, GENERATORS[cls](rng, t, f))
        counts = det["fid"].value_counts()
        if max(counts.get(1, 0), counts.get(2, 0)) < min_detections:
            continue
        oid = f"{OID_PREFIX}{name}{made:05d}"
        dets.append(det.assign(oid=oid))
        nds.append(nd.assign(oid=oid))
        objs.append({"oid": oid, "class": cls, "corrected": True, "stellar": True, "label_source": SIMULATED})
        made += 1
    detections = pd.concat(dets, ignore_index=True) if dets else pd.DataFrame()
    non_detections = pd.concat(nds, ignore_index=True) if nds else pd.DataFrame()
    return detections, non_detections, pd.DataFrame(objs)


def simulate(counts: dict, seed=0):
    """Simulated light curves of several classes: ``counts`` maps class -> number of objects."""
    parts = [simulate_class(cls, n, seed) for cls, n in counts.items() if n > 0]
    detections = pd.concat([p[0] for p in parts], ignore_index=True)
    detections["candid"] = np.arange(len(detections), dtype=np.int64)
    return (detections, pd.concat([p[1] for p in parts], ignore_index=True),
            pd.concat([p[2] for p in parts], ignore_index=True))
