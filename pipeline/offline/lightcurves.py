"""Light curves from files (not in the database) -> features -> light-curve classifier probabilities.

Used by ``manage.py classify_lightcurves`` and by the training command's scoring of real labeled
curves. Every detection given is taken as the object's light curve as it is (no correction is
computed): magnitudes ``magpsf``/``sigmapsf`` (or ``mag``/``magerr``). With ``use_corrected``, an
object whose every detection has ``magpsf_corr`` counts as corrected and stellar and that corrected
light curve is used, as the pipeline does for a variable star.
"""
from __future__ import annotations

import multiprocessing

import numpy as np
import pandas as pd

from pipeline.steps import lc_classifier
from pipeline.steps.features import FEATURE_VERSION, compute_features

BAND_IDS = {"g": 1, "r": 2, "R": 2, "1": 1, "2": 2}
CHUNK = 100


class InputError(ValueError):
    """A light-curve file lacks a required column or holds unusable values."""


def _fid(values):
    series = pd.Series(values)
    if pd.api.types.is_numeric_dtype(series):
        return series.astype(int)
    mapped = series.astype(str).str.strip().map(BAND_IDS)
    if mapped.isna().any():
        raise InputError(f"unknown band(s): {sorted(series[mapped.isna()].astype(str).unique())[:5]}")
    return mapped.astype(int)


def normalise_detections(frame: pd.DataFrame) -> pd.DataFrame:
    """Detections with the columns compute_features reads; raises InputError naming what is missing."""
    det = frame.copy()
    if "objectId" in det and "oid" not in det:
        det = det.rename(columns={"objectId": "oid"})
    if "magpsf" not in det and "mag" in det:
        det = det.rename(columns={"mag": "magpsf", "magerr": "sigmapsf"})
    if "mjd" not in det and "jd" in det:
        det["mjd"] = det["jd"] - 2400000.5
    missing = [c for c in ("oid", "mjd", "fid", "magpsf", "sigmapsf") if c not in det]
    if missing:
        raise InputError(f"detections lack column(s) {missing} (need oid, mjd, fid, magpsf, sigmapsf "
                         "or mag, magerr)")
    det["oid"] = det["oid"].astype(str)
    det["fid"] = _fid(det["fid"])
    if "isdiffpos" not in det:
        det["isdiffpos"] = "t"
    if "candid" not in det:
        det["candid"] = np.arange(len(det), dtype=np.int64)
    return det


def normalise_non_detections(frame):
    if frame is None:
        return pd.DataFrame(columns=["oid", "mjd", "fid", "diffmaglim"])
    nd = frame.rename(columns={"objectId": "oid"}).copy()
    if "mjd" not in nd and "jd" in nd:
        nd["mjd"] = nd["jd"] - 2400000.5
    missing = [c for c in ("oid", "mjd", "fid", "diffmaglim") if c not in nd]
    if missing:
        raise InputError(f"non-detections lack column(s) {missing} (need oid, mjd, fid, diffmaglim)")
    nd["oid"] = nd["oid"].astype(str)
    nd["fid"] = _fid(nd["fid"])
    return nd[["oid", "mjd", "fid", "diffmaglim"]]


def object_flags(det: pd.DataFrame, use_corrected=False) -> pd.DataFrame:
    """corrected = stellar = False: the light curve as given. With ``use_corrected``, True where every
    detection of the object has a finite ``magpsf_corr`` (the input's correction; none is computed)."""
    if use_corrected and "magpsf_corr" in det:
        has_corr = np.isfinite(pd.to_numeric(det["magpsf_corr"], errors="coerce"))
        corrected = has_corr.groupby(det["oid"]).all()
    else:
        corrected = pd.Series(False, index=pd.unique(det["oid"]))
    return pd.DataFrame({"oid": corrected.index, "corrected": corrected.to_numpy(bool),
                         "stellar": corrected.to_numpy(bool)})


def _features_chunk(args):
    det, nd, objects = args
    return compute_features(det, nd, objects).values


def features(det, nd, objects, jobs=1, progress=None) -> pd.DataFrame:
    """compute_features over chunks of objects, in ``jobs`` processes; oid x FEATURE_NAMES."""
    oids = list(pd.unique(objects["oid"]))
    det_groups = dict(tuple(det.groupby("oid", sort=False)))
    nd_groups = dict(tuple(nd.groupby("oid", sort=False))) if len(nd) else {}
    empty_nd = nd.iloc[:0]
    chunks = []
    for start in range(0, len(oids), CHUNK):
        part = oids[start:start + CHUNK]
        d = pd.concat([det_groups[o] for o in part if o in det_groups], ignore_index=True)
        n = [nd_groups[o] for o in part if o in nd_groups]
        chunks.append((d, pd.concat(n, ignore_index=True) if n else empty_nd,
                       objects[objects["oid"].isin(part)]))
    results = []
    if jobs > 1 and len(chunks) > 1:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            for values in pool.imap(_features_chunk, chunks):
                results.append(values)
                if progress:
                    progress(len(values))
    else:
        for chunk in chunks:
            results.append(_features_chunk(chunk))
            if progress:
                progress(len(results[-1]))
    return pd.concat(results) if results else pd.DataFrame()


def classify_lightcurves(model, detections, non_detections=None, jobs=1, use_corrected=False):
    """Features and probabilities of light curves from files -> (rows, {oid: reason left out}).

    ``rows``: oid, classifier_name, classifier_version, class_name, probability, ranking.
    """
    det = normalise_detections(detections)
    nd = normalise_non_detections(non_detections)
    values = features(det, nd, object_flags(det, use_corrected), jobs=jobs)
    rows, _, left_out = lc_classifier.classify(model, values, FEATURE_VERSION)
    return rows, left_out
