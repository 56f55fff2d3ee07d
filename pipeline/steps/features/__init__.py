"""Light-curve features of a batch of objects: the orchestrator of the feature groups.

``compute_features(detections, non_detections, objects, allwise)`` reproduces ALeRCE's light-curve
classifier features (Sánchez-Sáez et al. 2021, AJ 161 141; ``lc_classifier``):

1. Light curve per object: the corrected magnitudes (``magpsf_corr`` with ``sigmapsf_corr_ext``,
   ALeRCE's error of the corrected magnitude, or ``sigmapsf_corr`` where that is absent) for objects
   that are corrected *and* stellar, else the difference magnitudes (``magpsf``, ``sigmapsf``);
   ``FeatureResult.lc_used`` says which. Points whose chosen magnitude is NaN (no corrected magnitude: total flux not positive)
   are dropped.
2. ALeRCE's clean-up (``ZTFLightcurvePreprocessor``): real-bogus ``rb >= 0.55``, error in (0, 1) mag,
   one detection per (object, band, mjd) (the highest rb; equal rb: the lowest candid, so the
   result never depends on the order of the input rows). ``rb_min=None`` / ``max_sigma=None`` switch off.
3. Detections and non-detections are sorted once by (object, band, time) and sliced per object and
   band; each group's function is called on plain arrays:
   ``basic.compute_band(mjd, mag, err, isdiffpos, nd_mjd, nd_diffmaglim)`` (light curve used, as
   ALeRCE's ``magpsf_ml``), ``variability``/``stochastic.compute_band(t, mag, err)``,
   ``periodic.compute({fid: (t, mag, err)})``, ``spm.compute_batch`` on the difference magnitudes
   (all bands of the batch fitted together) and ``context.compute_batch`` (vectorised).
4. A group that raises for one object gives ``Missing("error: ...")`` for that object's features of
   the group (logged); the batch goes on.
"""
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.steps.features.base import NO_DATA, NOT_FINITE, TOO_FEW_POINTS, Missing
from pipeline.steps.features.registry import BANDS, FEATURE_NAMES, FEATURE_VERSION, GROUPS

logger = logging.getLogger(__name__)

RB_MIN = 0.55
MAX_SIGMA = 1.0
CORRECTED_ERROR_COLUMNS = ("sigmapsf_corr_ext", "sigmapsf_corr")
NOT_COMPUTED = "not_computed"  # the group that owns the feature is not available

__all__ = ["FeatureResult", "compute_features", "benchmark", "FEATURE_NAMES", "FEATURE_VERSION"]


@dataclass
class FeatureResult:
    """Features of a batch: ``values`` (oid x FEATURE_NAMES, NaN where missing) and why they miss."""
    values: pd.DataFrame
    missing: pd.DataFrame  # columns oid, feature, reason
    lc_used: pd.Series  # oid -> 'corrected' | 'uncorrected'
    version: str = FEATURE_VERSION
    timings: dict = field(default_factory=dict)  # seconds spent per group

    def missing_counts(self):
        """Feature x reason table of how many objects miss each feature, and why."""
        if self.missing.empty:
            return pd.DataFrame(dtype=int)
        return self.missing.groupby(["feature", "reason"]).size().unstack(fill_value=0)


def _signs(isdiffpos):
    """+1/-1 floats from ZTF's 't'/'f', booleans, or numbers."""
    values = pd.Series(isdiffpos)
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        text = values.astype(str).str.strip().str.lower()
        return np.where(text.isin(["t", "true", "1", "1.0", "+1"]), 1.0, -1.0)
    return np.where(values.to_numpy(dtype=float) > 0, 1.0, -1.0)


def _objects_table(objects, detections):
    table = objects.copy() if objects is not None else pd.DataFrame(columns=["oid"])
    if "oid" in table.columns:
        table = table.drop_duplicates("oid").set_index("oid")
    extra = pd.Index(pd.unique(detections["oid"])).difference(table.index)
    if len(extra):
        table = pd.concat([table, pd.DataFrame(index=extra)])
    for column in ("corrected", "stellar"):
        table[column] = (table[column].astype("boolean").fillna(False).astype(bool)
                         if column in table else False)
    for column in ("meanra", "meandec"):
        if column not in table:
            table[column] = np.nan
    table.index.name = "oid"
    return table.sort_index(kind="stable")  # one order whatever the input's, so sums round the same


def _light_curves(detections, table, rb_min, max_sigma):
    """Detections with the chosen magnitude/error ('mag', 'err'), cleaned and sorted."""
    det = detections.copy()
    use_corr = det["oid"].map(table["corrected"] & table["stellar"]).fillna(False).to_numpy(bool)
    corr_err = pd.Series(np.nan, index=det.index)
    for column in reversed(CORRECTED_ERROR_COLUMNS):  # first column wins where finite
        if column in det:
            corr_err = det[column].astype(float).where(det[column].notna(), corr_err)
    magpsf_corr = det["magpsf_corr"].astype(float) if "magpsf_corr" in det else np.nan
    det["mag"] = np.where(use_corr, magpsf_corr, det["magpsf"].astype(float))
    det["err"] = np.where(use_corr, corr_err, det["sigmapsf"].astype(float))
    det["sign"] = _signs(det["isdiffpos"]) if "isdiffpos" in det else 1.0
    for column in ("rb", "sgscore1", "ra", "dec", "magpsf_corr"):
        if column not in det:
            det[column] = np.nan
    keep = np.isfinite(det["mag"]) & np.isfinite(det["err"]) & np.isfinite(det["mjd"])
    if rb_min is not None:
        keep &= ~(det["rb"] < rb_min)  # a missing rb does not drop the point
    if max_sigma is not None:
        keep &= (det["err"] > 0) & (det["err"] < max_sigma)
    det = det[keep]
    # same (object, band, mjd): keep the highest rb, ties broken by candid, so the input order never matters
    tie_breaks = [c for c in ("candid", "mag", "err") if c in det]
    det = det.sort_values(["oid", "fid", "mjd", "rb", *tie_breaks], ascending=[True, True, True, False] + [True] * len(tie_breaks),
                          kind="stable", na_position="last")
    return det.drop_duplicates(["oid", "fid", "mjd"]).reset_index(drop=True)


def _slices(codes, fids, n_objects):
    """start/stop (n_objects, len(BANDS)) of each object's band in arrays sorted by (code, fid)."""
    key = codes * 8 + fids
    wanted = (np.arange(n_objects)[:, None] * 8 + np.asarray(BANDS)[None, :])
    return np.searchsorted(key, wanted, "left"), np.searchsorted(key, wanted, "right")


class _Sink:
    """Collects group results into the value matrix and a matrix of missing reasons."""

    def __init__(self, oids):
        self.oids = oids
        self.column = {name: i for i, name in enumerate(FEATURE_NAMES)}
        self.values = np.full((len(oids), len(FEATURE_NAMES)), np.nan)
        self.seen = np.zeros(self.values.shape, dtype=bool)
        self.reasons = np.full(self.values.shape, None, dtype=object)  # where missing: why
        self._columns = {}  # (suffix, names) -> (positions in the result, columns)

    def _columns_of(self, names, suffix=""):
        key = (suffix, names)
        found = self._columns.get(key)
        if found is None:
            pairs = [(i, self.column[name + suffix]) for i, name in enumerate(names)
                     if name + suffix in self.column]
            found = (np.array([i for i, _ in pairs], dtype=int), np.array([c for _, c in pairs], dtype=int))
            self._columns[key] = found
        return found

    def put(self, row, result, suffix=""):
        positions, cols = self._columns_of(tuple(result), suffix)
        values = list(result.values())
        for position, col in zip(positions.tolist(), cols.tolist()):
            value = values[position]
            if value.__class__ is Missing:
                self.values[row, col] = math.nan
                self.reasons[row, col] = value.reason
            else:
                self.values[row, col] = value
        self.seen[row, cols] = True

    def fail(self, row, names, reason):
        _, cols = self._columns_of(tuple(names))
        cols = cols[~self.seen[row, cols]]
        self.seen[row, cols] = True
        self.reasons[row, cols] = reason

    def put_columns(self, values, reasons):
        """Whole-batch columns: ``values`` (rows x names, float) and ``reasons`` (str or None)."""
        for name in values.columns:
            col = self.column.get(name)
            if col is None:
                continue
            column = values[name].to_numpy(dtype=float)
            ok = np.isfinite(column)
            self.values[ok, col] = column[ok]
            self.seen[:, col] = True
            self.reasons[~ok, col] = reasons[name].to_numpy(dtype=object)[~ok]

    def result(self, lc_used, timings):
        missing_mask = ~np.isfinite(self.values)
        self.values[missing_mask] = np.nan  # infinities are recorded as not_finite
        unexplained = missing_mask & np.equal(self.reasons, None)
        self.reasons[unexplained & self.seen] = NOT_FINITE
        self.reasons[unexplained & ~self.seen] = NOT_COMPUTED
        values = pd.DataFrame(self.values, index=pd.Index(self.oids, name="oid"),
                              columns=list(FEATURE_NAMES))
        rows, cols = np.nonzero(missing_mask)  # row-major: ordered by (object, feature)
        missing = pd.DataFrame({"oid": np.asarray(self.oids, dtype=object)[rows],
                                "feature": np.asarray(FEATURE_NAMES, dtype=object)[cols],
                                "reason": self.reasons[rows, cols]})
        return FeatureResult(values=values, missing=missing, lc_used=lc_used, timings=timings)


def _group_names(group):
    """Full names of a group's features, per band for PER_BAND groups: {band or None: [names]}."""
    if group.PER_BAND:
        return {band: [f"{base}_{band}" for base in group.FEATURES] for band in BANDS}
    return {None: list(group.FEATURES)}


def _error(exc):
    return f"error: {type(exc).__name__}: {exc}"[:200]


def compute_features(detections, non_detections, objects, allwise=None, *, rb_min=RB_MIN,
                     max_sigma=MAX_SIGMA, clock=time.perf_counter):
    """Every feature of ``FEATURE_NAMES`` for each object of the batch -> ``FeatureResult``.

    ``clock`` times the groups (``FeatureResult.timings``); the benchmark passes ``time.process_time``.
    """
    timings = {name: 0.0 for name in GROUPS}
    start = clock()
    table = _objects_table(objects, detections)
    oids = table.index
    lc_used = pd.Series(np.where(table["corrected"] & table["stellar"], "corrected", "uncorrected"),
                        index=oids, name="lc_used")
    det = _light_curves(detections, table, rb_min, max_sigma)
    det = det.assign(_code=oids.get_indexer(det["oid"]), fid=det["fid"].astype(int))
    det = det.sort_values(["_code", "fid", "mjd"], kind="stable")
    codes, fids = det["_code"].to_numpy(), det["fid"].to_numpy()
    mjd, mag, err = (det[c].to_numpy(float) for c in ("mjd", "mag", "err"))
    magpsf, sigmapsf, sign = (det[c].to_numpy(float) for c in ("magpsf", "sigmapsf", "sign"))
    det_start, det_stop = _slices(codes, fids, len(oids))

    if non_detections is not None and len(non_detections):
        nd = non_detections.assign(_code=oids.get_indexer(non_detections["oid"]),
                                   fid=non_detections["fid"].astype(int))
        nd = nd[nd["_code"] >= 0].sort_values(["_code", "fid", "mjd", "diffmaglim"], kind="stable")
        nd_mjd, nd_lim = nd["mjd"].to_numpy(float), nd["diffmaglim"].to_numpy(float)
        nd_start, nd_stop = _slices(nd["_code"].to_numpy(), nd["fid"].to_numpy(), len(oids))
    else:
        nd_mjd = nd_lim = np.empty(0)
        nd_start = nd_stop = np.zeros((len(oids), len(BANDS)), dtype=int)
    timings["prepare"] = clock() - start

    sink = _Sink(oids)
    names = {name: _group_names(group) for name, group in GROUPS.items()}
    per_band = [name for name in ("basic", "variability", "stochastic") if name in GROUPS]
    needs_all = {"variability": GROUPS["variability"].MIN_POINTS} if "variability" in GROUPS else {}
    spm_items = []
    for row, oid in enumerate(oids):
        bands = {}
        for b, band in enumerate(BANDS):
            lo, hi = det_start[row, b], det_stop[row, b]
            if hi > lo:
                bands[band] = slice(lo, hi)
        for name in per_band:
            group = GROUPS[name]
            for band in BANDS:
                s = bands.get(band)
                if s is None:
                    sink.fail(row, names[name][band], NO_DATA)
                    continue
                if s.stop - s.start < needs_all.get(name, 0):  # every feature of the group needs more
                    sink.fail(row, names[name][band], TOO_FEW_POINTS)
                    continue
                tick = clock()
                try:
                    if name == "basic":
                        b = BANDS.index(band)
                        nds = slice(nd_start[row, b], nd_stop[row, b])
                        result = group.compute_band(mjd[s], mag[s], err[s], sign[s], nd_mjd[nds], nd_lim[nds])
                    else:
                        result = group.compute_band(mjd[s], mag[s], err[s])
                    sink.put(row, result, f"_{band}")
                except Exception as exc:  # one object's failure never stops the batch
                    logger.warning("feature group %s failed for %s band %s", name, oid, band, exc_info=True)
                    sink.fail(row, names[name][band], _error(exc))
                timings[name] += clock() - tick
        if "periodic" in GROUPS:
            tick = clock()
            if not bands:
                sink.fail(row, names["periodic"][None], NO_DATA)
            elif max(s.stop - s.start for s in bands.values()) < GROUPS["periodic"].MIN_POINTS_BAND:
                sink.fail(row, names["periodic"][None], TOO_FEW_POINTS)  # no band can give a period
            else:
                try:
                    sink.put(row, GROUPS["periodic"].compute(
                        {band: (mjd[s], mag[s], err[s]) for band, s in bands.items()}))
                except Exception as exc:
                    logger.warning("feature group periodic failed for %s", oid, exc_info=True)
                    sink.fail(row, names["periodic"][None], _error(exc))
            timings["periodic"] += clock() - tick
        if "spm" in GROUPS:
            for band in BANDS:
                s = bands.get(band)
                if s is None:
                    sink.fail(row, names["spm"][band], NO_DATA)
                else:
                    spm_items.append((row, band, (mjd[s], magpsf[s], sigmapsf[s], sign[s])))

    if spm_items:
        tick = clock()
        _spm(GROUPS["spm"], spm_items, sink, names["spm"], oids)
        timings["spm"] += clock() - tick

    if "context" in GROUPS:
        tick = clock()
        context_names = names["context"][None]
        try:
            values, reasons = GROUPS["context"].compute_batch(
                det.drop(columns="_code"), table, allwise)
            sink.put_columns(values, reasons)
        except Exception as exc:
            logger.warning("feature group context failed for the batch", exc_info=True)
            for row in range(len(oids)):
                sink.fail(row, context_names, _error(exc))
        timings["context"] += clock() - tick
    return sink.result(lc_used, timings)


def _spm(group, items, sink, names, oids):
    """SPM of every (object, band) in one vectorised call; one by one if the batch call fails."""
    try:
        results = group.compute_batch([item for _, _, item in items])
    except Exception:
        logger.warning("batched SPM failed; fitting band by band", exc_info=True)
        results = []
        for row, band, item in items:
            try:
                results.append(group.compute_band(*item))
            except Exception as exc:
                logger.warning("feature group spm failed for %s band %s", oids[row], band, exc_info=True)
                results.append({name: Missing(_error(exc)) for name in group.FEATURES})
    for (row, band, _), result in zip(items, results):
        sink.put(row, result, f"_{band}")


def benchmark(detections, non_detections, objects, allwise=None, repeat=1):
    """Throughput of ``compute_features`` on a batch: objects/s (wall clock and CPU time of this process)
    and CPU seconds per group (the run of least CPU time of ``repeat``).

    A first call on two objects warms the one-off costs (periodogram plan, astropy frames, pandas)
    so that the numbers describe a running worker.
    """
    warm = pd.unique(detections["oid"])[:2]
    compute_features(detections[detections["oid"].isin(warm)], non_detections, objects, allwise)
    best = None
    for _ in range(max(1, repeat)):
        tick, cpu_tick = time.perf_counter(), time.process_time()
        result = compute_features(detections, non_detections, objects, allwise, clock=time.process_time)
        elapsed, cpu = time.perf_counter() - tick, time.process_time() - cpu_tick
        if best is None or cpu < best[1]:
            best = (elapsed, cpu, result)
    elapsed, cpu, result = best
    n_objects = len(result.values)
    return {
        "objects": n_objects,
        "features": len(FEATURE_NAMES),
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "objects_per_s": n_objects / elapsed if elapsed > 0 else float("inf"),
        # CPU time of this process (one thread): what one core does, whatever else loads the machine
        "objects_per_cpu_s": n_objects / cpu if cpu > 0 else float("inf"),
        "seconds_per_group": dict(result.timings),
        "ms_per_object_per_group": {name: 1e3 * seconds / max(n_objects, 1)
                                    for name, seconds in result.timings.items()},
        "missing_fraction": float(result.values.isna().to_numpy().mean()) if n_objects else 0.0,
    }
