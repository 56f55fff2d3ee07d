"""Frame <-> row helpers of the task layer (no database needed)."""
import math

import numpy as np
import pandas as pd

from pipeline.store.loaders import changed_rows


def test_changed_rows_treats_missing_as_equal():
    old = pd.DataFrame({"m": [1.0, np.nan, 2.0, np.nan], "flag": [True, None, False, True]})
    new = pd.DataFrame({"m": [1.0, np.nan, 2.5, 3.0], "flag": [True, None, False, True]})
    assert changed_rows(old, new, ["m", "flag"]).tolist() == [False, False, True, True]
    new.loc[0, "flag"] = False
    assert changed_rows(old, new, ["m", "flag"]).tolist() == [True, False, True, True]


def test_columnar_rows_are_plain_python_values_with_defaults():
    from pipeline.models import Feature
    from pipeline.store.db import _columnar

    df = pd.DataFrame({"oid": ["a", "b"], "name": ["x", "y"], "value": [0.5, np.nan],
                       "fid": pd.array([1, None], dtype="Int64"), "version": ["v", "v"]})
    data, n = _columnar(Feature, df)
    assert n == 2 and data["value"] == [0.5, None] and data["fid"] == [1, None]
    assert data["missing_reason"] == ["", ""]  # the model default of a column the frame lacks
    assert all(type(v) in (int, float, str, type(None)) for values in data.values() for v in values)
    assert not any(isinstance(v, float) and math.isnan(v) for values in data.values() for v in values)


def test_big_integer_ids_survive_nulls(db):
    from pipeline.models import Detection, Object
    from pipeline.store.loaders import frame

    Object.objects.create(oid="ZTF20aaaaaaa", meanra=1.0, meandec=2.0)
    common = dict(oid_id="ZTF20aaaaaaa", mjd=59000.0, fid=1, ra=1.0, dec=2.0, magpsf=18.0, sigmapsf=0.1, isdiffpos=1)
    Detection.objects.create(candid=1234567890123456789, parent_candid=1234567890123456781, **common)
    Detection.objects.create(candid=1234567890123456790, parent_candid=None, **common)
    df = frame(Detection.objects.order_by("candid"), ["candid", "parent_candid", "magpsf"])
    assert df["candid"].tolist() == [1234567890123456789, 1234567890123456790]
    assert df["parent_candid"].iloc[0] == 1234567890123456781 and pd.isna(df["parent_candid"].iloc[1])
    assert df["magpsf"].dtype == float
