"""Magnitude statistics per (oid, fid) and per object, after the correction step.

Follows ALeRCE's magstats step (Förster et al. 2021, AJ 161, 242, sect. 4.2; alercebroker/pipeline
``magstats_step``). Everything is a pandas groupby over the whole batch, so many objects go at once.
Conventions:

* "first"/"last" are by mjd (ties broken by candid). magfirst/maglast are magpsf of the earliest /
  latest detection that has a magpsf.
* magsigma is the population standard deviation (ddof=0, numpy's default, as ALeRCE).
* The ``_corr`` twins (magmean_corr, ..., magfirst_corr, maglast_corr) use only detections that are
  ``corrected`` and have a finite magpsf_corr; with none they are NaN.
* saturation_rate: corrected detections with magpsf_corr < 13.2 (ZTF's saturation threshold in
  ALeRCE) over all corrected detections of the band, dubious ones included; NaN with none.
* stellar, corrected: the flags of the band's first detection (ALeRCE);
  ``correction.is_stellar_per_band``.
* Missing is NaN, never a sentinel.
"""
import numpy as np
import pandas as pd

from pipeline.steps.correction import CORRECTION_VERSION, correct_objects, is_stellar_per_band

KEYS = ["oid", "fid"]
DT_MIN = 0.5  # days: a non-detection must precede the first detection by more than this (ALeRCE)
SATURATION_MAG = 13.2  # ZTF: corrected magnitudes brighter than this count as saturated (ALeRCE)
STELLAR_INPUTS = ["distnr", "magnr", "chinr", "sharpnr", "distpsnr1", "sgscore1"]
_STATS = ["mean", "median", "max", "min", "sigma", "first", "last"]
#: A detection this far from the median position of its object's detections is not used for the
#: object's position: ZTF's detections of one object scatter by ~0.1-0.3 arcsec (associated within
#: 1.5 arcsec); a placeholder or misassigned position lies far beyond (degrees, for rebroadcasts).
POSITION_OUTLIER_ARCSEC = 5.0


def _ordered(detections):
    """Detections sorted by (oid, mjd, candid), stable, NaN mjd last: groupby keeps this order inside
    every (oid, fid) group, so first/last are in time."""
    keys = ["oid", "mjd"] + (["candid"] if "candid" in detections.columns else [])
    return detections.sort_values(keys, kind="stable", na_position="last")


def _mag_stats(ordered, column, suffix, keys=KEYS):
    """mag{mean,median,max,min,sigma,first,last}{suffix} of ``column`` per ``keys``; NaN rows skipped."""
    values = pd.to_numeric(ordered[column], errors="coerce").astype(float)
    frame = ordered[keys].assign(_m=values)
    frame = frame[np.isfinite(frame["_m"].to_numpy())]
    grouped = frame.groupby(keys, sort=True)["_m"]
    stats = grouped.agg(["mean", "median", "max", "min", "first", "last"])
    stats["sigma"] = grouped.std(ddof=0)
    return stats[_STATS].rename(columns={s: f"mag{s}{suffix}" for s in _STATS})


def _saturation_rate(ordered):
    """Per (oid, fid): corrected detections brighter than SATURATION_MAG / corrected detections; NaN
    where the band has none. A corrected detection without magnitude counts in the denominator
    only (ALeRCE stores it as magnitude 100)."""
    corrected = ordered["corrected"].fillna(False).astype(bool).to_numpy()
    mag = pd.to_numeric(ordered["magpsf_corr"], errors="coerce").to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        saturated = corrected & (mag < SATURATION_MAG)
    frame = ordered[KEYS].assign(_n=corrected.astype(int), _sat=saturated.astype(int))
    counts = frame.groupby(KEYS, sort=True)[["_n", "_sat"]].sum()
    return (counts["_sat"] / counts["_n"].where(counts["_n"] > 0)).astype(float)


def _dmdt(ordered, non_detections):
    """dmdt_first, dm_first, sigmadm_first, dt_first per (oid, fid) from the non-detections.

    Among non-detections (diffmaglim) more than ``DT_MIN`` days before the first detection with a
    magpsf, pick the one minimising dmdt = (magfirst + sigmapsf_first - diffmaglim) / dt (the
    fastest brightening compatible with the limit, ALeRCE's choice). dm_first = magfirst -
    diffmaglim, dt_first = mjd_first - mjd_nd, sigmadm_first = sigmapsf_first - diffmaglim: ALeRCE's
    definition, kept for its name although it is not an uncertainty (the error of dm is
    sigmapsf_first, the limit having none).
    """
    columns = ["dmdt_first", "dm_first", "sigmadm_first", "dt_first"]
    empty = pd.DataFrame(columns=columns, dtype=float, index=pd.MultiIndex.from_arrays([[], []], names=KEYS))
    if non_detections is None or len(non_detections) == 0:
        return empty
    mag = pd.to_numeric(ordered["magpsf"], errors="coerce").astype(float)
    first = ordered.assign(_m=mag)[np.isfinite(mag.to_numpy())].groupby(KEYS, sort=False).head(1)
    first = pd.DataFrame({
        "oid": first["oid"].to_numpy(), "fid": first["fid"].to_numpy(),
        "_mjd0": pd.to_numeric(first["mjd"], errors="coerce").to_numpy(dtype=float),
        "_m0": first["_m"].to_numpy(dtype=float),
        "_s0": pd.to_numeric(first["sigmapsf"], errors="coerce").to_numpy(dtype=float),
    })
    nd = pd.DataFrame({
        "oid": non_detections["oid"].to_numpy(), "fid": non_detections["fid"].to_numpy(),
        "_mjd": pd.to_numeric(non_detections["mjd"], errors="coerce").to_numpy(dtype=float),
        "_lim": pd.to_numeric(non_detections["diffmaglim"], errors="coerce").to_numpy(dtype=float),
    })
    merged = nd.merge(first, on=KEYS, how="inner")
    merged["dt_first"] = merged["_mjd0"] - merged["_mjd"]
    merged["dm_first"] = merged["_m0"] - merged["_lim"]
    merged["sigmadm_first"] = merged["_s0"] - merged["_lim"]
    merged["dmdt_first"] = (merged["_m0"] + merged["_s0"] - merged["_lim"]) / merged["dt_first"]
    merged = merged[(merged["dt_first"] > DT_MIN) & np.isfinite(merged["dmdt_first"].to_numpy())]
    if len(merged) == 0:
        return empty
    best = merged.sort_values(KEYS + ["dmdt_first", "_mjd"], kind="stable").groupby(KEYS, sort=True).head(1)
    return best.set_index(KEYS)[columns]


def magstats(detections_corrected: pd.DataFrame, non_detections: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (oid, fid) of ``correction.correct`` output, which must keep the reference and
    PS1 columns of ``STELLAR_INPUTS``; non_detections (optional) has oid, fid, mjd, diffmaglim.

    Columns: oid, fid, ndet, ndubious, [nrfid if the input has rfid], firstmjd, lastmjd,
    mag{mean,median,max,min,sigma,first,last} and their _corr twins, saturation_rate, corrected and
    stellar (of the band's first detection), step_id_corr, dmdt_first, dm_first, sigmadm_first,
    dt_first (see the module docstring).
    """
    det = detections_corrected
    if len(det) == 0:
        return pd.DataFrame(columns=KEYS + ["ndet", "ndubious", "firstmjd", "lastmjd"])
    missing = [c for c in STELLAR_INPUTS if c not in det.columns]
    if missing:
        raise KeyError(f"magstats needs the detection columns {missing} for the per-band stellar flag")
    ordered = _ordered(det)
    grouped = ordered.groupby(KEYS, sort=True)
    mjd = pd.to_numeric(ordered["mjd"], errors="coerce")
    out = pd.DataFrame({
        "ndet": grouped.size(),
        "ndubious": ordered["dubious"].fillna(False).astype(bool).groupby(
            [ordered["oid"], ordered["fid"]], sort=True).sum(),
        "firstmjd": mjd.groupby([ordered["oid"], ordered["fid"]], sort=True).min(),
        "lastmjd": mjd.groupby([ordered["oid"], ordered["fid"]], sort=True).max(),
    })
    out.index.names = KEYS
    if "rfid" in ordered.columns:
        out["nrfid"] = grouped["rfid"].nunique()
    out = out.join(_mag_stats(ordered, "magpsf", ""))
    corr = ordered[ordered["corrected"].fillna(False).astype(bool).to_numpy()]
    out = out.join(_mag_stats(corr, "magpsf_corr", "_corr"))
    out["saturation_rate"] = _saturation_rate(ordered)
    out["corrected"] = grouped["corrected"].first().fillna(False).astype(bool)
    out["stellar"] = is_stellar_per_band(det).reindex(out.index).fillna(False).astype(bool)
    out["step_id_corr"] = CORRECTION_VERSION
    out = out.join(_dmdt(ordered, non_detections))
    for column in ["dmdt_first", "dm_first", "sigmadm_first", "dt_first"]:
        out[column] = out[column].astype(float)
    out["ndubious"] = out["ndubious"].astype(int)
    return out.reset_index()


def object_stats(detections_corrected: pd.DataFrame, objects_flags: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per oid.

    firstmjd, lastmjd, deltamjd = lastmjd - firstmjd (days), ndet (all bands);
    meanra, meandec (deg): means, RA averaged as offsets from the object's first RA wrapped to
    [-180, 180) so objects on the 0/360 line average correctly; sigmara, sigmadec in ARCSEC,
    population std (ddof=0) of the on-sky offsets (RA offset times cos(dec) of each detection).
    Robust to bad rows: detections more than ``POSITION_OUTLIER_ARCSEC`` from the median position
    of the object's detections are left out of all four (all are used when every one is that far);
    corrected, stellar, step_id_corr from ``objects_flags`` (``correction.correct_objects``; computed
    here when None);
    g_r_max = magmin(g) - magmin(r) (colour at maximum brightness, fid 1 minus fid 2),
    g_r_mean = magmean(g) - magmean(r), and the same from the corrected magnitudes (_corr, corrected
    detections only); NaN when a band has no value.
    """
    det = detections_corrected
    columns = ["oid", "firstmjd", "lastmjd", "deltamjd", "ndet", "meanra", "meandec", "sigmara",
               "sigmadec", "corrected", "stellar", "step_id_corr", "g_r_max", "g_r_max_corr",
               "g_r_mean", "g_r_mean_corr"]
    if len(det) == 0:
        return pd.DataFrame(columns=columns)
    if objects_flags is None:
        _, objects_flags = correct_objects(det)
    ordered = _ordered(det)
    oid = ordered["oid"]
    mjd = pd.to_numeric(ordered["mjd"], errors="coerce").astype(float)
    ra = pd.to_numeric(ordered["ra"], errors="coerce").astype(float)
    dec = pd.to_numeric(ordered["dec"], errors="coerce").astype(float)
    by_oid = mjd.groupby(oid, sort=True)
    out = pd.DataFrame({"firstmjd": by_oid.min(), "lastmjd": by_oid.max(),
                        "ndet": oid.groupby(oid, sort=True).size()})
    out["deltamjd"] = out["lastmjd"] - out["firstmjd"]

    ra0 = ra.groupby(oid, sort=False).transform("first")
    dra = (ra - ra0 + 180.0) % 360.0 - 180.0
    dx = dra * np.cos(np.deg2rad(dec)) * 3600.0
    dy = dec * 3600.0
    offset = np.hypot(dx - dx.groupby(oid, sort=False).transform("median"),
                      dy - dy.groupby(oid, sort=False).transform("median"))
    far = offset > POSITION_OUTLIER_ARCSEC
    use = (~far | far.groupby(oid, sort=False).transform("all")).to_numpy()
    used_oid = oid[use]
    out["meanra"] = (ra.groupby(oid, sort=True).first() + dra[use].groupby(used_oid, sort=True).mean()) % 360.0
    out["meandec"] = dec[use].groupby(used_oid, sort=True).mean()
    out["sigmara"] = dx[use].groupby(used_oid, sort=True).std(ddof=0)
    out["sigmadec"] = dy[use].groupby(used_oid, sort=True).std(ddof=0)

    flags = objects_flags.set_index("oid")
    for column, default in [("corrected", False), ("stellar", False), ("step_id_corr", CORRECTION_VERSION)]:
        values = flags[column].reindex(out.index) if column in flags.columns else pd.Series(default, index=out.index)
        out[column] = values.fillna(default).astype(bool if default is False else object)

    plain = _mag_stats(ordered, "magpsf", "")
    corr = _mag_stats(ordered[ordered["corrected"].fillna(False).astype(bool).to_numpy()], "magpsf_corr", "_corr")
    for name, stat, frame, suffix in [("g_r_max", "min", plain, ""), ("g_r_mean", "mean", plain, ""),
                                      ("g_r_max_corr", "min", corr, "_corr"),
                                      ("g_r_mean_corr", "mean", corr, "_corr")]:
        band = frame[f"mag{stat}{suffix}"].unstack("fid")
        band = band.reindex(index=out.index, columns=[1, 2])
        out[name] = (band[1] - band[2]).astype(float)
    out.index.name = "oid"
    return out.reset_index()[columns]
