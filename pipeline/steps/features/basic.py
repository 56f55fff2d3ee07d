"""Detection and non-detection summary features of one band (ALeRCE's "SN" extractors).

Follows ALeRCE's ``lc_classifier`` ``SupernovaeDetectionFeatureExtractor``,
``SupernovaeDetectionAndNonDetectionFeatureExtractor`` and ``IQRExtractor`` (Sánchez-Sáez et al.
2021, AJ 161, 141, table 2): counts and magnitudes of the detections, and the depth of the
non-detections (upper limits) before and after the first detection in that band.

* before / after: non-detections with ``mjd <`` / ``mjd >=`` the first detection's mjd.
* ``dmag_first_det_fid = last_diffmaglim_before_fid - first_mag``: how much brighter the first
  detection is than the last upper limit before it (positive for a rising transient).
* ``dmag_non_det_fid = median_diffmaglim_before_fid - min_mag``.
  (Both signs checked against ALeRCE's stored values.)

Minimum points: one detection (no detection in the band: every feature Missing(no_data)); the
limits "before" need at least one non-detection before the first detection, those "after" one at
or after it (else Missing(no_data)); the counts are always defined (0 is a count, not a gap).
"""
import numpy as np

from pipeline.steps.features.base import NO_DATA, Missing, all_missing, value_or_missing

GROUP = "basic"
PER_BAND = True
FEATURES = {
    "n_det": "number of detections in the band",
    "n_pos": "number of detections with a positive difference image (isdiffpos)",
    "n_neg": "number of detections with a negative difference image (isdiffpos)",
    "positive_fraction": "n_pos / (n_pos + n_neg)",
    "first_mag": "magnitude of the first detection [mag]",
    "mean_mag": "mean detected magnitude [mag]",
    "min_mag": "brightest (minimum) detected magnitude [mag]",
    "delta_mag_fid": "max - min detected magnitude [mag]",
    "delta_mjd_fid": "last - first detection time [d]",
    "dmag_first_det_fid": "last upper limit before the first detection - first magnitude [mag]",
    "iqr": "inter-quartile range of the detected magnitudes (linear percentiles) [mag]",
    "n_non_det_before_fid": "number of non-detections before the first detection",
    "n_non_det_after_fid": "number of non-detections at or after the first detection",
    "last_diffmaglim_before_fid": "limiting magnitude of the last non-detection before [mag]",
    "last_mjd_before_fid": "time of the last non-detection before the first detection [MJD]",
    "max_diffmaglim_before_fid": "deepest limiting magnitude before the first detection [mag]",
    "median_diffmaglim_before_fid": "median limiting magnitude before the first detection [mag]",
    "max_diffmaglim_after_fid": "deepest limiting magnitude at or after the first detection [mag]",
    "median_diffmaglim_after_fid": "median limiting magnitude at/after the first detection [mag]",
    "dmag_non_det_fid": "median limiting magnitude before - min detected magnitude [mag]",
}

_POSITIVE_STRINGS = {"t", "true", "1", "+1", "1.0", "+"}


def _positive(isdiffpos):
    """Boolean mask of positive-subtraction detections.

    Accepts ZTF's 't'/'f' (or '1'/'0') strings, booleans, or ALeRCE's numeric +1/-1 (> 0 positive).
    """
    values = np.asarray(isdiffpos)
    if values.dtype.kind in "US":
        return np.isin(np.char.lower(np.char.strip(values.astype(str))), list(_POSITIVE_STRINGS))
    if values.dtype.kind == "O":
        return np.array([str(v).strip().lower() in _POSITIVE_STRINGS if isinstance(v, str)
                         else bool(v > 0) for v in values], dtype=bool)
    return values > 0


def _quartiles(values):
    """25th and 75th percentiles, linear interpolation (as ``np.percentile``), without its overhead."""
    ordered = np.sort(values)
    out = []
    for q in (0.25, 0.75):
        position = q * (ordered.size - 1)
        low = int(position)
        high = min(low + 1, ordered.size - 1)
        out.append(ordered[low] + (ordered[high] - ordered[low]) * (position - low))
    return out


def compute_band(mjd, magpsf, sigmapsf, isdiffpos, nd_mjd, nd_diffmaglim):
    """Basic features of one band of one object.

    ``mjd, magpsf, sigmapsf, isdiffpos``: the band's detections (any order; magnitudes as the
    orchestrator chooses them, ALeRCE uses the uncorrected difference magnitudes for transients);
    ``nd_mjd, nd_diffmaglim``: the band's non-detections. ``sigmapsf`` is accepted for the shared
    signature and is not used. Returns {base name: float or Missing}.
    """
    mjd = np.asarray(mjd, dtype=float)
    mag = np.asarray(magpsf, dtype=float)
    if mjd.size == 0:
        return all_missing(FEATURES, NO_DATA)
    order = np.argsort(mjd, kind="stable")
    mjd, mag = mjd[order], mag[order]
    positive = _positive(isdiffpos)[order]

    n_det = mag.size
    n_pos = int(positive.sum())
    first_mag = mag[0]
    min_mag = mag.min()
    q25, q75 = _quartiles(mag)
    out = {
        "n_det": float(n_det),
        "n_pos": float(n_pos),
        "n_neg": float(n_det - n_pos),
        "positive_fraction": n_pos / n_det,
        "first_mag": value_or_missing(first_mag),
        "mean_mag": value_or_missing(mag.mean()),
        "min_mag": value_or_missing(min_mag),
        "delta_mag_fid": value_or_missing(mag.max() - min_mag),
        "delta_mjd_fid": value_or_missing(mjd[-1] - mjd[0]),
        "iqr": value_or_missing(q75 - q25),
    }

    nd_mjd = np.asarray(nd_mjd, dtype=float)
    nd_lim = np.asarray(nd_diffmaglim, dtype=float)
    nd_order = np.argsort(nd_mjd, kind="stable")
    nd_mjd, nd_lim = nd_mjd[nd_order], nd_lim[nd_order]
    before = nd_mjd < mjd[0]
    lim_before, lim_after = nd_lim[before], nd_lim[~before]

    out["n_non_det_before_fid"] = float(lim_before.size)
    out["n_non_det_after_fid"] = float(lim_after.size)
    if lim_before.size:
        median_before = np.median(lim_before)
        last_before = lim_before[-1]
        out["last_diffmaglim_before_fid"] = value_or_missing(last_before)
        out["last_mjd_before_fid"] = value_or_missing(nd_mjd[before][-1])
        out["max_diffmaglim_before_fid"] = value_or_missing(lim_before.max())
        out["median_diffmaglim_before_fid"] = value_or_missing(median_before)
        out["dmag_non_det_fid"] = value_or_missing(median_before - min_mag)
        out["dmag_first_det_fid"] = value_or_missing(last_before - first_mag)
    else:
        none_before = Missing(NO_DATA)
        for name in ("last_diffmaglim_before_fid", "last_mjd_before_fid",
                     "max_diffmaglim_before_fid", "median_diffmaglim_before_fid",
                     "dmag_non_det_fid", "dmag_first_det_fid"):
            out[name] = none_before
    if lim_after.size:
        out["max_diffmaglim_after_fid"] = value_or_missing(lim_after.max())
        out["median_diffmaglim_after_fid"] = value_or_missing(np.median(lim_after))
    else:
        out["max_diffmaglim_after_fid"] = Missing(NO_DATA)
        out["median_diffmaglim_after_fid"] = Missing(NO_DATA)
    return out
