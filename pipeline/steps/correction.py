"""Correction step: from difference-image photometry to the apparent magnitude of the source.

A ZTF detection measures the flux *difference* between science and reference image. When the
transient sits on a catalogued reference source (a star, a galaxy nucleus) the total flux is the
reference flux plus the signed difference flux. This module follows the ALeRCE correction step
(Förster et al. 2021, AJ 161, 242, sect. 4.1; alercebroker/pipeline ``correction_step``, ZTF strategy),
with one policy change: anything that cannot be computed is NaN, never a sentinel (ALeRCE writes
100 or inf).

Magnitudes, with m_ref = magnr, dm_ref = sigmagnr, m_diff = magpsf, dm_diff = sigmapsf, sgn = isdiffpos:

    F        = 10^(-0.4 m_ref) + sgn 10^(-0.4 m_diff)                       (total flux, zp-free units)
    m_corr   = -2.5 log10(F)                                                    NaN if F <= 0
    dm_corr  = sqrt(10^(-0.8 m_diff) dm_diff^2 - 10^(-0.8 m_ref) dm_ref^2) / F  NaN if the root's
                                                                                argument is < 0 or F <= 0
    dm_corr_ext = 10^(-0.4 m_diff) dm_diff / F                                  NaN if F <= 0

These are first-order propagations (dm = 2.5/ln10 dF/F and dF = ln10/2.5 F dm, so the constants
cancel). ``dm_corr`` reads the difference flux as science minus reference, so the science-image
(total-flux) variance is var(diff) - var(ref), which can come out negative (-> NaN). ``dm_corr_ext``
keeps the whole difference-flux error, the choice for extended hosts whose catalogued reference
magnitude is not the flux under the PSF.

Flags, per detection (first = the earliest detection, by mjd then candid, of the same oid and band
in everything passed in: the task passes the object's whole stored light curve, so a batch that
brings an earlier detection re-decides the flags of the stored ones):
    corrected = 0 <= distnr < 1.4 arcsec and magnr is present (the reference source is the transient's).
    dubious   = (not corrected and isdiffpos == -1)        negative flux with no source to subtract from
              or (first corrected and not corrected)       the reference changed under the light curve
              or (first not corrected and corrected)
              or (corrected and F <= 0 or F undefined)     the corrected magnitude does not exist
The first three clauses are ALeRCE's rule as written; the last is ours (ALeRCE writes magnitude 100
and does not flag it). A negative argument of the error's square root is not dubious: it leaves
``dm_corr`` missing (with its ``corr_note``) and nothing else. On the shared real ZTF packets
these flags mark 1.0% of corrected detections (2.1% of all) dubious (docs/science-correction.md).
ZTF writes -999 for "no value" in the reference/PS1 columns; such values (and negative distances,
magnitudes <= 0, negative errors, sgscore1 outside [0, 1]) are read as missing.
"""
import warnings

import numpy as np
import pandas as pd

CORRECTION_VERSION = "correction-1.1.0"

DISTANCE_THRESHOLD = 1.4  # arcsec: reference source (distnr) / PS1 source (distpsnr1) counts as "the" source
SCORE_THRESHOLD = 0.4  # PS1 star-galaxy score (Tachibana & Miller 2018) above which a source is a star
CHINR_THRESHOLD = 2.0  # reference-source PSF-fit chi above which it is not point-like
SHARPNR_MIN = -0.13  # reference-source DAOPHOT sharpness window of a point source
SHARPNR_MAX = 0.1

FIRST_KEYS = ["oid", "fid"]
_SENTINEL = -99.0  # values at or below this are ZTF's "missing" (-999)


def _as_float(detections, name):
    """Column ``name`` as float64 (None -> NaN); all-NaN when the column is absent."""
    if name not in detections.columns:
        return pd.Series(np.nan, index=detections.index, dtype=float)
    values = pd.to_numeric(detections[name], errors="coerce").astype(float)
    return values.where(values > _SENTINEL)


def _sign(detections):
    """isdiffpos as +1/-1 float (NaN when unknown); accepts ZTF's 't'/'f'/'1'/'0' strings too."""
    raw = detections["isdiffpos"] if "isdiffpos" in detections.columns else pd.Series(
        np.nan, index=detections.index)
    if raw.dtype == object or pd.api.types.is_string_dtype(raw):
        mapped = raw.map({"t": 1.0, "1": 1.0, "f": -1.0, "0": -1.0, True: 1.0, False: -1.0})
        raw = mapped.where(mapped.notna(), pd.to_numeric(raw, errors="coerce"))
    sign = pd.to_numeric(raw, errors="coerce").astype(float)
    return np.sign(sign).where(sign != 0)


def _reference(detections):
    """Sanitised reference-source columns (missing values as NaN)."""
    distnr = _as_float(detections, "distnr")
    magnr = _as_float(detections, "magnr")
    sigmagnr = _as_float(detections, "sigmagnr")
    return distnr.where(distnr >= 0), magnr.where(magnr > 0), sigmagnr.where(sigmagnr >= 0)


def is_corrected(detections: pd.DataFrame) -> pd.Series:
    """Per detection: the reference source is within ``DISTANCE_THRESHOLD`` and has a magnitude."""
    distnr, magnr, _ = _reference(detections)
    return ((distnr < DISTANCE_THRESHOLD) & magnr.notna()).astype(bool)


def corrected_magnitudes(magpsf, sigmapsf, isdiffpos, magnr, sigmagnr):
    """(m_corr, dm_corr, dm_corr_ext) as float arrays from the module formulas; NaN where undefined."""
    m_diff, dm_diff, sgn, m_ref, dm_ref = (np.asarray(v, dtype=float) for v in
                                           (magpsf, sigmapsf, isdiffpos, magnr, sigmagnr))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        f_ref = 10.0 ** (-0.4 * m_ref)
        f_diff = 10.0 ** (-0.4 * m_diff)
        total = f_ref + sgn * f_diff
        ok = total > 0  # False for NaN too
        total = np.where(ok, total, np.nan)
        m_corr = -2.5 * np.log10(total)
        radicand = (f_diff * dm_diff) ** 2 - (f_ref * dm_ref) ** 2
        dm_corr = np.where(radicand >= 0, np.sqrt(np.where(radicand >= 0, radicand, np.nan)), np.nan) / total
        dm_corr_ext = f_diff * dm_diff / total
    return m_corr, dm_corr, dm_corr_ext


def _first_in_group(detections, values, keys):
    """For every row, ``values`` at the earliest (mjd, then candid) row of its ``keys`` group."""
    frame = pd.DataFrame({k: detections[k].to_numpy() for k in keys})
    frame["_mjd"] = pd.to_numeric(detections["mjd"], errors="coerce").to_numpy(dtype=float)
    frame["_tie"] = detections["candid"].to_numpy() if "candid" in detections.columns else 0
    frame["_v"] = np.asarray(values)
    frame = frame.reset_index(drop=True)
    ordered = frame.sort_values(keys + ["_mjd", "_tie"], kind="stable", na_position="last")
    first = ordered.groupby(keys, sort=False, dropna=False)["_v"].transform("first")
    return first.sort_index().to_numpy()


def correct(detections: pd.DataFrame) -> pd.DataFrame:
    """Same rows (same index and order) plus magpsf_corr, sigmapsf_corr, sigmapsf_corr_ext, corrected,
    dubious. Corrected magnitudes exist only where ``corrected``; see the module docstring."""
    out = detections.copy()
    corrected = is_corrected(detections).to_numpy()
    _, magnr, sigmagnr = _reference(detections)
    m_corr, dm_corr, dm_corr_ext = corrected_magnitudes(
        _as_float(detections, "magpsf"), _as_float(detections, "sigmapsf"), _sign(detections),
        magnr, sigmagnr)
    out["magpsf_corr"] = np.where(corrected, m_corr, np.nan)
    out["sigmapsf_corr"] = np.where(corrected, dm_corr, np.nan)
    out["sigmapsf_corr_ext"] = np.where(corrected, dm_corr_ext, np.nan)

    negative = (_sign(detections) == -1).to_numpy()
    if len(detections):
        first_corrected = _first_in_group(detections, corrected, FIRST_KEYS).astype(bool)
    else:
        first_corrected = corrected
    out["corrected"] = corrected
    out["dubious"] = dubious(corrected, first_corrected, negative, m_corr)
    out["corr_note"] = correction_notes(corrected, m_corr, dm_corr)
    out["step_id_corr"] = CORRECTION_VERSION
    return out


def dubious(corrected, first_corrected, negative, m_corr):
    """ALeRCE's three clauses plus ours (corrected but no corrected magnitude); see the module docstring."""
    corrected, first_corrected, negative = (np.asarray(v, dtype=bool) for v in (corrected, first_corrected, negative))
    no_magnitude = corrected & np.isnan(np.asarray(m_corr, dtype=float))
    return (~corrected & negative) | (first_corrected & ~corrected) | (~first_corrected & corrected) | no_magnitude


NOTE_NO_REFERENCE = "no reference source within 1.4 arcsec"
NOTE_FLUX_NOT_POSITIVE = "reference + difference flux not positive"
NOTE_NEGATIVE_VARIANCE = "error undefined: reference error exceeds difference error"


def correction_notes(corrected, m_corr, dm_corr):
    """Why a detection has no (complete) corrected photometry; empty where it has."""
    notes = np.full(len(corrected), "", dtype=object)
    notes[~corrected] = NOTE_NO_REFERENCE
    notes[corrected & np.isnan(dm_corr)] = NOTE_NEGATIVE_VARIANCE
    notes[corrected & np.isnan(m_corr)] = NOTE_FLUX_NOT_POSITIVE
    return notes


def is_stellar(detections: pd.DataFrame) -> pd.Series:
    """Per object (Series indexed by oid, bool): is the source a star sitting on its own reference?

    Rule (ALeRCE correction step, Förster et al. 2021 sect. 4.1, same thresholds):

        stellar = near_ztf and ( (near_ps1 and sgscore1 > 0.4)
                                 or (not near_ps1 and chinr < 2 and -0.13 < sharpnr < 0.1) )
        near_ztf = 0 <= distnr < 1.4"  (the object's first detection is ``corrected``)
        near_ps1 = 0 <= distpsnr1 < 1.4"

    * near_ztf, chinr, sharpnr come from the object's first detection (earliest mjd), the same
      detection that decides the object's ``corrected`` flag.
    * distpsnr1, sgscore1 exist only in an alert's own candidate (ZTF does not repeat them in
      prv_candidates), so they come from the earliest detection that carries them; -999 (no PS1
      source) reads as missing, hence "not near PS1".
    * Why these numbers: they are ALeRCE's constants, kept so our flags match its public
      database. 1.4" is about 1.4 ZTF pixels (1.01"/px), ALeRCE's radius for "the transient is
      this catalogued source"; sgscore1 is the PS1 point-source score of Tachibana & Miller (2018,
      PASP 130, 128001), 1 = star, and ALeRCE calls > 0.4 stellar; chinr < 2 with sharpnr in
      (-0.13, 0.1) is the point-source locus of DAOPHOT-style fits of the ZTF reference-image
      source, used only when PS1 has no source within the radius. (ALeRCE's current code writes
      the sharpnr window as ``(min < s) < max``, which compares a bool and is true exactly when s
      is not above min; we apply the intended two-sided window.)
    Missing values never raise: a comparison with NaN is False.
    """
    return _stellar(detections, ["oid"])


def is_stellar_per_band(detections: pd.DataFrame) -> pd.Series:
    """Per (oid, fid) (Series with that MultiIndex, bool): ``is_stellar``'s rule with near_ztf,
    chinr and sharpnr from the band's first detection (ALeRCE's magstats ``stellar``: the flag of
    the band's first detection). PS1 values are the object's, as in ``is_stellar``: ZTF does not
    repeat them in prv_candidates, where ALeRCE reads their absence as "no PS1 source". The
    object's flag equals the flag of the band that holds its first detection."""
    return _stellar(detections, ["oid", "fid"])


def _stellar(detections, keys, chained_sharpnr=False):
    if len(detections) == 0:
        index = pd.MultiIndex.from_arrays([[]] * len(keys), names=keys) if len(keys) > 1 else pd.Index(
            [], name=keys[0])
        return pd.Series([], index=index, dtype=bool, name="stellar")
    distnr, magnr, _ = _reference(detections)
    near_ztf = (distnr < DISTANCE_THRESHOLD) & magnr.notna()
    chinr = _as_float(detections, "chinr")
    sharpnr = _as_float(detections, "sharpnr")
    if chained_sharpnr:  # ALeRCE's ``(SHARPNR_MIN < s) < SHARPNR_MAX``: True iff not s > SHARPNR_MIN
        in_window = ~(sharpnr > SHARPNR_MIN)
    else:
        in_window = (sharpnr > SHARPNR_MIN) & (sharpnr < SHARPNR_MAX)
    stellar_ztf = (chinr < CHINR_THRESHOLD) & in_window
    distps = _as_float(detections, "distpsnr1")
    distps = distps.where(distps >= 0)
    sgscore = _as_float(detections, "sgscore1")
    sgscore = sgscore.where((sgscore >= 0) & (sgscore <= 1))

    frame = pd.DataFrame({k: detections[k].to_numpy() for k in keys})
    frame["mjd"] = pd.to_numeric(detections["mjd"], errors="coerce").to_numpy(dtype=float)
    frame["tie"] = detections["candid"].to_numpy() if "candid" in detections.columns else 0
    frame["near_ztf"] = near_ztf.to_numpy()
    frame["stellar_ztf"] = stellar_ztf.to_numpy()
    frame["ps1_rank"] = np.where(distps.notna(), 0, 1)  # detections carrying PS1 data sort first
    frame["distps"] = distps.to_numpy()
    frame["sgscore"] = sgscore.to_numpy()
    by_time = frame.sort_values(keys + ["mjd", "tie"], kind="stable", na_position="last")
    first = by_time.groupby(keys, sort=True)[["near_ztf", "stellar_ztf"]].first()
    ps1 = by_time.sort_values(["oid", "ps1_rank"], kind="stable").groupby("oid", sort=True)[
        ["distps", "sgscore"]].first()
    ps1 = ps1.reindex(first.index.get_level_values("oid"))
    near_ps1 = ps1["distps"].to_numpy() < DISTANCE_THRESHOLD
    stellar_ps1 = ps1["sgscore"].to_numpy() > SCORE_THRESHOLD
    near_ztf, stellar_ztf = first["near_ztf"].to_numpy(bool), first["stellar_ztf"].to_numpy(bool)
    stellar = near_ztf & ((near_ps1 & stellar_ps1) | (~near_ps1 & stellar_ztf))
    return pd.Series(stellar, index=first.index, dtype=bool, name="stellar")


def correct_objects(detections: pd.DataFrame):
    """(corrected detections, objects) for a batch that may hold many objects.

    objects has one row per oid: corrected (the object's earliest detection, any band, is
    corrected, as in ALeRCE), stellar (``is_stellar``), step_id_corr (``CORRECTION_VERSION``).
    """
    corrected = correct(detections)
    if len(corrected) == 0:
        objects = pd.DataFrame({"oid": pd.Series([], dtype=object), "corrected": pd.Series([], dtype=bool),
                                "stellar": pd.Series([], dtype=bool),
                                "step_id_corr": pd.Series([], dtype=object)})
        return corrected, objects
    frame = pd.DataFrame({
        "oid": corrected["oid"].to_numpy(),
        "mjd": pd.to_numeric(corrected["mjd"], errors="coerce").to_numpy(dtype=float),
        "tie": corrected["candid"].to_numpy() if "candid" in corrected.columns else 0,
        "corrected": corrected["corrected"].to_numpy(),
    })
    first = frame.sort_values(["oid", "mjd", "tie"], kind="stable", na_position="last").groupby(
        "oid", sort=True)["corrected"].first().astype(bool)
    objects = pd.DataFrame({"corrected": first, "stellar": is_stellar(detections)})
    objects["stellar"] = objects["stellar"].fillna(False).astype(bool)
    objects["step_id_corr"] = CORRECTION_VERSION
    objects = objects.rename_axis("oid").reset_index()
    return corrected, objects


def flag_summary(corrected_detections: pd.DataFrame) -> dict:
    """Counts behind the design notes of docs/science-correction.md, from ``correct`` output that keeps the reference and
    PS1 columns: detections, corrected, dubious (all, among corrected), corrected without a magnitude or
    without an error, and the objects and bands whose ``stellar`` differs under ALeRCE's chained
    sharpnr comparison."""
    det = corrected_detections
    corrected = det["corrected"].fillna(False).astype(bool)
    dubious_flags = det["dubious"].fillna(False).astype(bool)
    summary = {
        "detections": len(det), "corrected": int(corrected.sum()), "dubious": int(dubious_flags.sum()),
        "dubious_corrected": int((dubious_flags & corrected).sum()),
        "corrected_no_magnitude": int((corrected & det["magpsf_corr"].isna()).sum()),
        "corrected_no_error": int((corrected & det["magpsf_corr"].notna() & det["sigmapsf_corr"].isna()).sum()),
    }
    for name, keys in (("objects", ["oid"]), ("bands", ["oid", "fid"])):
        ours, theirs = _stellar(det, keys), _stellar(det, keys, chained_sharpnr=True)
        summary[name] = len(ours)
        summary[f"{name}_stellar"] = int(ours.sum())
        summary[f"{name}_stellar_chained_sharpnr"] = int(theirs.sum())
        summary[f"{name}_stellar_differs"] = int((ours != theirs).sum())
    return summary
