"""Batch loads and writes between the ORM and the DataFrames the steps work on (one query per table)."""
import numpy as np
import pandas as pd
from django.db import models
from django.db.models import Case, F, Value, When
from django.utils import timezone

from pipeline.models import (
    AllWise, Detection, NonDetection, Object, ObjectFeatureState, RawAlert, Xmatch, XmatchPending,
)
from pipeline.steps.features.registry import FEATURES
from pipeline.store import db

CORRECTION_FIELDS = [
    "magpsf_corr", "sigmapsf_corr", "sigmapsf_corr_ext", "corrected", "dubious", "corr_note", "step_id_corr",
]
DETECTION_FIELDS = [f.name for f in Detection._meta.concrete_fields if f.name not in CORRECTION_FIELDS + ["id"]]
MAGSTATS_INPUT_FIELDS = [
    "candid", "oid", "mjd", "fid", "ra", "dec", "magpsf", "sigmapsf", "isdiffpos", "rb", "magnr", "sigmagnr",
    "distnr", "sgscore1", "distpsnr1", "magpsf_corr", "sigmapsf_corr", "sigmapsf_corr_ext", "corrected", "dubious",
]
OBJECT_STAT_FIELDS = [
    "meanra", "meandec", "sigmara", "sigmadec", "firstmjd", "lastmjd", "deltamjd", "ndet",
    "g_r_max", "g_r_max_corr", "g_r_mean", "g_r_mean_corr",
]
OBJECT_FIELDS = [f.name for f in Object._meta.concrete_fields]
FEATURE_OBJECT_FIELDS = ["oid", "corrected", "stellar", "meanra", "meandec", "ndet"]
FEATURE_INPUT_FIELDS = [
    "oid", "candid", "mjd", "fid", "magpsf", "sigmapsf", "magpsf_corr", "sigmapsf_corr", "sigmapsf_corr_ext",
    "isdiffpos", "corrected", "dubious", "rb", "sgscore1", "distpsnr1", "ra", "dec",
]


def frame(queryset, fields):
    """The queryset's ``fields`` as a DataFrame; integer columns stay integers (Int64) even with nulls,
    so 64-bit ids stay exact."""
    rows = list(queryset.values_list(*fields))
    columns = list(zip(*rows)) if rows else [()] * len(fields)
    data = {}
    for name, values in zip(fields, columns):
        if isinstance(queryset.model._meta.get_field(name), models.IntegerField) and None in values:
            data[name] = pd.array(values, dtype="Int64")
        else:
            data[name] = pd.Series(values, dtype=None if values else object)
    return pd.DataFrame(data, columns=fields)


def detections(oids, fields):
    return frame(Detection.objects.filter(oid__in=oids).order_by("oid", "mjd"), fields)


def non_detections(oids):
    return frame(NonDetection.objects.filter(oid__in=oids), ["oid", "fid", "mjd", "diffmaglim"])


def object_flags(oids):
    return frame(Object.objects.filter(oid__in=oids), ["oid", "corrected", "stellar", "step_id_corr"])


def object_positions(oids):
    return frame(Object.objects.filter(oid__in=oids), ["oid", "meanra", "meandec"]).rename(
        columns={"meanra": "ra", "meandec": "dec"}
    )


def of_survey(oids, survey):
    """The objects of ``oids`` that come from ``survey`` ("ztf" or "lsst"): survey-only steps
    (correction, the ZTF classifiers) call this first and leave the others alone."""
    return list(Object.objects.filter(oid__in=list(oids), survey=survey).values_list("oid", flat=True))


def first_stamp_alerts(oids=None):
    """{oid: candid} of the alert the stamp classifier takes for each ZTF object of ``oids`` (all when
    None): its earliest stored alert by time (mjd, then candid) with cutouts, or, when none has any,
    its earliest stored alert (which the step then quarantines for want of cutouts). The object's
    first by time, not by arrival: the same in every ingest order."""
    own = Detection.objects.filter(survey="ztf", candid__in=RawAlert.objects.filter(survey="ztf").values("candid"))
    if oids is not None:
        own = own.filter(oid__in=list(oids))
    first = {}
    for candid, oid, mjd, has_stamp in own.values_list("candid", "oid", "mjd", "has_stamp").iterator(chunk_size=5000):
        rank = (not has_stamp, mjd, candid)
        if oid not in first or rank < first[oid]:
            first[oid] = rank
    return {oid: rank[2] for oid, rank in first.items()}


def stamp_outdated(oids=None):
    """ZTF objects of ``oids`` (all when None) whose alert for the stamp classifier is not the one it
    last took (``Object.stamp_candid``): never classified, or an earlier alert arrived since."""
    first = first_stamp_alerts(oids)
    taken = Object.objects.filter(survey="ztf", stamp_candid__isnull=False)
    if oids is not None:
        taken = taken.filter(oid__in=list(oids))
    taken = dict(taken.values_list("oid", "stamp_candid"))
    return sorted(oid for oid, candid in first.items() if taken.get(oid) != candid)


def record_stamp_candids(taken):
    """Object.stamp_candid = the alert the stamp classifier took, for each ``{oid: candid}``."""
    items = sorted(taken.items())
    for start in range(0, len(items), 500):
        chunk = items[start:start + 500]
        Object.objects.filter(oid__in=[oid for oid, _ in chunk]).update(
            stamp_candid=Case(*(When(oid=oid, then=Value(candid)) for oid, candid in chunk),
                              output_field=models.BigIntegerField()))


#: Rubin's g and r (fid 11, 12) fill the two bands of ALeRCE's features (suffixes _1, _2); Rubin's
#: u, i, z, y have no feature slot. ZTF's i (3) is not a feature band either.
LSST_FEATURE_BANDS = {11: 1, 12: 2}


def feature_bands(rows: pd.DataFrame) -> pd.DataFrame:
    """Detections or non-detections with Rubin g/r renumbered to the feature bands 1/2 and the other
    Rubin bands left out (the feature step reads fids 1 and 2 only)."""
    if rows.empty or not (rows["fid"] >= 10).any():
        return rows
    rows = rows[(rows["fid"] < 10) | rows["fid"].isin(list(LSST_FEATURE_BANDS))].copy()
    rows["fid"] = rows["fid"].replace(LSST_FEATURE_BANDS)
    return rows.reset_index(drop=True)


def changed_rows(old: pd.DataFrame, new: pd.DataFrame, columns) -> np.ndarray:
    """Rows (same index) where any of ``columns`` differs; missing equals missing."""
    changed = np.zeros(len(new), dtype=bool)
    for column in columns:
        a, b = old[column].astype(object), new[column].astype(object)
        both_missing = a.isna().to_numpy() & b.isna().to_numpy()
        changed |= ~(both_missing | (a == b).to_numpy())
    return changed


def update_objects(per_object: pd.DataFrame, fields):
    """Overwrite ``fields`` of the objects in ``per_object`` (one read, one upsert)."""
    if per_object.empty:
        return 0
    current = frame(Object.objects.filter(oid__in=list(per_object["oid"])), OBJECT_FIELDS)
    merged = current.drop(columns=fields).merge(per_object[["oid"] + fields], on="oid", how="inner")
    merged["created"] = merged["updated"] = db.now_param()  # only "updated" is written: every row exists
    return db.upsert(Object, merged[OBJECT_FIELDS], unique_fields=["oid"], update_fields=fields + ["updated"])


def queue_xmatch_retry(oids, catalog, error):
    """Queue objects for a later cross-match; an object already queued counts one more attempt."""
    oids, error = list(oids), error[:2000]
    queued = XmatchPending.objects.filter(oid__in=oids, catalog=catalog)
    queued.update(attempts=F("attempts") + 1, last_error=error, updated=timezone.now())
    now = db.now_param()
    rows = [dict(oid=oid, catalog=catalog, attempts=1, last_error=error, updated=now) for oid in oids]
    db.insert_ignore(XmatchPending, rows, returning="oid")


def objects_needing_features(oids, version):
    """The objects (oid, corrected, stellar, meanra, meandec, ndet) with no features of ``version``
    yet, or with another number of detections than when they were computed."""
    objects = frame(Object.objects.filter(oid__in=oids).order_by("oid"), FEATURE_OBJECT_FIELDS)
    done = dict(ObjectFeatureState.objects.filter(oid__in=oids, version=version).values_list("oid", "ndet"))
    stale = [done.get(oid) != n for oid, n in zip(objects["oid"], objects["ndet"])]
    return objects[np.asarray(stale, dtype=bool)].reset_index(drop=True)


def allwise_photometry(oids):
    """W1-W4 of each object's AllWISE match (one row per matched object)."""
    matches = frame(Xmatch.objects.filter(oid__in=oids, catalog="allwise"), ["oid", "catid"])
    photometry = frame(AllWise.objects.filter(catid__in=list(matches["catid"])),
                       ["catid", "W1mag", "W2mag", "W3mag", "W4mag"])
    return matches.merge(photometry, on="catid").drop(columns="catid")


def feature_rows(result) -> pd.DataFrame:
    """Long rows (oid, name, fid, value, missing_reason, version) of a FeatureResult."""
    values = result.values.rename_axis("oid").reset_index().melt(id_vars="oid", var_name="name", value_name="value")
    reasons = result.missing.rename(columns={"feature": "name", "reason": "missing_reason"})
    rows = values.merge(reasons[["oid", "name", "missing_reason"]], on=["oid", "name"], how="left")
    rows["missing_reason"] = rows["missing_reason"].fillna("")
    rows["fid"] = rows["name"].map({name: spec.band for name, spec in FEATURES.items()})
    rows["fid"] = rows["fid"].astype("Int64")
    rows["version"] = result.version
    return rows[["oid", "name", "fid", "value", "missing_reason", "version"]]


def record_feature_state(result, objects):
    """Which light curve each object's features came from, and at how many detections."""
    state = objects[["oid", "ndet"]].assign(
        version=result.version,
        lc_used=objects["oid"].map(result.lc_used).fillna(""),
        computed=db.now_param(),
    )
    db.upsert(ObjectFeatureState, state, unique_fields=["oid"], update_fields=["version", "lc_used", "ndet", "computed"])


def feature_matrix(oids, version):
    """Stored features of ``version`` as one wide frame (index oid, one column per feature name);
    missing values are NaN. One query."""
    from pipeline.models import Feature

    rows = pd.DataFrame.from_records(
        Feature.objects.filter(oid__in=oids, version=version).values_list("oid", "name", "value"),
        columns=["oid", "name", "value"])
    if rows.empty:
        return pd.DataFrame(index=pd.Index([], name="oid"))
    rows["value"] = rows["value"].astype(float)  # None -> NaN
    return rows.pivot(index="oid", columns="name", values="value")


def top_branches(oids, classifier_version):
    """oid -> the most probable branch of ``lc_classifier_top`` of that model version."""
    from pipeline.models import Probability

    rows = Probability.objects.filter(oid__in=oids, classifier_name="lc_classifier_top",
                                      classifier_version=classifier_version, ranking=1)
    return pd.Series(dict(rows.values_list("oid", "class_name")), dtype=object)


def lc_gate_reasons(oids, version):
    """oid -> why the light-curve classifier gives the object no probabilities ('' for objects it
    classifies): no stored features yet, or too few detections (``lc_classifier.gate_reason``)."""
    from pipeline.models import Feature
    from pipeline.steps.lc_classifier import gate_reason

    counts = {oid: {} for oid in oids}
    rows = Feature.objects.filter(oid__in=oids, version=version, name__in=["n_det_1", "n_det_2"])
    for oid, name, value in rows.values_list("oid", "name", "value"):
        counts[oid][name] = value
    return {oid: gate_reason(c.get("n_det_1"), c.get("n_det_2")) if c else "no light-curve features yet"
            for oid, c in counts.items()}
