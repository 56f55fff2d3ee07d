"""Avro single-object encoding of the output messages, against the schema kept in the repo."""
import datetime as dt
import json

import fastavro
import pytest

from pipeline.output import streams


def _message(**changes):
    message = {
        "schema_version": "1.0", "oid": "ZTF19abegmle", "candid": 1000151433015015013, "survey": "ztf",
        "batch_id": "b1", "published_ms": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        "detection": {"mjd": 58700.5, "fid": 1, "ra": 10.0, "dec": -5.0, "magpsf": 18.2, "sigmapsf": 0.05,
                      "magpsf_corr": 17.9, "sigmapsf_corr": 0.04, "sigmapsf_corr_ext": 0.06, "isdiffpos": 1,
                      "corrected": True, "dubious": False, "rb": 0.9, "psf_flux": None, "psf_flux_err": None,
                      "has_stamp": True},
        "magstats": [{"fid": 1, "ndet": 3, "ndubious": 0, "magmean": 18.0}],
        "probabilities": [{"classifier_name": "lc_classifier_top", "classifier_version": "1.0",
                           "class_name": "Transient", "probability": 0.7, "ranking": 1}],
        "outlier": {"version": "o1", "branch": "Transient", "score": 0.3, "is_outlier": False},
        "models": {"lc_classifier_top": "1.0", "outliers": "o1"},
    }
    message.update(changes)
    return message


def test_round_trip_keeps_every_value():
    data = streams.encode(_message())
    assert data[:2] == b"\xc3\x01" and data[2:10] == streams.FINGERPRINT
    back = streams.decode(data)
    assert back["candid"] == 1000151433015015013
    assert back["detection"]["magpsf_corr"] == 17.9
    assert back["magstats"][0]["magmean"] == 18.0 and back["magstats"][0]["magmax"] is None
    assert back["probabilities"][0]["class_name"] == "Transient"
    assert back["outlier"]["score"] == 0.3 and back["models"]["outliers"] == "o1"


def test_another_schema_is_refused():
    data = streams.encode(_message())
    with pytest.raises(ValueError, match="another schema"):
        streams.decode(data[:2] + b"\x00" * 8 + data[10:])
    with pytest.raises(ValueError, match="single-object"):
        streams.decode(b"Obj\x01" + data)


def test_schema_file_is_the_one_used_and_has_every_part():
    schema = json.loads(streams.SCHEMA_PATH.read_text())
    fastavro.parse_schema(schema)
    names = [f["name"] for f in schema["fields"]]
    for part in ("oid", "candid", "detection", "magstats", "probabilities", "outlier", "models"):
        assert part in names
    # the spec's test vector: CRC-64-AVRO of "null" is 0x63dd24e7cc258f8a, written little-endian
    assert fastavro.schema.fingerprint('"null"', "CRC-64-AVRO") == "8a8f25cce724dd63"


def test_describe_is_one_readable_line():
    line = streams.describe(_message())
    assert "ZTF19abegmle" in line and "17.90" in line and "Transient 0.70" in line and "\n" not in line
