"""Frame <-> row helpers of the task layer (no database needed)."""
import math

import numpy as np
import pandas as pd

from pipeline.loaders import changed_rows, records


def test_changed_rows_treats_missing_as_equal():
    old = pd.DataFrame({"m": [1.0, np.nan, 2.0, np.nan], "flag": [True, None, False, True]})
    new = pd.DataFrame({"m": [1.0, np.nan, 2.5, 3.0], "flag": [True, None, False, True]})
    assert changed_rows(old, new, ["m", "flag"]).tolist() == [False, False, True, True]
    new.loc[0, "flag"] = False
    assert changed_rows(old, new, ["m", "flag"]).tolist() == [True, False, True, True]


def test_records_gives_plain_python_values():
    df = pd.DataFrame({"a": np.array([1, 2], dtype=np.int64), "b": [0.5, np.nan], "c": [True, False], "d": ["x", None]})
    rows = records(df)
    assert rows == [{"a": 1, "b": 0.5, "c": True, "d": "x"}, {"a": 2, "b": None, "c": False, "d": None}]
    assert all(type(v) in (int, float, bool, str, type(None)) for row in rows for v in row.values())
    assert not any(isinstance(v, float) and math.isnan(v) for row in rows for v in row.values())
