"""Batch loads and writes between the ORM and the DataFrames the steps work on (one query per table)."""
import numpy as np
import pandas as pd
from django.db.models import F
from django.utils import timezone

from . import db
from .models import Detection, NonDetection, Object, XmatchPending

CORRECTION_FIELDS = [
    "magpsf_corr", "sigmapsf_corr", "sigmapsf_corr_ext", "corrected", "dubious", "corr_note", "step_id_corr",
]
DETECTION_FIELDS = [f.name for f in Detection._meta.concrete_fields if f.name not in CORRECTION_FIELDS]
MAGSTATS_INPUT_FIELDS = [
    "candid", "oid", "mjd", "fid", "ra", "dec", "magpsf", "sigmapsf", "isdiffpos", "rb", "magnr", "sigmagnr",
    "distnr", "sgscore1", "distpsnr1", "magpsf_corr", "sigmapsf_corr", "sigmapsf_corr_ext", "corrected", "dubious",
]
OBJECT_STAT_FIELDS = [
    "meanra", "meandec", "sigmara", "sigmadec", "firstmjd", "lastmjd", "deltamjd", "ndet",
    "g_r_max", "g_r_max_corr", "g_r_mean", "g_r_mean_corr",
]
OBJECT_FIELDS = [f.name for f in Object._meta.concrete_fields]


def frame(queryset, fields):
    return pd.DataFrame.from_records(list(queryset.values_list(*fields)), columns=fields)


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


def maybe_bool(value):
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else bool(value)


def _plain(value):
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def records(df: pd.DataFrame) -> list[dict]:
    """Rows as dicts of plain Python values (NaN/NA -> None), ready for db.insert_ignore/upsert."""
    columns = list(df.columns)
    return [dict(zip(columns, map(_plain, row))) for row in df.itertuples(index=False, name=None)]


def update_objects(per_object: pd.DataFrame, fields):
    """Overwrite ``fields`` of the objects in ``per_object`` (one read, one upsert)."""
    if per_object.empty:
        return 0
    current = frame(Object.objects.filter(oid__in=list(per_object["oid"])), OBJECT_FIELDS)
    merged = current.drop(columns=fields).merge(per_object[["oid"] + fields], on="oid", how="inner")
    merged["created"] = merged["updated"] = db.now_param()  # only "updated" is written: every row exists
    return db.upsert(Object, records(merged[OBJECT_FIELDS]), unique_fields=["oid"], update_fields=fields + ["updated"])


def queue_xmatch_retry(oids, catalog, error):
    """Queue objects for a later cross-match; an object already queued counts one more attempt."""
    oids, error = list(oids), error[:2000]
    queued = XmatchPending.objects.filter(oid__in=oids, catalog=catalog)
    queued.update(attempts=F("attempts") + 1, last_error=error, updated=timezone.now())
    now = db.now_param()
    rows = [dict(oid=oid, catalog=catalog, attempts=1, last_error=error, updated=now) for oid in oids]
    db.insert_ignore(XmatchPending, rows, returning="oid")
