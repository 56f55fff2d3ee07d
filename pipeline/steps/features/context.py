"""Context features of an object: colours, galactic position, real-bogus, star-galaxy, AllWISE colours.

ALeRCE ``lc_classifier`` (Sánchez-Sáez et al. 2021, AJ 161 141, table 2):

* ``g-r_max`` = min(g) - min(r) and ``g-r_mean`` = mean(g) - mean(r) of the uncorrected difference
  magnitudes (``magpsf``); the ``_corr`` twins use ``magpsf_corr`` and exist only for corrected
  objects (ALeRCE leaves them empty otherwise). Both bands are needed.
* ``gal_l``, ``gal_b``: galactic coordinates (astropy, ICRS -> Galactic, whole batch in one call) of
  the object's mean position (``objects.meanra/meandec``; the mean detection position as fallback).
* ``rb``: median real-bogus score of the detections; ``sgscore1``: median PS1 star-galaxy score of
  the nearest PS1 source (ZTF writes a negative value when there is none -> missing).
* ``W1-W2``, ``W2-W3`` from AllWISE (Vega); ``g-W2``, ``g-W3``, ``r-W2``, ``r-W3`` = mean magnitude of
  the light curve used for the features (ZTF, AB) minus the AllWISE magnitude (Vega), with no
  AB/Vega conversion: ALeRCE (``WiseStreamExtractor``, ``compute_colors_from_bands``) subtracts the
  two systems directly, and its classifier was trained on those numbers. No AllWISE row, or no
  magnitude in that WISE band -> Missing(no_allwise_match).

Everything is computed for the whole batch with pandas/numpy (no per-object loop).
"""
import astropy.units as u
import numpy as np
import pandas as pd
from astropy.coordinates import SkyCoord

from pipeline.steps.features.base import NO_DATA, NO_WISE_MATCH

GROUP = "context"
PER_BAND = False
FEATURES = {
    "g-r_max": "min(g) - min(r) of the uncorrected difference magnitudes [mag]",
    "g-r_max_corr": "min(g) - min(r) of the corrected magnitudes (corrected objects only) [mag]",
    "g-r_mean": "mean(g) - mean(r) of the uncorrected difference magnitudes [mag]",
    "g-r_mean_corr": "mean(g) - mean(r) of the corrected magnitudes (corrected objects only) [mag]",
    "gal_b": "galactic latitude of the mean position [deg]",
    "gal_l": "galactic longitude of the mean position [deg]",
    "rb": "median real-bogus score of the detections",
    "sgscore1": "median star-galaxy score of the nearest PS1 source (1 star, 0 galaxy)",
    "W1-W2": "AllWISE W1 - W2 (Vega) [mag]",
    "W2-W3": "AllWISE W2 - W3 (Vega) [mag]",
    "g-W2": "mean g (AB, light curve used) - AllWISE W2 (Vega) [mag]",
    "g-W3": "mean g (AB, light curve used) - AllWISE W3 (Vega) [mag]",
    "r-W2": "mean r (AB, light curve used) - AllWISE W2 (Vega) [mag]",
    "r-W3": "mean r (AB, light curve used) - AllWISE W3 (Vega) [mag]",
}
BAND_OF = {name: None for name in FEATURES}

NEEDS_G_AND_R = "needs_g_and_r"
NOT_CORRECTED = "not_corrected"
NO_PS1_MATCH = "no_ps1_match"


def galactic(ra, dec):
    """(l, b) in degrees of ICRS ``ra``, ``dec`` arrays (degrees), in one vectorised transform."""
    coords = SkyCoord(ra=np.asarray(ra, dtype=float) * u.deg, dec=np.asarray(dec, dtype=float) * u.deg,
                      frame="icrs").galactic
    return coords.l.degree, coords.b.degree


def _band_stats(detections, column, fid, oids, how):
    rows = detections[detections["fid"] == fid]
    return rows.groupby("oid")[column].agg(how).reindex(oids)


def compute_batch(detections, objects, allwise=None):
    """Context features of a batch.

    ``detections``: columns oid, fid, mag (magnitude of the light curve used), magpsf, magpsf_corr,
    rb, sgscore1, ra, dec. ``objects``: indexed by oid, columns corrected (bool), meanra, meandec
    (either may be NaN). ``allwise``: columns oid, W1mag, W2mag, W3mag (Vega) or None.
    Returns (values, reasons): two DataFrames indexed like ``objects``, columns ``FEATURES``;
    ``values`` float (NaN where missing), ``reasons`` the reason string where missing, else None.
    """
    oids = objects.index
    values = pd.DataFrame(np.nan, index=oids, columns=list(FEATURES), dtype=float)
    reasons = pd.DataFrame(None, index=oids, columns=list(FEATURES), dtype=object)

    def put(name, series, reason):
        series = pd.Series(np.asarray(series, dtype=float), index=oids)
        ok = np.isfinite(series.to_numpy())
        values[name] = series.where(ok)
        reasons[name] = np.where(ok, None, reason if np.ndim(reason) == 0 else np.asarray(reason))

    # colours g - r
    both = (_band_stats(detections, "mag", 1, oids, "size").fillna(0).to_numpy() > 0) & \
           (_band_stats(detections, "mag", 2, oids, "size").fillna(0).to_numpy() > 0)
    for suffix, column in (("", "magpsf"), ("_corr", "magpsf_corr")):
        g_min = _band_stats(detections, column, 1, oids, "min")
        r_min = _band_stats(detections, column, 2, oids, "min")
        g_mean = _band_stats(detections, column, 1, oids, "mean")
        r_mean = _band_stats(detections, column, 2, oids, "mean")
        if suffix:
            corrected = objects["corrected"].fillna(False).astype(bool).to_numpy()
            reason = np.where(~corrected, NOT_CORRECTED, np.where(both, NO_DATA, NEEDS_G_AND_R))
            keep = corrected
        else:
            reason = np.where(both, NO_DATA, NEEDS_G_AND_R)
            keep = np.ones(len(oids), dtype=bool)
        put(f"g-r_max{suffix}", np.where(keep, (g_min - r_min).to_numpy(), np.nan), reason)
        put(f"g-r_mean{suffix}", np.where(keep, (g_mean - r_mean).to_numpy(), np.nan), reason)

    # galactic coordinates of the mean position
    position = detections.groupby("oid")[["ra", "dec"]].mean().reindex(oids)
    ra = objects["meanra"].astype(float).fillna(position["ra"]).to_numpy() \
        if "meanra" in objects else position["ra"].to_numpy()
    dec = objects["meandec"].astype(float).fillna(position["dec"]).to_numpy() \
        if "meandec" in objects else position["dec"].to_numpy()
    l, b = np.full(len(oids), np.nan), np.full(len(oids), np.nan)
    known = np.isfinite(ra) & np.isfinite(dec)
    if known.any():
        l[known], b[known] = galactic(ra[known], dec[known])
    put("gal_l", l, NO_DATA)
    put("gal_b", b, NO_DATA)

    # real-bogus and star-galaxy scores
    put("rb", detections.groupby("oid")["rb"].median().reindex(oids), NO_DATA)
    sgscore = detections["sgscore1"].where(detections["sgscore1"] >= 0)
    put("sgscore1", sgscore.groupby(detections["oid"]).median().reindex(oids), NO_PS1_MATCH)

    # AllWISE colours
    g = _band_stats(detections, "mag", 1, oids, "mean").to_numpy()
    r = _band_stats(detections, "mag", 2, oids, "mean").to_numpy()
    if allwise is None or len(allwise) == 0:
        wise = pd.DataFrame(np.nan, index=oids, columns=["W1mag", "W2mag", "W3mag"])
    else:
        wise = (allwise.drop_duplicates("oid").set_index("oid")
                .reindex(oids)[["W1mag", "W2mag", "W3mag"]].astype(float))
    w1, w2, w3 = (wise[c].to_numpy() for c in ("W1mag", "W2mag", "W3mag"))
    put("W1-W2", w1 - w2, NO_WISE_MATCH)
    put("W2-W3", w2 - w3, NO_WISE_MATCH)
    for name, ztf_mag, wise_mag in (("g-W2", g, w2), ("g-W3", g, w3), ("r-W2", r, w2), ("r-W3", r, w3)):
        put(name, ztf_mag - wise_mag, np.where(np.isfinite(wise_mag), NO_DATA, NO_WISE_MATCH))
    return values, reasons
