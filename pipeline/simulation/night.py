"""A simulated night of ZTF alerts, for demos, benchmarks and training on known truth.

Every packet is an Avro object container (null codec, one record, named ``<candid>.avro``) written
with the ZTF 4.02 writer schema (built below from its field list; nothing is read from disk). The
data are SIMULATED and say so: ``publisher`` is :data:`PUBLISHER`, object ids start with ``ZTFSIM``
(real ids match ``^ZTF\\d{2}[a-z]{7}$``) and candids lie in ``[1e16, 2e16)`` (real ZTF candids are
``pid * 1e6 + n`` with ``pid ~ nid * 1e9`` and night id ``nid >= ~300`` since 2017-11, so >= ~3e17).
Here ``pid = 1e10 + nid * 1e5 + (seed % 1000) * 100 + rcid`` and ``candid = pid * 1e6 + n``: unique
within a night, and across nights made with seeds 0-999.

Each object gets 30-90 nights of history before the night (ZTF itself sends 30 days; the longer
window gives light curves to classify): detections and upper limits (``candid`` null,
``diffmaglim`` set) in ``prv_candidates``, forced photometry of the last 30 days in ``fp_hists``,
and one alert per detection tonight (g and/or r), in time order. Cutouts are 63x63 float32 FITS,
gzipped: template = sky + reference sources (star, nucleus or host galaxy), science = template +
the difference signal + noise, difference = science - template; quantised to noise/16 like ZTF's
fpack-compressed images.

Physics, in brief (flux unit: ``10**(-0.4 (m - 25))``, AB magnitudes, MJD):

- difference photometry: ``diff = F_source(t) - F_ref``; ``magpsf = -2.5 log10 |diff| + 25``,
  ``isdiffpos = 't'`` when ``diff > 0``; a detection needs ``|diff| >= 5 sigma`` with
  ``sigma = F(diffmaglim) / 5`` (the 5-sigma limit), plus a 1.5 % calibration floor;
- SN Ia: Bazin et al. (2009, A&A 499, 653) flux ``A e^{-(t-t0)/tfall} / (1 + e^{-(t-t0)/trise})``,
  faster in g; SN II: logistic rise, slow plateau decline (faster in g), drop after 80-110 d;
  both offset 1-5" from a host galaxy (``sgscore1 ~ 0``);
- AGN: damped random walk (Kelly, Bechtold & Siemiginowska 2009, ApJ 698, 895), exact
  Ornstein-Uhlenbeck update, g amplitude 1.3x r; on the nucleus (``distnr < 0.5"``);
- RR Lyrae (ab): sawtooth of period 0.45-0.75 d; eclipsing binary: two Gaussian eclipses plus
  ellipsoidal modulation, period 0.4-4 d; both on a stellar reference source (``sgscore1 ~ 1``)
  whose reference flux is the phase-averaged flux, so ``isdiffpos`` is 't' or 'f';
- asteroid: one detection near the ecliptic, ``ssdistnr``/``ssnamenr`` set, no past detections;
- bogus: dipoles on bright stars, cosmic-ray spikes, streaks; low ``rb``/``drb``.

The true class is kept outside the packets (:meth:`Night.truth`, ``truth.csv``).
"""
from __future__ import annotations

import csv
import datetime as _dt
import functools
import gzip
import hashlib
import io
import json
from dataclasses import dataclass, field as _field
from pathlib import Path
from typing import Iterator

import fastavro
import numpy as np
from astropy.io import fits

from pipeline.surveys.ztf import is_simulated_oid  # noqa: F401 - part of this module's API

__all__ = [
    "PUBLISHER", "SCHEMA_VERSION", "CLASSES", "STAMP_CLASS", "SIM_CANDID_MIN", "SIM_CANDID_MAX",
    "alert_schema", "is_simulated_oid", "is_simulated_candid", "plan_night", "simulate_packets", "write_night",
    "simulate_night", "truth_table", "Night", "SimObject",
]

SCHEMA_VERSION = "4.02"
PUBLISHER = "ZTF-sim (SIMULATED data, alert-broker demo; not from ZTF)"
SIM_CANDID_MIN = 10**16
SIM_CANDID_MAX = 2 * 10**16

# light-curve class -> ALeRCE stamp-classifier class; default mix of a night
STAMP_CLASS = {"SNIa": "SN", "SNII": "SN", "AGN": "AGN", "RRL": "VS", "EB": "VS",
               "asteroid": "asteroid", "bogus": "bogus"}
CLASSES = {"SNIa": 0.18, "SNII": 0.12, "AGN": 0.14, "RRL": 0.14, "EB": 0.12,
           "asteroid": 0.14, "bogus": 0.16}


def is_simulated_candid(candid: int) -> bool:
    """True for candids in the simulated range ``[1e16, 2e16)``, below every real ZTF candid."""
    return SIM_CANDID_MIN <= candid < SIM_CANDID_MAX


# --------------------------------------------------------------------------------------------
# ZTF 4.02 schema, from the field lists of the official .avsc (ZwickyTransientFacility/ztf-avro-alert).
# "name:type" is required, "name:type?" is ["null", type] with default null, "name:type*" is
# ["null", type] without a default (only in prv_candidate).
_CANDIDATE = """
jd:double fid:int pid:long diffmaglim:float? pdiffimfilename:string? programpi:string?
programid:int candid:long isdiffpos:string tblid:long? nid:int? rcid:int? field:int? xpos:float?
ypos:float? ra:double dec:double magpsf:float sigmapsf:float chipsf:float? magap:float?
sigmagap:float? distnr:float? magnr:float? sigmagnr:float? chinr:float? sharpnr:float? sky:float?
magdiff:float? fwhm:float? classtar:float? mindtoedge:float? magfromlim:float? seeratio:float?
aimage:float? bimage:float? aimagerat:float? bimagerat:float? elong:float? nneg:int? nbad:int?
rb:float? ssdistnr:float? ssmagnr:float? ssnamenr:string? sumrat:float? magapbig:float?
sigmagapbig:float? ranr:double decnr:double sgmag1:float? srmag1:float? simag1:float?
szmag1:float? sgscore1:float? distpsnr1:float? ndethist:int ncovhist:int jdstarthist:double?
jdendhist:double? scorr:double? tooflag:int? objectidps1:long? objectidps2:long? sgmag2:float?
srmag2:float? simag2:float? szmag2:float? sgscore2:float? distpsnr2:float? objectidps3:long?
sgmag3:float? srmag3:float? simag3:float? szmag3:float? sgscore3:float? distpsnr3:float?
nmtchps:int rfid:long jdstartref:double jdendref:double nframesref:int rbversion:string
dsnrms:float? ssnrms:float? dsdiff:float? magzpsci:float? magzpsciunc:float? magzpscirms:float?
nmatches:int clrcoeff:float? clrcounc:float? zpclrcov:float? zpmed:float? clrmed:float?
clrrms:float? neargaia:float? neargaiabright:float? maggaia:float? maggaiabright:float?
exptime:float? drb:float? drbversion:string
"""
# prv_candidate: the candidate fields up to sigmagapbig, then these; its other required fields
# become nullable without default (upper limits carry no candid, position or magnitude)
_PRV_TAIL = "ranr decnr scorr magzpsci magzpsciunc magzpscirms clrcoeff clrcounc rbversion"
_PRV_REQUIRED = {"jd", "fid", "pid", "programid", "rbversion"}
_FP_HIST = """
field:int? rcid:int? fid:int pid:long rfid:long sciinpseeing:float? scibckgnd:float?
scisigpix:float? magzpsci:float? magzpsciunc:float? magzpscirms:float? clrcoeff:float?
clrcounc:float? exptime:float? adpctdif1:float? adpctdif2:float? diffmaglim:float? programid:int
jd:double forcediffimflux:float? forcediffimfluxunc:float? procstatus:string? distnr:float?
ranr:double decnr:double magnr:float? sigmagnr:float? chinr:float? sharpnr:float?
"""


def _fields(tokens):
    out = []
    for tok in tokens:
        name, typ = tok.split(":")
        if typ[-1] == "?":
            out.append({"name": name, "type": ["null", typ[:-1]], "default": None})
        elif typ[-1] == "*":
            out.append({"name": name, "type": ["null", typ[:-1]]})
        else:
            out.append({"name": name, "type": typ})
    return out


def _record(name, fields, namespace="ztf.alert"):
    return {"namespace": namespace, "type": "record", "name": name, "doc": "avro alert schema",
            "version": SCHEMA_VERSION, "fields": fields}


def _prv_tokens():
    cand = _CANDIDATE.split()
    names = [t.split(":")[0] for t in cand]
    keep = cand[: names.index("sigmagapbig") + 1] + [cand[names.index(n)] for n in _PRV_TAIL.split()]
    return [t if t.split(":")[0] in _PRV_REQUIRED or t[-1] == "?" else t + "*" for t in keep]


def alert_schema() -> dict:
    """The ZTF 4.02 ``ztf.alert`` writer schema as a fresh dict (field names, types, order and
    defaults as the official .avsc; docs left out)."""
    nullable = lambda t: {"type": ["null", t], "default": None}  # noqa: E731
    fields = [
        {"name": "schemavsn", "type": "string"}, {"name": "publisher", "type": "string"},
        {"name": "objectId", "type": "string"}, {"name": "candid", "type": "long"},
        {"name": "candidate", "type": _record("candidate", _fields(_CANDIDATE.split()))},
        {"name": "prv_candidates", **nullable(
            {"type": "array", "items": _record("prv_candidate", _fields(_prv_tokens()))})},
        {"name": "fp_hists", **nullable(
            {"type": "array", "items": _record("fp_hist", _fields(_FP_HIST.split()))})},
        {"name": "cutoutScience", **nullable(_record(
            "cutout", _fields(["fileName:string", "stampData:bytes"])))},
        {"name": "cutoutTemplate", **nullable("ztf.alert.cutout")},
        {"name": "cutoutDifference", **nullable("ztf.alert.cutout")},
    ]
    schema = _record("alert", fields, namespace="ztf")
    schema["doc"] = "avro alert schema for ZTF (www.ztf.caltech.edu)"
    return schema


_CAND_NAMES = [t.split(":")[0] for t in _CANDIDATE.split()]

# --------------------------------------------------------------------------------------------
# photometry helpers
_MJD_JD = 2400000.5
_MJD_ZTF_NID0 = 57754  # 2017-01-01: ZTF night id nid = MJD - this
_PIX = 1.01  # arcsec per pixel
_STAMP = 63
_C = _STAMP // 2
_GRID = np.arange(_STAMP, dtype=float) - _C


def _flux(m):
    return 10.0 ** (-0.4 * (np.asarray(m, dtype=float) - 25.0))


def _mag(f):
    return 25.0 - 2.5 * np.log10(f)


def _sigmag(m):
    """Typical PSF-fit magnitude error of a reference-catalog source of magnitude m."""
    return 0.008 + 0.1 * 10.0 ** (0.4 * (np.asarray(m) - 21.0))


def _gauss2d(sigma, dx=0.0, dy=0.0):
    gx = np.exp(-0.5 * ((_GRID - dx) / sigma) ** 2)
    gy = np.exp(-0.5 * ((_GRID - dy) / sigma) ** 2)
    img = np.outer(gy, gx)
    return img / (2 * np.pi * sigma**2)


# FITS: one header made once by astropy, data appended big-endian and padded to 2880 bytes
_FITS_HEADER = fits.Header([
    ("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", _STAMP), ("NAXIS2", _STAMP),
    ("BUNIT", "DN"), ("ORIGIN", "ZTF-sim", "SIMULATED cutout, not ZTF data"),
]).tostring().encode("ascii")
_FITS_PAD = b"\0" * (-(_STAMP * _STAMP * 4) % 2880)


def _fits_gz(img, step) -> bytes:
    raw = _FITS_HEADER + (np.round(img / step) * step).astype(">f4").tobytes() + _FITS_PAD
    return gzip.compress(raw, compresslevel=1, mtime=0)


def _ps1_objid(ra, dec):
    """PS1-like objID (zone of 1/120 deg, then RA): shape only, ids are not real PS1 objects."""
    return int((dec + 90.0) * 120) * 10**13 + int(ra * 1e10) % 10**13


# --------------------------------------------------------------------------------------------
# sources: each maker draws one object's parameters and returns a _Source

@dataclass
class _Source:
    flux: object  # callable(mjd array, fid array) -> source flux array (same flux unit)
    fref: dict  # fid -> flux of the source in the reference image (0 if absent)
    scene: dict  # static description of the reference neighbourhood
    params: dict = _field(default_factory=dict)


def _galaxy_scene(rng, dmin, dmax):
    r = rng.uniform(19.3, 21.8)
    return {"ref": "galaxy", "magnr": {2: r, 1: r + rng.uniform(0.5, 1.0)},
            "distnr": rng.uniform(dmin, dmax), "sgscore1": rng.uniform(0.0, 0.12),
            "chinr": rng.uniform(1.0, 4.0), "sharpnr": rng.uniform(0.08, 0.6),
            "host_sigma": rng.uniform(2.0, 5.0)}


def _star_scene(rng, mag_r, color, sg=(0.95, 1.0), ref="star"):
    return {"ref": ref, "magnr": {2: mag_r, 1: mag_r + color}, "distnr": rng.uniform(0.02, 0.35),
            "sgscore1": rng.uniform(*sg), "chinr": rng.uniform(0.4, 1.6),
            "sharpnr": rng.uniform(-0.06, 0.06), "host_sigma": 0.0}


def _sn_ia(rng, night):
    tpk = night + rng.uniform(-55.0, 10.0)
    mpk = rng.uniform(17.3, 19.6)
    col = rng.uniform(-0.15, 0.1)  # g - r at peak
    tr, tf = rng.uniform(2.5, 5.0), rng.uniform(22.0, 38.0)
    band = {2: (tr, tf, mpk), 1: (0.9 * tr, 0.72 * tf, mpk + col)}

    def flux(t, fid):
        out = np.zeros_like(t)
        for f, (a, b, m) in band.items():
            lag = a * np.log(b / a - 1.0)  # Bazin peak: t0 + trise ln(tfall/trise - 1)
            peak = np.exp(-lag / b) * (b - a) / b
            dt = t[fid == f] - (tpk - lag)
            out[fid == f] = _flux(m) / peak * np.exp(-dt / b) / (1.0 + np.exp(-np.clip(dt / a, -50, 50)))
        return out

    return _Source(flux, {1: 0.0, 2: 0.0}, _galaxy_scene(rng, 1.0, 5.0), {"t_peak": tpk})


def _sn_ii(rng, night):
    t0 = night + rng.uniform(-80.0, -1.0)
    mpk = rng.uniform(17.8, 19.7)
    tr, tp = rng.uniform(1.5, 4.0), rng.uniform(80.0, 110.0)
    slope = {2: rng.uniform(0.004, 0.015)}
    slope[1] = slope[2] + rng.uniform(0.015, 0.035)
    m0 = {2: mpk, 1: mpk + rng.uniform(-0.15, 0.05)}

    def flux(t, fid):
        dt = t - t0
        sl = np.where(fid == 1, slope[1], slope[2])
        mm = np.where(fid == 1, m0[1], m0[2])
        rise = 1.0 / (1.0 + np.exp(-np.clip(dt / tr - 3.0, -50, 50)))
        drop = 0.08 + 0.92 / (1.0 + np.exp(np.clip((dt - tp) / 4.0, -50, 50)))
        return _flux(mm + sl * np.maximum(dt, 0.0)) * rise * drop

    return _Source(flux, {1: 0.0, 2: 0.0}, _galaxy_scene(rng, 1.0, 5.0), {"t_explosion": t0})


def _agn(rng, night):
    mr = rng.uniform(17.3, 19.3)
    col = rng.uniform(0.2, 0.6)
    tau, sf = rng.uniform(80.0, 400.0), rng.uniform(0.2, 0.45)
    amp = {2: sf / np.sqrt(2.0), 1: 1.3 * sf / np.sqrt(2.0)}
    ou_seed = int(rng.integers(2**31))
    sg = (0.02, 0.4) if rng.random() < 0.6 else (0.4, 0.9)

    def flux(t, fid):
        r = np.random.default_rng(ou_seed)
        order = np.argsort(t, kind="stable")
        x = np.empty(len(t))
        prev, xv = None, r.standard_normal()
        for i in order:  # exact Ornstein-Uhlenbeck update between epochs
            if prev is not None:
                a = np.exp(-(t[i] - prev) / tau)
                xv = a * xv + np.sqrt(1.0 - a * a) * r.standard_normal()
            x[i], prev = xv, t[i]
        base = np.where(fid == 1, mr + col, mr)
        return _flux(base + np.where(fid == 1, amp[1], amp[2]) * x)

    scene = _star_scene(rng, mr, col, sg=sg, ref="nucleus")
    scene["host_sigma"] = rng.uniform(1.5, 3.0) if sg[1] < 0.5 else 0.0
    # reference coadd: the long-term mean, give or take what the DRW did during the reference epoch
    off = rng.normal(0.0, 0.08)
    fref = {2: float(_flux(mr + off)), 1: float(_flux(mr + col + 1.3 * off))}
    scene["magnr"] = {f: float(_mag(v)) for f, v in fref.items()}
    return _Source(flux, fref, scene, {"tau": tau, "sf_inf": sf})


def _periodic(shape, mr, col, amp, period, phase0, rng):
    ph = (np.arange(400) + 0.5) / 400
    fref = {f: float(np.mean(_flux(mr + (col if f == 1 else 0.0) + amp[f] * shape(ph))))
            for f in (1, 2)}

    def flux(t, fid):
        p = ((t - phase0) / period) % 1.0
        return _flux(np.where(fid == 1, mr + col, mr) + np.where(fid == 1, amp[1], amp[2]) * shape(p))

    scene = _star_scene(rng, mr, col)
    scene["magnr"] = {f: float(_mag(v)) for f, v in fref.items()}
    return flux, fref, scene


def _rrl(rng, night):
    period = rng.uniform(0.45, 0.75)
    rise = rng.uniform(0.12, 0.2)
    ag = rng.uniform(0.6, 1.1)

    def shape(p):  # magnitude offset: quick brightening, slow fading (RRab)
        return np.where(p < rise, 0.5 - p / rise, -0.5 + (p - rise) / (1.0 - rise))

    flux, fref, scene = _periodic(shape, rng.uniform(14.5, 18.3), rng.uniform(0.1, 0.35),
                                  {1: ag, 2: 0.72 * ag}, period, night + rng.uniform(0, 1), rng)
    return _Source(flux, fref, scene, {"period": period})


def _eb(rng, night):
    period = float(np.exp(rng.uniform(np.log(0.4), np.log(4.0))))
    d1 = rng.uniform(0.3, 1.0)
    d2, w, ell = d1 * rng.uniform(0.1, 0.7), rng.uniform(0.03, 0.07), rng.uniform(0.0, 0.08)

    def shape(p):
        dp1 = np.minimum(p, 1.0 - p)
        dp2 = np.abs(p - 0.5)
        return (d1 * np.exp(-0.5 * (dp1 / w) ** 2) + d2 * np.exp(-0.5 * (dp2 / w) ** 2)
                + ell * 0.5 * (1.0 - np.cos(4 * np.pi * p)))

    flux, fref, scene = _periodic(shape, rng.uniform(14.0, 18.0), rng.uniform(0.1, 0.7),
                                  {1: 1.1, 2: 1.0}, period, night + rng.uniform(0, period), rng)
    return _Source(flux, fref, scene, {"period": period})


def _neighbour_scene(rng, dmin, dmax):
    m = rng.uniform(18.0, 21.5)
    return {"ref": "neighbour", "magnr": {2: m, 1: m + rng.uniform(0.3, 1.2)},
            "distnr": rng.uniform(dmin, dmax), "sgscore1": rng.uniform(0.0, 1.0),
            "chinr": rng.uniform(0.5, 3.0), "sharpnr": rng.uniform(-0.1, 0.4), "host_sigma": 0.0}


def _asteroid(rng, night):
    mag = rng.uniform(17.5, 20.0)
    num = int(rng.integers(1000, 700000))
    if rng.random() < 0.3:  # a provisional designation instead of a number
        name = f"{rng.integers(2005, 2024)}{'ABCDEFGH'[num % 8]}{'KLMNP'[num % 5]}{num % 99}"
    else:
        name = str(num)

    def flux(t, fid):  # seen in one exposure only: _observe puts it there
        return np.zeros_like(t)

    scene = _neighbour_scene(rng, 2.0, 15.0)
    scene["ss"] = {"ssdistnr": rng.uniform(0.0, 3.0), "ssmagnr": mag + rng.normal(0, 0.3),
                   "ssnamenr": name}
    return _Source(flux, {1: 0.0, 2: 0.0}, scene, {"mag": mag})


def _bogus(rng, night):
    kind = ("dipole", "cosmic", "streak")[int(rng.integers(3))]
    if kind == "dipole":
        scene = _star_scene(rng, rng.uniform(11.5, 15.0), rng.uniform(0.3, 1.0))
        scene["ref"] = "bright star"
    else:
        scene = _neighbour_scene(rng, 1.5, 20.0)
    rate = rng.uniform(0.0, 0.05)
    return _Source(lambda t, fid: np.zeros_like(t), {1: 0.0, 2: 0.0}, scene,
                   {"artifact": kind, "rate": rate})


_MAKERS = {"SNIa": _sn_ia, "SNII": _sn_ii, "AGN": _agn, "RRL": _rrl, "EB": _eb,
           "asteroid": _asteroid, "bogus": _bogus}


# --------------------------------------------------------------------------------------------
@dataclass
class SimObject:
    """One simulated object: its truth, sky position, scene and all epochs (tonight included)."""
    index: int
    oid: str
    cls: str
    ra: float
    dec: float
    src: _Source
    ep: dict  # per-epoch arrays
    const: dict  # per-object constant alert fields

    @property
    def period(self):
        return self.src.params.get("period")


def _schedule(rng, night, cls):
    """Survey epochs: 30-90 nights of history (each night the field is visited with some
    probability, g and/or r, at random times of the Palomar night), then tonight's visits."""
    hist = int(rng.integers(30, 91))
    nights = np.arange(night - hist, night, dtype=float)
    nights = nights[rng.random(hist) < rng.uniform(0.35, 0.75)]
    t = np.concatenate([nights, nights])
    f = np.repeat([1, 2], len(nights))
    keep = rng.random(len(t)) < 0.8
    t, f = t[keep], f[keep]
    if cls == "asteroid" or rng.random() < 0.3:
        tn_f = np.array([int(rng.integers(1, 3))])
    else:
        tn_f = np.array([1, 2])
    t = np.concatenate([t, np.full(len(tn_f), float(night))]) + rng.uniform(0.14, 0.48, len(t) + len(tn_f))
    f = np.concatenate([f, tn_f])
    order = np.argsort(t, kind="stable")
    return t[order], f[order].astype(np.int64)


def _observe(rng, src, cls, t, f, night):
    """Noisy difference fluxes, limits and the detection mask for the epochs (t, f)."""
    n = len(t)
    lim = np.clip(rng.normal(20.35, 0.35, n) + 0.1 * (f == 1), 19.5, 21.0)
    sig = _flux(lim) / 5.0
    tonight = t >= night
    true = src.flux(t, f) - np.where(f == 1, src.fref[1], src.fref[2])
    if cls == "asteroid":
        true = np.where(tonight, _flux(np.minimum(src.params["mag"], lim - 0.3)), 0.0)
    elif cls == "bogus":
        art = (rng.random(n) < src.params["rate"]) | tonight & (np.arange(n) == np.flatnonzero(tonight)[0])
        sign = rng.choice([-1.0, 1.0], n) if src.params["artifact"] == "dipole" else 1.0
        true = np.where(art, sign * _flux(lim - rng.uniform(0.3, 1.5, n)), 0.0)
    err = np.sqrt(sig**2 + (0.015 * true) ** 2)
    obs = true + err * rng.standard_normal(n)
    det = np.abs(obs) >= 5.0 * sig
    return {"mjd": t, "fid": f, "lim": lim, "sig": sig, "err": err, "true": true, "obs": obs,
            "det": det, "tonight": tonight}


def _oid(seed, i, year):
    n = (seed % 8000) * 10**6 + i
    letters = []
    for _ in range(7):
        n, r = divmod(n, 26)
        letters.append(chr(97 + r))
    return f"ZTFSIM{year % 100:02d}{''.join(reversed(letters))}"


def _radec(rng, cls):
    if cls == "asteroid":  # near the ecliptic (obliquity 23.44 deg)
        for _ in range(1000):
            lam, beta = np.radians(rng.uniform(0, 360)), np.radians(rng.normal(0, 8))
            eps = np.radians(23.4393)
            sd = np.sin(beta) * np.cos(eps) + np.cos(beta) * np.sin(eps) * np.sin(lam)
            dec = np.degrees(np.arcsin(sd))
            ra = np.degrees(np.arctan2(np.sin(lam) * np.cos(eps) - np.tan(beta) * np.sin(eps),
                                       np.cos(lam))) % 360
            if -30 <= dec <= 80:
                return float(ra), float(dec)
    sd = rng.uniform(np.sin(np.radians(-30)), np.sin(np.radians(80)))
    return float(rng.uniform(0, 360)), float(np.degrees(np.arcsin(sd)))


def _mjd_to_date(mjd):
    return _dt.datetime(1858, 11, 17) + _dt.timedelta(days=float(mjd))


def _make_object(seed, i, cls, night):
    rng = np.random.default_rng([seed, i])
    ra, dec = _radec(rng, cls)
    for _ in range(200):  # resample until something is detected tonight (an alert exists)
        src = _MAKERS[cls](rng, night)
        t, f = _schedule(rng, night, cls)
        ep = _observe(rng, src, cls, t, f, night)
        if (ep["det"] & ep["tonight"]).any():
            break
    else:  # pragma: no cover - practically unreachable
        raise RuntimeError(f"could not make a detectable {cls}")
    obj = SimObject(i, "", cls, ra, dec, src, ep, {})
    _fill_epochs(rng, obj, seed)
    first = obj.const["jdstart_before"] or float(ep["jd"][ep["det"]][0])  # like ZTF: year of 1st det.
    obj.oid = _oid(seed, i, _mjd_to_date(first - _MJD_JD).year)
    return obj


def _fill_epochs(rng, obj, seed):
    """Per-object constant fields and per-epoch alert columns (vectorised)."""
    ep, sc, cls = obj.ep, obj.src.scene, obj.cls
    n = len(ep["mjd"])
    real = cls != "bogus"
    theta = rng.uniform(0, 2 * np.pi)
    cosd = np.cos(np.radians(obj.dec))
    dnr = sc["distnr"]
    ranr = obj.ra + dnr * np.sin(theta) / cosd / 3600.0
    decnr = obj.dec + dnr * np.cos(theta) / 3600.0
    fieldid, rcid = int(rng.integers(245, 880)), int(rng.integers(0, 64))
    x, y = rng.uniform(15, 3057), rng.uniform(15, 3065)
    progid = 1 if rng.random() < 0.8 else 2
    stellar = sc["ref"] in ("star", "bright star")
    # PS1: nearest = the reference source, two more further out
    d1 = dnr * rng.uniform(0.9, 1.1) if sc["ref"] != "neighbour" else dnr
    d2 = d1 + rng.uniform(0.5, 8.0)
    d3 = d2 + rng.uniform(0.5, 8.0)
    r1 = sc["magnr"][2] - (0.8 if sc["ref"] == "galaxy" else 0.0)
    g1 = r1 + (sc["magnr"][1] - sc["magnr"][2])
    const = {
        "programpi": "Kulkarni", "programid": progid, "rcid": rcid, "field": fieldid,
        "distnr": {f: dnr for f in (1, 2)}, "ranr": float(ranr), "decnr": float(decnr),
        "magnr": sc["magnr"], "sigmagnr": {f: float(_sigmag(m)) for f, m in sc["magnr"].items()},
        "chinr": sc["chinr"], "sharpnr": sc["sharpnr"],
        "sgmag1": g1, "srmag1": r1, "simag1": r1 - 0.25 * (g1 - r1), "szmag1": r1 - 0.35 * (g1 - r1),
        "sgscore1": sc["sgscore1"], "distpsnr1": d1, "objectidps1": _ps1_objid(ranr, decnr),
        "objectidps2": _ps1_objid(ranr + d2 / 3600.0 / cosd, decnr),
        "objectidps3": _ps1_objid(ranr - d3 / 3600.0 / cosd, decnr),
        "sgmag2": rng.uniform(19.5, 22.5), "srmag2": rng.uniform(19, 22), "simag2": -999.0,
        "szmag2": rng.uniform(18.5, 21.5), "sgscore2": rng.uniform(0, 1), "distpsnr2": d2,
        "sgmag3": -999.0, "srmag3": rng.uniform(19, 22.5), "simag3": rng.uniform(18.5, 22),
        "szmag3": rng.uniform(18.5, 21.5), "sgscore3": rng.uniform(0, 1), "distpsnr3": d3,
        "nmtchps": int(rng.integers(5, 90)), "jdstartref": rng.uniform(2458200, 2458400),
        "nframesref": int(rng.integers(15, 41)), "rbversion": "t17_f5_c3", "drbversion": "d6_m7",
        "neargaia": d1 if (stellar or cls == "AGN" and rng.random() < 0.5) else rng.uniform(4, 60),
        "maggaia": (sc["magnr"][2] - 0.15) if stellar else rng.uniform(15.5, 20.5),
        "neargaiabright": rng.uniform(0.5, 15) if sc["ref"] == "bright star" else rng.uniform(15, 400),
        "maggaiabright": rng.uniform(10, 14) if sc["ref"] != "bright star" else sc["magnr"][2] - 0.2,
        "exptime": 30.0, "ss": sc.get("ss"), "theta": theta, "x": x, "y": y,
        # earlier detections before the simulated window (stars and AGN are old news)
        "ndet_before": int(rng.integers(20, 600)) if cls in ("AGN", "RRL", "EB") else 0,
        "ncov_before": int(rng.integers(50, 1500)),
        "jdstart_before": rng.uniform(2458300, 2459500) if cls in ("AGN", "RRL", "EB") else None,
    }
    if sc["ref"] == "bright star":
        const["neargaiabright"] = d1
    const["ncov_before"] += const["ndet_before"]
    const["jdendref"] = const["jdstartref"] + rng.uniform(20, 80)
    const["rfid"] = {f: fieldid * 10**6 + 120000 + f * 100 + rcid for f in (1, 2)}
    obj.const = const

    mjd, fid, obs, err, sig = ep["mjd"], ep["fid"], ep["obs"], ep["err"], ep["sig"]
    nid = np.floor(mjd).astype(np.int64) - _MJD_ZTF_NID0
    pid = SIM_CANDID_MIN // 10**6 + nid * 10**5 + (seed % 1000) * 100 + rcid
    absf = np.maximum(np.abs(obs), 1e-3)
    mag = _mag(absf)
    smag = np.clip(1.0857 * err / absf, 0.0, 1.5)
    fwhm = rng.uniform(1.6, 3.6, n) / _PIX
    art = obj.src.params.get("artifact")
    if art == "cosmic":
        fwhm = rng.uniform(0.6, 1.3, n)
    pos_err = (0.08 + 0.6 * smag) / 3600.0
    elong = 1.0 + np.abs(rng.normal(0, 0.12, n))
    if art == "streak":
        elong = rng.uniform(2.5, 8.0, n)
    aimage = fwhm * _PIX * 0.45 * np.sqrt(elong)
    magap = mag + rng.normal(0, 1, n) * smag * (1.2 if real else 3.0)
    zp = np.where(fid == 1, 26.33, 26.22) + rng.normal(0, 0.04, n)
    dn = 10.0 ** (-0.4 * (25.0 - zp))
    # per-pixel noise so that a PSF fit on the difference stamp has the flux error sig
    sig_pix = sig * dn / np.sqrt(4 * np.pi * (fwhm / 2.3548) ** 2)
    ep.update({
        "jd": mjd + _MJD_JD, "pid": pid, "nid": nid, "mag": mag, "smag": np.maximum(smag, 0.01),
        "ra": obj.ra + rng.normal(0, 1, n) * pos_err / cosd, "dec": obj.dec + rng.normal(0, 1, n) * pos_err,
        "fwhm": fwhm, "elong": elong, "aimage": aimage, "bimage": aimage / elong,
        "magap": magap, "sigmagap": smag * 1.25 + 0.005, "magapbig": magap + rng.normal(0, 0.03, n),
        "zp": zp, "dn": dn, "sig_pix": sig_pix, "bkg": rng.uniform(100, 260, n),
        "rb": (0.55 + 0.45 * rng.beta(5, 1.5, n)) if real else rng.uniform(0.02, 0.35, n),
        "drb": (1.0 - 0.2 * rng.beta(1, 25, n)) if real else 0.25 * rng.beta(1, 6, n),
        "chipsf": rng.uniform(0.5, 2.5, n) * (1 if real else 4),
        "classtar": rng.uniform(0.8, 1.0, n) if real else rng.uniform(0.0, 0.9, n),
        "nneg": rng.integers(0, 4, n) + (rng.integers(5, 40, n) if art == "dipole" else 0),
        "nbad": rng.integers(0, 1 if real else 6, n),
        "sumrat": rng.uniform(0.85, 1.0, n) if real else rng.uniform(0.2, 0.8, n),
        "seeratio": rng.uniform(0.6, 1.6, n), "sky": rng.normal(0, 0.6, n),
        "xpos": x + rng.normal(0, 0.3, n), "ypos": y + rng.normal(0, 0.3, n),
        "zpunc": rng.uniform(2e-6, 2e-5, n), "zprms": rng.uniform(0.012, 0.04, n),
        "clr": np.where(fid == 1, -0.04, 0.09) + rng.normal(0, 0.02, n),
        "clrunc": rng.uniform(5e-6, 3e-5, n), "adp": rng.uniform(0.06, 0.14, (n, 2)),
        "dsnrms": rng.uniform(2, 40, n), "ssnrms": rng.uniform(5, 60, n),
        "nmatches": rng.integers(400, 2500, n),
    })
    ep["candid"] = np.full(n, -1, dtype=np.int64)


# --------------------------------------------------------------------------------------------
@dataclass
class Night:
    """A planned night: objects with their epochs; packets are made lazily by :meth:`packets`."""
    seed: int
    mjd: int
    objects: list

    def truth(self) -> list[dict]:
        """One row per object: oid, class (light-curve class), stamp_class, simulated, period."""
        return [{"oid": o.oid, "class": o.cls, "stamp_class": STAMP_CLASS[o.cls], "simulated": True,
                 "period": o.period} for o in self.objects]

    def alerts(self) -> list[tuple[float, int, int]]:
        """(jd, object index, epoch index) of tonight's detections, in time order."""
        out = []
        for o in self.objects:
            for k in np.flatnonzero(o.ep["det"] & o.ep["tonight"]):
                out.append((float(o.ep["jd"][k]), o.index, int(k)))
        return sorted(out)

    def packets(self) -> Iterator[tuple[int, bytes]]:
        """``(candid, Avro container bytes)`` per alert, in time order."""
        for _, i, k in self.alerts():
            candid, body = _alert_bytes(self.objects[i], k, self.seed)
            yield candid, _container(candid, body)


def _class_counts(n, classes):
    if classes is None:
        weights = dict(CLASSES)
    elif isinstance(classes, dict):
        weights = {k: float(v) for k, v in classes.items() if v > 0}
    else:
        weights = {k: 1.0 for k in classes}
    bad = set(weights) - set(_MAKERS)
    if bad or not weights:
        raise ValueError(f"unknown classes {sorted(bad)}; choose from {sorted(_MAKERS)}")
    names = list(weights)
    w = np.array([weights[k] for k in names]) / sum(weights.values())
    counts = np.floor(w * n).astype(int)
    rest = np.argsort(-(w * n - counts), kind="stable")[: n - counts.sum()]
    counts[rest] += 1  # largest-remainder apportionment: the mix is exact, not drawn
    return [name for name, c in zip(names, counts) for _ in range(c)]


def plan_night(n_objects: int, seed: int = 0, mjd: float | None = None, classes=None) -> Night:
    """Plan ``n_objects`` objects for the night starting at MJD ``mjd`` (default 60400).

    ``classes``: None (default mix :data:`CLASSES`), a list of class names (equal shares) or a dict
    name -> weight. Shares are apportioned exactly, then shuffled with ``seed``.
    """
    night = int(np.floor(60400 if mjd is None else mjd))
    if not (0 <= int(n_objects) < 10**6 and int(seed) >= 0):
        raise ValueError("need 0 <= n_objects < 1e6 and seed >= 0")
    if not _MJD_ZTF_NID0 + 100 <= night < _MJD_ZTF_NID0 + 90000:
        raise ValueError(f"mjd {mjd} outside the simulated range (MJD 57854 to 147754)")
    labels = _class_counts(int(n_objects), classes)
    np.random.default_rng([seed, 2**31]).shuffle(labels)
    objects = [_make_object(seed, i, cls, night) for i, cls in enumerate(labels)]
    counter = {}
    for o in objects:  # candids in a fixed order: pid * 1e6 + running number within the pid
        for k in np.flatnonzero(o.ep["det"]):
            p = int(o.ep["pid"][k])
            counter[p] = counter.get(p, 0) + 1
            o.ep["candid"][k] = p * 10**6 + counter[p]
    return Night(seed, night, objects)


def simulate_packets(n_objects: int, seed: int = 0, mjd: float | None = None,
                     classes=None) -> Iterator[tuple[int, bytes]]:
    """Yield ``(candid, avro bytes)`` for every alert of a simulated night, in time order."""
    yield from plan_night(n_objects, seed, mjd, classes).packets()


def truth_table(n_objects: int, seed: int = 0, mjd: float | None = None, classes=None) -> list[dict]:
    """The true classes of the objects :func:`simulate_packets` would make with these arguments."""
    return plan_night(n_objects, seed, mjd, classes).truth()


def simulate_night(out_dir, n_objects: int, seed: int = 0, mjd: float | None = None,
                   classes=None) -> list[Path]:
    """Write ``<candid>.avro`` per alert and ``truth.csv`` (oid, class, stamp_class, simulated,
    period) into ``out_dir``; return the packet paths in time order."""
    return write_night(plan_night(n_objects, seed, mjd, classes), out_dir)


def write_night(night: Night, out_dir) -> list[Path]:
    """Write a planned night's packets and ``truth.csv`` into ``out_dir``; the packet paths in time order."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for candid, data in night.packets():
        path = out / f"{candid}.avro"
        path.write_bytes(data)
        paths.append(path)
    with open(out / "truth.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["oid", "class", "stamp_class", "simulated", "period"])
        w.writeheader()
        for row in night.truth():
            w.writerow({**row, "period": "" if row["period"] is None else f"{row['period']:.6f}"})
    return paths


# --------------------------------------------------------------------------------------------
# records. Per object, the prv_candidate and fp_hist rows of all epochs are Avro-encoded once,
# column by column with numpy; an alert's arrays are then byte slices of them (its prv_candidates
# are the epochs before it, its fp_hists those of the last 30 days). The candidate is written by
# fastavro; the container (magic, metadata, sync, one block) by hand, per the Avro 1.11 spec.

def _spec(tokens):
    return [(t.split(":")[0], t.split(":")[1].rstrip("?*"), t[-1] in "?*") for t in tokens]


_PRV_SPEC = _spec(_prv_tokens())
_FP_SPEC = _spec(_FP_HIST.split())
_CAND_PARSED = fastavro.parse_schema(_record("candidate", _fields(_CANDIDATE.split())))
_U64 = np.uint64


def _vint(i: int) -> bytes:
    """Avro long: zig-zag, then base-128 varint."""
    z = (i << 1) ^ (i >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _str(s) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return _vint(len(b)) + b


def _true(shape):
    return np.ones(shape, bool)


def _rows_of(enc, n):
    out = np.empty((n, len(enc)), np.uint8)
    out[:] = enc
    return out


def _varint_cols(v):
    if v.min() == v.max():  # constant column: encode once
        enc = np.frombuffer(_vint(int(v[0])), np.uint8)
        return _rows_of(enc, len(v)), _true((len(v), len(enc)))
    z = ((v << 1) ^ (v >> 63)).view(_U64)
    width = max(1, -(-int(z.max(initial=0)).bit_length() // 7))
    if width == 1:
        return z.astype(np.uint8)[:, None], _true((len(v), 1))
    rest = z[:, None] >> (np.arange(width, dtype=_U64) * _U64(7))
    nb = np.maximum(1, (rest != 0).sum(1))
    idx = np.arange(width)
    cont = np.where(idx < nb[:, None] - 1, _U64(0x80), _U64(0))
    return ((rest & _U64(0x7F)) | cont).astype(np.uint8), idx < nb[:, None]


def _string_cols(vals):
    n = len(vals)
    lens = np.fromiter(map(len, vals), np.int64, n)
    if lens.min() == lens.max() and lens[0] < 64:  # same length (file names, 't'/'f', constants)
        text = "".join(vals).encode()
        if len(text) == n * lens[0]:  # ASCII: one byte per character
            data = np.empty((n, lens[0] + 1), np.uint8)
            data[:, 0] = 2 * lens[0]  # the length as a one-byte zig-zag varint
            data[:, 1:] = np.frombuffer(text, np.uint8).reshape(n, -1)
            return data, _true(data.shape)
    enc = [_str(s) for s in vals]
    lens = np.fromiter(map(len, enc), np.int64, n)
    data = np.zeros((n, lens.max()), np.uint8)
    for i, e in enumerate(enc):
        data[i, :len(e)] = np.frombuffer(e, np.uint8)
    return data, np.arange(lens.max()) < lens[:, None]


def _encode_rows(spec, cols, n):
    """Avro-encode n records column-wise; ``cols[name] = (values, present)``. Returns the
    concatenated bytes and the n + 1 row offsets. Runs of float/double fields are done together."""
    datas, masks = [], []
    i = 0
    while i < len(spec):
        name, typ, nullable = spec[i]
        if typ in ("double", "float"):
            j = i
            while j < len(spec) and spec[j][1:] == (typ, nullable):
                j += 1
            names = [s[0] for s in spec[i:j]]
            vals = np.array([cols[k][0] for k in names], "<f8" if typ == "double" else "<f4")
            d = np.ascontiguousarray(vals.T).view(np.uint8).reshape(n, j - i, -1)
            m = _true(d.shape)
            if nullable:  # union ["null", typ]: branch index 0 or 1 (zig-zag varint byte), value
                present = np.array([cols[k][1] for k in names]).T
                d = np.concatenate([np.where(present, 2, 0).astype(np.uint8)[..., None], d], axis=2)
                m = np.concatenate([_true(present.shape + (1,)),
                                    np.broadcast_to(present[..., None], m.shape)], axis=2)
            datas.append(d.reshape(n, -1))
            masks.append(m.reshape(n, -1))
            i = j
            continue
        vals, present = cols[name]
        if typ in ("int", "long"):
            d, m = _varint_cols(np.asarray(vals, np.int64))
        else:
            d, m = _string_cols(vals)
        if nullable:
            datas.append(np.where(present, 2, 0).astype(np.uint8)[:, None])
            masks.append(_true((n, 1)))
            m = m & present[:, None]
        datas.append(d)
        masks.append(m)
        i += 1
    mask = np.concatenate(masks, axis=1)
    data = np.concatenate(datas, axis=1)[mask].tobytes()
    return data, np.concatenate([[0], np.cumsum(mask.sum(1))])


@functools.lru_cache(maxsize=4096)
def _night_str(night: int) -> str:
    return f"{_mjd_to_date(night):%Y%m%d}"


def _filename(mjd, fid, field, rcid):
    frac = min(int(round((mjd % 1.0) * 1e6)), 999999)
    return (f"ztfsim_{_night_str(int(mjd))}{frac:06d}_{field:06d}_z{'gri'[fid - 1]}_c{rcid // 4 + 1:02d}_o_"
            f"q{rcid % 4 + 1}_scimrefdiffimg.fits")


def _columns(obj):
    """(values, present) per prv_candidate field and per fp_hist field, over all epochs."""
    ep, c = obj.ep, obj.const
    n, det, fid = len(ep["mjd"]), ep["det"], ep["fid"]
    full, ones = (lambda v: np.full(n, v)), np.ones(n, bool)
    per_band = lambda d: np.where(fid == 1, d[1], d[2])  # noqa: E731
    ss = c["ss"] or {"ssdistnr": -999.0, "ssmagnr": -999.0, "ssnamenr": "null"}
    x, y = ep["xpos"], ep["ypos"]
    every = {
        "jd": ep["jd"], "fid": fid, "pid": ep["pid"], "diffmaglim": ep["lim"],
        "pdiffimfilename": [_filename(m, f, c["field"], c["rcid"])
                            for m, f in zip(ep["mjd"].tolist(), fid.tolist())],
        "programpi": [c["programpi"]] * n, "programid": full(c["programid"]), "nid": ep["nid"],
        "rcid": full(c["rcid"]), "field": full(c["field"]), "magzpsci": ep["zp"],
        "magzpsciunc": ep["zpunc"], "magzpscirms": ep["zprms"], "clrcoeff": ep["clr"],
        "clrcounc": ep["clrunc"], "rbversion": [c["rbversion"]] * n,
    }
    detected = {
        "candid": ep["candid"], "isdiffpos": np.where(ep["obs"] > 0, "t", "f").tolist(),
        "tblid": ep["candid"] % 100, "xpos": x, "ypos": y, "ra": ep["ra"] % 360.0, "dec": ep["dec"],
        "magpsf": ep["mag"], "sigmapsf": ep["smag"], "chipsf": ep["chipsf"], "magap": ep["magap"],
        "sigmagap": ep["sigmagap"], "distnr": per_band(c["distnr"]), "magnr": per_band(c["magnr"]),
        "sigmagnr": per_band(c["sigmagnr"]), "chinr": full(c["chinr"]), "sharpnr": full(c["sharpnr"]),
        "sky": ep["sky"], "magdiff": ep["magap"] - ep["mag"], "fwhm": ep["fwhm"],
        "classtar": ep["classtar"], "mindtoedge": np.minimum.reduce([x, y, 3072 - x, 3080 - y]),
        "magfromlim": ep["lim"] - ep["magap"], "seeratio": ep["seeratio"], "aimage": ep["aimage"],
        "bimage": ep["bimage"], "aimagerat": ep["aimage"] / ep["fwhm"],
        "bimagerat": ep["bimage"] / ep["fwhm"], "elong": ep["elong"], "nneg": ep["nneg"],
        "nbad": ep["nbad"], "rb": ep["rb"], "ssdistnr": full(ss["ssdistnr"]),
        "ssmagnr": full(ss["ssmagnr"]), "ssnamenr": [ss["ssnamenr"]] * n, "sumrat": ep["sumrat"],
        "magapbig": ep["magapbig"], "sigmagapbig": ep["sigmagap"] * 1.15, "ranr": full(c["ranr"]),
        "decnr": full(c["decnr"]), "scorr": np.abs(ep["obs"]) / ep["sig"],
    }
    prv = {k: (v, ones) for k, v in every.items()}
    prv.update({k: (v, det) for k, v in detected.items()})
    fp = {
        "field": full(c["field"]), "rcid": full(c["rcid"]), "fid": fid, "pid": ep["pid"],
        "rfid": per_band(c["rfid"]), "sciinpseeing": ep["fwhm"], "scibckgnd": ep["bkg"],
        "scisigpix": ep["sig_pix"], "magzpsci": ep["zp"], "magzpsciunc": ep["zpunc"],
        "magzpscirms": ep["zprms"], "clrcoeff": ep["clr"], "clrcounc": ep["clrunc"],
        "exptime": full(30.0), "adpctdif1": ep["adp"][:, 0], "adpctdif2": ep["adp"][:, 1],
        "diffmaglim": ep["lim"], "programid": full(c["programid"]), "jd": ep["jd"],
        "forcediffimflux": ep["obs"] * ep["dn"], "forcediffimfluxunc": ep["err"] * ep["dn"],
        "procstatus": ["0"] * n, "distnr": per_band(c["distnr"]), "ranr": full(c["ranr"]),
        "decnr": full(c["decnr"]), "magnr": per_band(c["magnr"]), "sigmagnr": per_band(c["sigmagnr"]),
        "chinr": full(c["chinr"]), "sharpnr": full(c["sharpnr"]),
    }
    return prv, {k: (v, ones) for k, v in fp.items()}


def _encoded(obj):
    """Cached (prv columns, prv bytes, prv offsets, fp bytes, fp offsets) of an object."""
    if "_enc" not in obj.ep:
        n = len(obj.ep["mjd"])
        prv, fp = _columns(obj)
        obj.ep["_enc"] = (prv, *_encode_rows(_PRV_SPEC, prv, n), *_encode_rows(_FP_SPEC, fp, n))
    return obj.ep["_enc"]


def _candidate(obj, k, prv):
    """The candidate record of epoch k (a detection tonight)."""
    ep, c = obj.ep, obj.const
    cand = dict.fromkeys(_CAND_NAMES)
    for name, (vals, present) in prv.items():
        v = vals[k]
        cand[name] = v.item() if isinstance(v, np.generic) else v
    fid, jd = cand["fid"], cand["jd"]
    det_upto = np.flatnonzero(ep["det"][: k + 1])
    cand.update({n: c[n] for n in (
        "sgmag1", "srmag1", "simag1", "szmag1", "sgscore1", "distpsnr1", "objectidps1",
        "objectidps2", "sgmag2", "srmag2", "simag2", "szmag2", "sgscore2", "distpsnr2",
        "objectidps3", "sgmag3", "srmag3", "simag3", "szmag3", "sgscore3", "distpsnr3",
        "nmtchps", "jdstartref", "jdendref", "nframesref", "drbversion", "neargaia",
        "neargaiabright", "maggaia", "maggaiabright", "exptime")})
    cand.update({
        "ndethist": c["ndet_before"] + len(det_upto), "ncovhist": c["ncov_before"] + k + 1,
        "jdstarthist": c["jdstart_before"] or float(ep["jd"][det_upto[0]]), "jdendhist": jd,
        "tooflag": 0, "rfid": c["rfid"][fid], "dsnrms": float(ep["dsnrms"][k]),
        "ssnrms": float(ep["ssnrms"][k]), "dsdiff": float(ep["dsnrms"][k] - ep["ssnrms"][k]),
        "nmatches": int(ep["nmatches"][k]), "zpclrcov": -8e-6, "zpmed": float(ep["zp"][k]) + 0.03,
        "clrmed": 0.55 if fid == 2 else 0.45, "clrrms": 0.14, "drb": float(ep["drb"][k]),
    })
    if obj.cls == "asteroid":  # a moving object: nothing was ever detected at this position
        cand.update(ndethist=1, jdstarthist=jd)
    for key in ("sgmag1", "srmag1", "simag1", "szmag1", "sgscore1", "distpsnr1", "neargaia",
                "neargaiabright", "maggaia", "maggaiabright", "jdstartref", "jdendref"):
        cand[key] = float(cand[key])
    return cand


def _array(data, count) -> bytes:
    """["null", array] union: null when empty, else one block of ``count`` items."""
    return b"\x00" if count == 0 else b"\x02" + _vint(count) + data + b"\x00"


def _alert_bytes(obj, k, seed) -> tuple[int, bytes]:
    """Avro body of the alert of object ``obj`` at epoch ``k`` (fields in schema order)."""
    prv, prv_data, prv_off, fp_data, fp_off = _encoded(obj)
    cand = _candidate(obj, k, prv)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, _CAND_PARSED, cand)
    candid, pid = cand["candid"], cand["pid"]
    j0 = int(np.searchsorted(obj.ep["mjd"], obj.ep["mjd"][k] - 30.0))
    sci, ref, diff = _cutouts(obj, k, seed)
    parts = [_str(SCHEMA_VERSION), _str(PUBLISHER), _str(obj.oid), _vint(candid), buf.getvalue(),
             _array(prv_data[: prv_off[k]], k), _array(fp_data[fp_off[j0]: fp_off[k]], k - j0)]
    for name, data in ((f"candid{candid}_pid{pid}_targ_sci.fits.gz", sci),
                       (f"candid{candid}_ref.fits.gz", ref),
                       (f"candid{candid}_pid{pid}_targ_scimref.fits.gz", diff)):
        parts.append(b"\x02" + _str(name) + _str(data))
    return candid, b"".join(parts)


_META = {"avro.schema": json.dumps(alert_schema()).encode(), "avro.codec": b"null",
         "ztf.sim": b"SIMULATED alert, not ZTF data"}
_HEADER = (b"Obj\x01" + _vint(len(_META)) + b"".join(_str(k) + _str(v) for k, v in _META.items())
           + b"\x00")


def _container(candid: int, body: bytes) -> bytes:
    """Object container file: header, then one block of one record (null codec)."""
    sync = hashlib.md5(str(candid).encode()).digest()
    return _HEADER + sync + _vint(1) + _vint(len(body)) + body + sync


# --------------------------------------------------------------------------------------------
# cutouts: template = sky + reference sources; science = template + transient; difference =
# science - template (so the transient plus the noise of both)

def _template_signal(obj, fid, dn):
    """Noiseless reference sources around the candidate, in DN (cached per band)."""
    key = ("_tmpl", fid)
    if key not in obj.ep:
        sc, c = obj.src.scene, obj.const
        d = sc["distnr"] / _PIX
        dx, dy = -d * np.sin(c["theta"]), d * np.cos(c["theta"])  # east to the left
        if sc["ref"] == "galaxy":  # host: extended, total ~0.8 mag brighter than its PSF magnitude
            img = _gauss2d(sc["host_sigma"], dx, dy) * float(_flux(sc["magnr"][fid] - 0.8))
        else:
            img = _gauss2d(2.0 / _PIX / 2.3548, dx, dy) * float(_flux(sc["magnr"][fid]))
            if sc.get("host_sigma"):
                img += _gauss2d(sc["host_sigma"] * 2, dx, dy) * float(_flux(sc["magnr"][fid] + 0.3))
        obj.ep[key] = img
    return obj.ep[key] * dn


def _artifact(kind, sigma, rng):
    if kind == "dipole":
        a = rng.uniform(0, 2 * np.pi)
        s = rng.uniform(0.7, 1.6)
        return _gauss2d(sigma, s * np.cos(a), s * np.sin(a)) - _gauss2d(sigma, -s * np.cos(a), -s * np.sin(a))
    if kind == "cosmic":
        img = np.zeros((_STAMP, _STAMP))
        img[_C, _C] = 0.6
        img[_C + int(rng.integers(-1, 2)), _C + int(rng.integers(-1, 2))] += 0.4
        return img
    a = rng.uniform(0, np.pi)  # streak: a line through the centre
    dist = np.abs(_GRID[:, None] * np.cos(a) - _GRID[None, :] * np.sin(a))
    along = np.abs(_GRID[:, None] * np.sin(a) + _GRID[None, :] * np.cos(a))
    img = np.exp(-0.5 * (dist / 0.8) ** 2) * (along < 15)
    return img / img.sum()


def _cutouts(obj, k, seed):
    ep = obj.ep
    rng = np.random.default_rng([seed, obj.index, 10**6 + k])
    fid, dn = int(ep["fid"][k]), float(ep["dn"][k])
    sigma = float(ep["fwhm"][k]) / 2.3548
    sig_s = float(ep["sig_pix"][k])
    sig_t = sig_s / np.sqrt(obj.const["nframesref"]) * 1.5
    bkg_s, bkg_t = float(ep["bkg"][k]), float(ep["bkg"][k]) * rng.uniform(0.9, 1.1)
    art = obj.src.params.get("artifact")
    shape = _artifact(art, sigma, rng) if art else _gauss2d(sigma, *rng.normal(0, 0.15, 2))
    signal = shape * float(ep["obs"][k]) * dn
    # Poisson noise of the sources adds to the sky noise in the science image
    tmpl = _template_signal(obj, fid, dn)
    noise = rng.standard_normal((2, _STAMP, _STAMP))
    ref = bkg_t + tmpl + sig_t * noise[0]
    sci = bkg_s + tmpl + signal + np.sqrt(sig_s**2 + np.maximum(tmpl + signal, 0) / 6.2) * noise[1]
    diff = sci - bkg_s - (ref - bkg_t)
    # quantised to sigma/16 per pixel, as ZTF's fpack-compressed images are (and it gzips fast)
    return _fits_gz(sci, sig_s / 16), _fits_gz(ref, sig_t / 16), _fits_gz(diff, sig_s / 16)
